"""`personascope audit`: config validation, a resumable run, results.json + report.html, report and gate."""

import json

import pytest

from personascope.cli import main
from personascope.errors import UsageError
from personascope.runner import load_config


def test_config_errors_name_the_key_and_allowed_values(tmp_path):
    bad = tmp_path / "a.toml"
    bad.write_text('modle = "x"\n')
    with pytest.raises(UsageError, match="modle: unknown key.*Allowed top-level keys"):
        load_config(bad)
    bad.write_text('profile = "medium"\n')
    with pytest.raises(UsageError, match="profile.*'quick' or 'full'"):
        load_config(bad)
    bad.write_text("[audits.bias_audit]\n")
    with pytest.raises(UsageError, match="unknown audit 'bias_audit'"):
        load_config(bad)
    bad.write_text("[audits.persona_localization]\nn_per_persons = 3\n")
    with pytest.raises(UsageError, match="n_per_persons.*allowed: .*n_per_persona"):
        load_config(bad)
    assert load_config("quick").profile == "quick" and load_config("full").profile == "full"
    assert set(load_config("quick").audits) == set(load_config("full").audits)


def test_cli_config_error_is_exit_2(tmp_path, capsys):
    assert main(["audit", "bias", "--param", "bias.no_such=1", "--out", str(tmp_path)]) == 2
    assert "no_such" in capsys.readouterr().err


