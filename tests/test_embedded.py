"""The embedded SmolLM2-135M-Instruct through both backends (slow: loads a real model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import personascope as ps
from personascope.chat import encode
from personascope.sites import Point, Position, Site

pytestmark = pytest.mark.slow

QUESTIONS = [("What is 2+2?", None), ("Name a color.", "You are a pirate."), ("Say hello.", None)]


def _prompts(adapter) -> list[str]:
    return [adapter.format_chat(user=q, system=s) for q, s in QUESTIONS]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-row error, relative to the row's norm (at least 1)."""
    return ((a - b).norm(dim=-1) / a.norm(dim=-1).clamp_min(1.0)).max().item()


def test_loads_via_alias(smol_nn, smol_tl) -> None:
    for adapter, backend in ((smol_nn, "nnsight"), (smol_tl, "transformer_lens")):
        info = adapter.info
        assert info.id == ps.DEFAULT_MODEL == "smollm2-135m-instruct"
        assert (info.n_layers, info.d_model) == (30, 576)
        assert info.backend == backend
        assert info.architecture == "LlamaForCausalLM"
        assert Path(info.source).suffix == ".gguf"
        assert len(info.fingerprint) == 64
    assert smol_nn.info.fingerprint == smol_tl.info.fingerprint


def test_backend_parity(smol_nn, smol_tl) -> None:
    prompts = _prompts(smol_nn)
    sites = sorted({*smol_nn.sites([0, 14, 29]), Site(14, Point.ATTN_OUT), Site(14, Point.MLP_OUT)},
                   key=lambda s: s.order)
    a = smol_nn.activations(prompts, sites, ["last", "all"], progress=False)
    b = smol_tl.activations(prompts, sites, ["last", "all"], progress=False)
    for pos in a:
        for k, site in enumerate(sites):
            assert _rel_err(a[pos].acts[:, k], b[pos].acts[:, k]) < 1e-3, (pos, str(site))
    # Real activations are large: the tolerance is not trivially met.
    assert a[Position.ALL].acts[:, sites.index(Site(29))].norm(dim=-1).mean() > 10


def test_middle_layer_matches_hf_hidden_states(smol_nn) -> None:
    prompt = _prompts(smol_nn)[1]
    got = smol_nn.activations([prompt], smol_nn.sites([14]), "all", progress=False)[Position.ALL]
    ids = torch.tensor([encode(smol_nn.tokenizer, prompt)])
    with torch.inference_mode():
        hs = smol_nn.hf_model(ids, output_hidden_states=True).hidden_states
    assert _rel_err(got.acts[:, 0], hs[15][0]) < 1e-4
    assert _rel_err(got.acts[:, 0], hs[14][0]) > 1e-2  # a different layer is far away


def test_generation_plain_and_steered_identical_in_both_backends(smol_nn, smol_tl) -> None:
    prompts = _prompts(smol_nn)[:2]
    plain = smol_nn.generate(prompts, 8, progress=False)
    assert all(t.strip() for t in plain)  # the model answers
    assert smol_tl.generate(prompts, 8, progress=False) == plain

    # A steering direction at the scale of the residual stream at layer 10.
    acts = smol_nn.activations(prompts, smol_nn.sites([10]), "prompt_mean", progress=False)
    scale = acts[Position.PROMPT_MEAN].acts[:, 0].norm(dim=-1).mean().item()
    v = torch.randn(576, generator=torch.Generator().manual_seed(0))
    v = v / v.norm() * 2.0 * scale
    steer = ps.Steer(Site(10), v, 1.0, "all")
    steered = smol_nn.generate(prompts, 8, steer=steer, progress=False)
    assert steered != plain
    assert smol_tl.generate(prompts, 8, steer=steer, progress=False) == steered


@pytest.mark.slow
def test_dequantized_cache_equals_direct_gguf_load(smol_nn):
    """The cached fp32 copy of the GGUF gives the same logits as dequantizing the file again."""
    import torch
    from transformers import AutoModelForCausalLM

    from personascope.models import ALIASES, alias_path

    gguf = alias_path(ALIASES["smollm2-135m-instruct"])
    direct = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = torch.tensor([smol_nn.tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        a = direct(ids).logits
        b = smol_nn.hf_model(ids).logits
    assert torch.equal(a, b)
