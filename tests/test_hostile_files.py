"""Hostile files (issue #17): path traversal through trait names, corrupt caches, damaged model and vector files.

Each test reproduces one way a file on disk could make personascope write outside its output
folder, read an arbitrary file, fail on every later run, or silently use wrong cached values.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from personascope import models
from personascope.cache import CachingAdapter
from personascope.cli import main
from personascope.errors import DataError, ModelNotFoundError, PersonascopeError, UsageError
from personascope.judges.base import Judge, Rating, Rubric
from personascope.records import JudgeIdentity
from personascope.steering.traits import builtin_traits_dir, load_trait
from personascope.steering.vector import PersonaVector, path_inside, safe_file_name

SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _trait(name: str) -> dict:
    return {"name": name, "description": "a test trait",
            "instructions": [{"pos": "Be rude.", "neg": "Be kind."}],
            "extraction_questions": ["How are you?"]}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("personascope: error:") and "\n" not in err, err
    return err


# ------------------------------------------------------------------ path traversal
@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_trait_name_cannot_write_outside_out(kind, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "a" / "b" / "out"
    name = "../../escape" if kind == "relative" else str(tmp_path / "abs")
    trait_file = tmp_path / "t" / "hostile.json"
    trait_file.parent.mkdir()
    trait_file.write_text(json.dumps(_trait(name)))
    before_parent = set(tmp_path.parent.iterdir())
    before = _files(tmp_path)
    rc = main(["vector", "extract", "--model", str(tiny_model_dir), "--trait-file", str(trait_file),
               "--judge", "none", "--n-questions", "1", "--max-new-tokens", "2", "--out", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    new = {p for p in _files(tmp_path) - before if not p.is_relative_to(tmp_path / "cache")}
    assert new and all(p.parent == out for p in new), new
    written = [p for p in new if p.suffix == ".safetensors"]
    assert len(written) == 1 and SAFE.fullmatch(written[0].name)
    if kind == "relative":
        assert written[0].name == "escape.safetensors"
    assert set(tmp_path.parent.iterdir()) == before_parent
    assert PersonaVector.load(written[0]).name == name  # the name itself is kept in the sidecar


def test_trait_option_takes_names_not_paths(tmp_path, capsys):
    # A valid trait file reachable from the built-in folder with ../: the old code joined the name
    # to that folder and read it.
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(_trait("secret")))
    rel = os.path.relpath(tmp_path / "secret", builtin_traits_dir())
    for name in ("../../x", rel):
        rc = main(["vector", "extract", "--trait", name, "--model", str(tmp_path / "no-model"),
                   "--out", str(tmp_path / "out")])
        err = _one_line_error(capsys)
        assert rc == 2 and "--trait-file" in err and "model" not in err.replace("--model", "")
    assert not (tmp_path / "out").exists()


def test_builtin_names_are_names_and_paths_are_paths(tmp_path, monkeypatch):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(_trait("secret")))
    rel = os.path.relpath(tmp_path / "secret", builtin_traits_dir())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError):
        load_trait(rel)  # a path (it has separators), relative to the working folder: no such file
    with pytest.raises(DataError, match="built-in"):
        load_trait("secret")  # a name: never looked up in the working folder either
    assert load_trait("evil").source == str(builtin_traits_dir() / "evil.json")
    assert load_trait("secret.json").name == load_trait(str(secret)).name == "secret"
    assert load_trait(Path("secret.json")).name == "secret"


def test_safe_file_names_and_symlinks_stay_inside(tmp_path):
    assert safe_file_name("../../escape") == "escape"
    assert safe_file_name("/tmp/abs") == "tmp_abs"
    assert safe_file_name("..") == safe_file_name("") == "vector"
    assert safe_file_name(".hidden") == "hidden" and safe_file_name("v1.2") == "v1.2"
    for name in ("../../escape", "/etc/passwd", "a\\..\\..\\b", "évil ☠", "."):
        assert SAFE.fullmatch(safe_file_name(name))
        assert path_inside(tmp_path, name).parent == tmp_path.resolve()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "evil.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(UsageError, match="outside the output folder"):
        path_inside(tmp_path / "out", "evil.safetensors")


# ------------------------------------------------------------------ judge cache
class _LenJudge(Judge):
    """Rates a text by its length; counts the items it had to rate."""

    def __init__(self) -> None:
        self.rated = 0

    @property
    def identity(self) -> JudgeIdentity:
        return JudgeIdentity(kind="test:len")

    def _rate(self, items, rubric):
        self.rated += len(items)
        return [Rating(value=float(len(i.text)), rubric=rubric.name, judge=self.identity) for i in items]


RUBRIC = Rubric(name="len", template="{text}")
TEXTS = [f"text number {k}" + "x" * k for k in range(12)]


def test_judge_cache_survives_damaged_lines(tmp_path):
    root = tmp_path / "judgements"
    first = _LenJudge()
    truth = [r.value for r in first.rate(TEXTS, RUBRIC, cache=root)]
    assert first.rated == len(TEXTS)
    shards = sorted(root.glob("*.jsonl"))
    # One good line edited by hand (its rating changed, its checksum not): must be recomputed.
    lines = shards[0].read_bytes().splitlines()
    rec = json.loads(lines[0])
    rec["rating"]["value"] = 999.0
    lines[0] = json.dumps(rec).encode()
    shards[0].write_bytes(b"\n".join(lines) + b"\n")
    valid_line = shards[-1].read_bytes().splitlines()[0]
    for shard in shards:
        with open(shard, "ab") as fh:
            fh.write(b"[]\n" + b'{"key": "\xff\xfe bad bytes"}\n' + b"\x80\x81\n" + valid_line[:25] + b"\n"
                     + b'{"key": 1, "rating": []}\n')
    again = _LenJudge()
    with pytest.warns(UserWarning, match="Judge cache .*jsonl") as rec_warn:
        got = [r.value for r in again.rate(TEXTS, RUBRIC, cache=root)]
    assert got == truth and 999.0 not in got
    assert again.rated == 1  # only the edited rating; every intact line was used
    assert len([w for w in rec_warn if "Judge cache" in str(w.message)]) == len(shards)
    # The damaged lines were dropped from the files: the next run reads clean shards quietly.
    third = _LenJudge()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.value for r in third.rate(TEXTS, RUBRIC, cache=root)] == truth
    assert third.rated == 0


def test_judge_cache_reads_a_shard_that_is_only_garbage(tmp_path):
    root = tmp_path / "j"
    root.mkdir()
    for i in range(256):  # whatever shard the key falls in holds nothing but damage
        (root / f"{i:02x}.jsonl").write_bytes(b"[]\n\xff\n")
    with pytest.warns(UserWarning, match="Judge cache"):
        assert [r.value for r in _LenJudge().rate(["abc"], RUBRIC, cache=root)] == [3.0]


# ------------------------------------------------------------------ generation and call caches
class _FakeModel:
    """The part of a `ModelAdapter` that `CachingAdapter` uses; counts the prompts it computed."""

    info = SimpleNamespace(fingerprint="fake-fp", dtype="float32", backend="fake")
    active_steers = ()

    def __init__(self) -> None:
        self.computed = 0

    def generate(self, prompts, max_new_tokens=64, **kw):
        self.computed += len(prompts)
        return [f"answer to {p}" for p in prompts]

    def logprobs(self, prompts, continuations, **kw):
        self.computed += len(prompts)
        return np.asarray([-float(len(p) + len(c)) for p, c in zip(prompts, continuations, strict=True)])


PROMPTS = ["alpha", "beta", "gamma", "delta"]


@pytest.mark.parametrize("damage", ["edit", "truncate", "plain-list"])
def test_generation_cache_entry_damage_is_recomputed(damage, tmp_path):
    gen = tmp_path / "gen"
    first = CachingAdapter(_FakeModel(), root=tmp_path / "calls", generations=gen, chunk_size=2)
    truth = first.generate(PROMPTS, 8)
    entries = sorted(gen.glob("*.json"))
    assert len(entries) == 2
    target = next(p for p in entries if "alpha" in p.read_text())
    data = json.loads(target.read_text())
    if damage == "edit":
        data["values"][0] = "I was edited by hand"
        target.write_text(json.dumps(data))
    elif damage == "truncate":
        target.write_text(target.read_text()[:20])
    else:  # an entry without checksum (the layout before checksums) is not trusted
        target.write_text(json.dumps(["I was edited by hand", data["values"][1]]))
    model = _FakeModel()
    again = CachingAdapter(model, root=tmp_path / "calls", generations=gen, chunk_size=2)
    with pytest.warns(UserWarning, match=re.escape(target.name)):
        assert again.generate(PROMPTS, 8) == truth
    assert model.computed == 2 and again.hits == {"generate": 2}
    with warnings.catch_warnings():  # the recomputed entry is good again
        warnings.simplefilter("error")
        assert CachingAdapter(_FakeModel(), generations=gen, chunk_size=2).generate(PROMPTS, 8) == truth


@pytest.mark.parametrize("damage", ["edit", "truncate"])
def test_call_cache_entry_damage_is_recomputed(damage, tmp_path):
    calls = tmp_path / "calls"
    truth = CachingAdapter(_FakeModel(), root=calls, chunk_size=4).logprobs(PROMPTS, ["x"] * 4)
    (target,) = calls.glob("*.json")
    data = json.loads(target.read_text())
    if damage == "edit":
        data["values"][2] = 123.0
        target.write_text(json.dumps(data))
    else:
        target.write_bytes(target.read_bytes()[:-7])
    model = _FakeModel()
    with pytest.warns(UserWarning, match=re.escape(target.name)):
        got = CachingAdapter(model, root=calls, chunk_size=4).logprobs(PROMPTS, ["x"] * 4)
    np.testing.assert_array_equal(got, truth)
    assert model.computed == 4


# ------------------------------------------------------------------ model files
@pytest.mark.parametrize("content", [os.urandom(3000), b"GGUF\x03\x00\x00\x00"], ids=["garbage", "truncated"])
def test_damaged_gguf_is_a_one_line_error(content, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(gguf))) as err:
        models.load_model(str(gguf))
    assert "\n" not in str(err.value)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "hi"}\n')
    rc = main(["capture", "--model", str(gguf), "--prompts", str(prompts), "--out", str(tmp_path / "o")])
    assert rc == 2 and "model.gguf" in _one_line_error(capsys)


def test_bad_model_folders_are_one_line_errors(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        models.load_model(str(empty))
    garbled = tmp_path / "garbled"
    shutil.copytree(tiny_model_dir, garbled)
    (garbled / "config.json").write_bytes(b"{ not json \xff")
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for folder in (garbled, truncated):
        with pytest.raises(PersonascopeError, match=re.escape(str(folder))) as err:
            models.load_model(str(folder))
        assert "\n" not in str(err.value)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "hi"}\n')
    for folder in (empty, truncated):
        rc = main(["capture", "--model", str(folder), "--prompts", str(prompts), "--out", str(tmp_path / "o")])
        assert rc == 2 and folder.name in _one_line_error(capsys)


def _truncate(path: Path, size: int) -> None:
    """Replace ``path`` by its first ``size`` bytes (a new file: the loaded model still maps the old one)."""
    with open(path, "rb") as fh:
        head = fh.read(size)
    path.unlink()
    path.write_bytes(head)


def test_truncated_dequantized_copy_is_redone(tiny_model_dir, tmp_path, monkeypatch):
    # A stand-in for the GGUF step: "dequantizing" saves the tiny model, as the real step saves SmolLM2.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    done: list[Path] = []

    def fake_dequantize(gguf: Path, target: Path, common: dict) -> None:
        done.append(target)
        models._save_dequantized(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                 AutoTokenizer.from_pretrained(tiny_model_dir), target)

    monkeypatch.setattr(models, "_dequantize", fake_dequantize)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    ref = models.load_model(str(gguf), backend="nnsight", device="cpu")
    assert len(done) == 1
    models.load_model(str(gguf), backend="nnsight", device="cpu")
    assert len(done) == 1  # an intact copy is reused
    _truncate(done[0] / "model.safetensors", 1000)
    with pytest.warns(UserWarning, match=re.escape(str(done[0]))):
        m = models.load_model(str(gguf), backend="nnsight", device="cpu")
    assert len(done) == 2 and m.info.fingerprint == ref.info.fingerprint
    prompts = [m.format_chat(user="hi")]
    torch.testing.assert_close(m.next_token_logprobs(prompts), ref.next_token_logprobs(prompts))


def test_fingerprint_memo_that_is_not_an_object_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path))
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    (tmp_path / "fingerprints.json").write_text("[1, 2, 3]")
    with pytest.warns(UserWarning, match="fingerprints.json"):
        fp, _ = models.fingerprint_files([f])
    assert isinstance(json.loads((tmp_path / "fingerprints.json").read_text()), dict)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert models.fingerprint_files([f])[0] == fp


def test_hub_error_with_downloads_allowed_does_not_suggest_allowing_them(monkeypatch):
    from transformers import AutoTokenizer

    def not_found(*args, **kwargs):
        raise OSError("personascope-tests/nope is not a local folder and not a valid model identifier")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", not_found)
    with pytest.raises(ModelNotFoundError) as err:
        models.load_model("personascope-tests/nope")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" not in msg and "personascope-tests/nope" in msg and "\n" not in msg


# ------------------------------------------------------------------ vector sidecar
@pytest.mark.parametrize("sidecar", [
    b"[]", b'{"format": "personascope.PersonaVector"}',
    b'{"format": "personascope.PersonaVector", "name": "x", "model": {"fingerprint": []}}',
    b'{"format": "personascope.PersonaVector", "name": ["x"]}',
    b'{"format": "personascope.PersonaVector", "name": "x", "meta": 3}',
    b"\xff\xfe", b'{"format": "personascope.PersonaVector", "name": "x"',
], ids=["list", "no-name", "bad-model", "name-list", "meta-int", "not-utf8", "truncated"])
def test_malformed_vector_sidecar_is_a_data_error(sidecar, tmp_path):
    PersonaVector("evil", {1: torch.ones(8), 2: torch.zeros(8)}).save(tmp_path / "evil")
    (tmp_path / "evil.json").write_bytes(sidecar)
    with pytest.raises(DataError, match="evil") as err:
        PersonaVector.load(tmp_path / "evil.safetensors")
    assert "\n" not in str(err.value)


def test_vector_with_foreign_tensor_names_is_a_data_error(tmp_path):
    from safetensors.torch import save_file

    PersonaVector("evil", {1: torch.ones(8)}).save(tmp_path / "evil")
    save_file({"direction.x": torch.ones(8)}, str(tmp_path / "evil.safetensors"))
    with pytest.raises(DataError, match="direction"):
        PersonaVector.load(tmp_path / "evil")


def test_vector_names_with_dots_keep_their_stem(tmp_path):
    PersonaVector("v", {1: torch.ones(4)}).save(tmp_path / "trait.v1.2")
    assert (tmp_path / "trait.v1.2.safetensors").exists() and (tmp_path / "trait.v1.2.json").exists()
    assert PersonaVector.load(tmp_path / "trait.v1.2.safetensors").name == "v"



def test_user_persona_names_are_names_and_paths_are_paths(tmp_path) -> None:
    from personascope.errors import DataError
    from personascope.steering.user_persona import builtin_user_personas, load_user_persona

    name = builtin_user_personas()[0]
    assert load_user_persona(name) is not None
    # A name with separators is a path: it must exist as given, never be joined to the built-in folder.
    with pytest.raises(DataError, match="does not exist"):
        load_user_persona(f"../user_personas/{name}")
    with pytest.raises(DataError, match="Unknown user persona"):
        load_user_persona("no_such_persona")