def test_audit_run_resumes_and_reports(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["audit", "localization", "--model", str(tiny_model_dir), "--profile", "quick", "--quiet",
            "--param", "localization.n_per_persona=6", "--param", 'localization.personas=["liberal", "neurotic"]',
            "--param", "localization.folds=2", "--policy", "default", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "running" in first.err and (out / "report.html").exists() and (out / "audits" /
                                                                         "persona_localization.json").exists()
    results = json.loads((out / "results.json").read_text())
    assert [a["audit"] for a in results["audits"]] == ["persona_localization"]
    assert results["config"]["audits"]["persona_localization"]["n_per_persona"] == 6
    # A second run reuses the finished audit instead of recomputing it.
    assert main(args) == 0
    assert "finished earlier, reusing" in capsys.readouterr().err
    # Re-rendering from JSON alone gives the same bytes.
    html = (out / "report.html").read_bytes()
    assert main(["report", str(out / "results.json"), "--policy", "default"]) == 0
    assert (out / "report.html").read_bytes() == html
    # The gate reads it: missing audits fail the default policy (exit 1) and produce JUnit XML.
    junit = tmp_path / "gate.xml"
    assert main(["gate", str(out / "results.json"), "--policy", "default", "--junit", str(junit)]) == 1
    assert junit.read_text().startswith("<?xml")
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\naudit = "persona_localization"\nmetric = "best_accuracy"\nmin = 0.0\n')
    # On the tiny model (12 statements) words alone separate the personas: the localization audit is
    # INCONCLUSIVE, which blocks by default and passes only where the policy makes it a warning.
    assert main(["gate", str(out), "--policy", str(policy)]) == 1
    policy.write_text('[policy]\ninconclusive_audits = { persona_localization = "warn" }\n\n'
                      '[[rule]]\naudit = "persona_localization"\nmetric = "best_accuracy"\nmin = 0.0\n')
    assert main(["gate", str(out), "--policy", str(policy)]) == 0
    assert main(["gate", str(out), "--policy", str(tmp_path / "missing.toml")]) == 2


def _leakage_cfg(tiny_model_dir, out, judge):
    from personascope.runner import load_config

    return load_config(None, model=str(tiny_model_dir), out=str(out), judge={"kind": judge},
                       audits={"ci_leakage": {"n_users": 1, "contexts": ["counsellor"], "n_trials": 1,
                                              "privacy_levels": ["none"], "max_new_tokens": 4, "n_memories": 4,
                                              "n_orders": 2}})


def test_each_audit_writes_its_samples_and_the_report_links_them(tiny_nn, tiny_model_dir, tmp_path, capsys):
    from personascope.results import read_samples
    from personascope.runner import run_audits

    out = tmp_path / "run"
    run = run_audits(_leakage_cfg(tiny_model_dir, out, "none"), model=tiny_nn, progress=False, log=lambda *_: None)
    res = run.audit("ci_leakage")
    assert res.samples_file == "samples/ci_leakage.jsonl"
    samples = read_samples(out / res.samples_file)
    assert len(samples) == res.n_samples > 0 and all(s.audit == "ci_leakage" and s.redacted for s in samples)
    html = (out / "report.html").read_text()
    assert 'href="samples/ci_leakage.jsonl"' in html
    linked = [e.sample for e in res.examples if e.sample]
    assert linked and all(f"<code>{sid}</code>" in html for sid in linked)
    assert set(linked) <= {s.id for s in samples}
    # results.json carries the file's name and count, not the records
    saved = json.loads((out / "results.json").read_text())["audits"][0]
    assert saved["samples_file"] == res.samples_file and "samples" not in saved
    # a report rendered elsewhere links back to the run's files
    assert main(["report", str(out / "results.json"), "--out", str(tmp_path / "elsewhere")]) == 0
    moved = (tmp_path / "elsewhere" / "report.html").read_text()
    assert 'href="../run/samples/ci_leakage.jsonl"' in moved
    capsys.readouterr()


def test_a_finished_audit_is_not_reused_under_another_judge(tiny_nn, tiny_model_dir, tmp_path):
    from personascope.runner import run_audits

    out = tmp_path / "out"
    logs: list[str] = []
    first = run_audits(_leakage_cfg(tiny_model_dir, out, "contrast"), model=tiny_nn, progress=False, log=logs.append)
    assert first.audit("ci_leakage").judge.kind == "logprob:contrast"
    logs.clear()
    second = run_audits(_leakage_cfg(tiny_model_dir, out, "none"), model=tiny_nn, progress=False, log=logs.append)
    assert not any("reusing" in line for line in logs), logs
    rec = second.audit("ci_leakage").judge
    assert rec.identity is None and rec.uses == []  # --judge none: rules only
    assert second.audit("ci_leakage").judge_agreement is None
    logs.clear()
    run_audits(_leakage_cfg(tiny_model_dir, out, "none"), model=tiny_nn, progress=False, log=logs.append)
    assert any("reusing" in line for line in logs), logs  # same judge: reused


def test_results_accumulate_in_one_folder_unless_fresh(tiny_nn, tiny_model_dir, tmp_path):
    """audit X --out d, then audit Y --out d: results.json holds both; --fresh holds the last run's only."""
    import json as _json

    from personascope.catalog import BY_NAME
    from personascope.runner import load_config, run_audits

    out = tmp_path / "out"
    logs: list[str] = []
    run_audits(_leakage_cfg(tiny_model_dir, out, "none"), model=tiny_nn, progress=False, log=logs.append)
    vec = load_config(None, model=str(tiny_model_dir), out=str(out), judge={"kind": "none"},
                      audits={"user_persona_refusal": dict(BY_NAME["user_persona_refusal"].tiny)})
    both = run_audits(vec, model=tiny_nn, progress=False, log=logs.append)
    assert [a.audit for a in both.audits] == ["user_persona_refusal", "ci_leakage"]  # the catalog's order
    assert any("kept earlier results of ci_leakage" in line for line in logs), logs
    on_disk = _json.loads((out / "results.json").read_text())
    assert {a["audit"] for a in on_disk["audits"]} == {"user_persona_refusal", "ci_leakage"}
    logs.clear()
    only = run_audits(vec, model=tiny_nn, progress=False, log=logs.append, fresh=True)
    assert [a.audit for a in only.audits] == ["user_persona_refusal"]
    assert not any("reusing" in line for line in logs), logs  # fresh: recomputed
    assert (out / "audits" / "ci_leakage.json").exists()  # nothing deleted
    # A result made on another model is never mixed in.
    path = out / "audits" / "ci_leakage.json"
    data = _json.loads(path.read_text())
    data["model"]["fingerprint"] = "0" * 64
    path.write_text(_json.dumps(data))
    logs.clear()
    again = run_audits(vec, model=tiny_nn, progress=False, log=logs.append)
    assert [a.audit for a in again.audits] == ["user_persona_refusal"]
    assert any("made on another model" in line for line in logs), logs


def test_judge_none_is_honoured_by_every_audit(tiny_nn, tiny_model_dir, tmp_path):
    from personascope.audits import REGISTRY, get_audit
    from personascope.runner import load_config, run_audits

    cfg = load_config(None, model=str(tiny_model_dir), out=str(tmp_path / "o"), judge={"kind": "none"},
                      audits={"persona_vectors": {}, "ooc_drift": {}})
    run = run_audits(cfg, model=tiny_nn, progress=False, log=lambda *_: None)
    for name in ("persona_vectors", "ooc_drift"):
        assert run.errors[name].startswith("skipped: needs a model judge"), run.errors
    # Audits that only use a judge on the side run without one and record that none was used.
    for name in REGISTRY:
        cls = get_audit(name)
        if cls.judge_required:
            with pytest.raises(UsageError, match="needs a model judge"):
                cls.from_params({}).run(tiny_nn, judge=None, progress=False)
        assert cls.from_params({}).judge_record(None).identity is None


def test_the_runs_judge_reaches_the_audit(tiny_nn, tiny_model_dir, tmp_path):
    from personascope.judges.factory import JudgeSpec, make_judge
    from personascope.runner import load_config, run_audits

    spec = {"kind": "contrast", "temperature": 0.5}
    cfg = load_config(None, model=str(tiny_model_dir), out=str(tmp_path / "o"), judge=spec,
                      audits={"ooc_drift": {"traits": ["extraversion"], "levels": ["high"], "tasks": ["post"],
                                            "n_prompts": 1, "runs": 1, "max_new_tokens": 6, "conversation_runs": 0}})
    run = run_audits(cfg, model=tiny_nn, progress=False, log=lambda *_: None)
    assert not run.errors, run.errors
    expected = make_judge(JudgeSpec(**spec), tiny_nn).identity
    assert run.audit("ooc_drift").judge.identity == expected  # not a judge the audit built itself


def test_one_run_bar_with_eta_and_quiet_silences_every_bar(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import os

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    args = ["audit", "bias", "--model", str(tiny_model_dir), "--param", "bias.n_questions=6",
            "--param", 'bias.personas=["a man"]', "--param", 'bias.human_controls=["a human"]',
            "--param", "bias.assistant_controls=2", "--param", "bias.generation_questions=0",
            "--param", "bias.n_boot=20"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    # the run's bar (audits weighted by expected time: the ETA reads in time) above the audit's own bars
    assert "personascope run 100%|" in err and "persona_bias (1/1)" in err and "persona_bias loglik" in err
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "%|" not in err and "it/s" not in err  # no bar at all, ours or a library's
    assert "TQDM_DISABLE" not in os.environ  # the switch is restored after the command
