"""The nnsight and TransformerLens adapters on tiny random Llamas: parity, batching, scoring, steering.

Ground truths come from the plain Hugging Face model (``output_hidden_states``, a manual
log-softmax, and greedy decoding by repeated full forward passes with a torch hook that adds the
steering vector), never from hard-coded model outputs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

import personascope as ps
from personascope.chat import encode
from personascope.errors import UsageError
from personascope.sites import Point, Position, Site

BACKENDS = ("nnsight", "transformer_lens")
POSITIONS = ["last", "prompt_mean", "all"]


def _prompts(adapter) -> list[str]:
    """Chat prompts of very different lengths (a few tokens to a few hundred)."""
    return [
        "Hi",
        adapter.format_chat(user="Hello!"),
        adapter.format_chat(
            user="Tell me a long story about a lighthouse keeper, a storm and a lost ship. " * 6,
            system="You are a pirate who speaks in riddles.",
        ),
        adapter.format_chat(user="Why is the sea salty?", system="You are a chemist."),
    ]


@pytest.fixture(scope="module")
def adapters(tiny_nn, tiny_tl) -> dict:
    return {"nnsight": tiny_nn, "transformer_lens": tiny_tl}


@pytest.fixture(scope="module")
def ctx(tiny_model_dir: Path) -> dict:
    """A tiny Llama with large random weights, so its greedy text depends on the whole prompt.

    (With the default small init a random model repeats its last token whatever the context,
    which would let a broken KV cache or prompt-only steering pass a generation test.)
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.3, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = LlamaForCausalLM(cfg).eval()
    out = {"hf": hf, "tok": tok}
    for backend in BACKENDS:
        out[backend] = ps.load_model(hf, backend=backend, tokenizer=tok)
    return out


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def _vec(d: int, seed: int, norm: float = 1.0) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


# ------------------------------------------------------------------------------ HF ground truth
def _hf_ids(tok, prompt: str) -> list[int]:
    return encode(tok, prompt)


@contextlib.contextmanager
def _hf_steer(hf, layer: int, delta: torch.Tensor, positions: str, prompt_len: int):
    """Add ``delta`` to the output of block ``layer`` of a plain HF model on the chosen positions."""

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        idx = torch.arange(hidden.shape[1])
        keep = {"all": torch.ones_like(idx, dtype=torch.bool), "prompt": idx < prompt_len,
                "response": idx >= prompt_len}[positions]
        hidden = hidden + delta * keep[None, :, None].to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = hf.model.layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _greedy_truth(hf, tok, prompt: str, n: int, eos: list[int], steer: ps.Steer | None = None):
    """Greedy decoding without a KV cache: a full forward pass over the whole sequence per token."""
    ids = _hf_ids(tok, prompt)
    p_len = len(ids)
    out: list[int] = []
    margins: list[float] = []
    for _ in range(n):
        ctx = (_hf_steer(hf, steer.site.layer, steer.coeff * steer.vector, steer.positions, p_len)
               if steer is not None else contextlib.nullcontext())
        with ctx, torch.inference_mode():
            logits = hf(torch.tensor([ids]), use_cache=False).logits[0, -1]
        top = logits.topk(2).values
        margins.append((top[0] - top[1]).item())
        nxt = int(logits.argmax())
        if nxt in eos:
            break
        out.append(nxt)
        ids = ids + [nxt]
    # The comparison must not hinge on float noise between cached and uncached passes.
    assert min(margins) > 1e-3, f"near-tie in the ground truth (margins {margins}); change the prompt"
    return out


# ------------------------------------------------------------------------------ capture
def test_activation_parity_all_points(adapters) -> None:
    nn, tl = adapters["nnsight"], adapters["transformer_lens"]
    prompts = _prompts(nn)
    sites = nn.sites("all", points=list(Point))
    assert len(sites) == 16
    a = nn.activations(prompts, sites, POSITIONS, progress=False)
    b = tl.activations(prompts, sites, POSITIONS, progress=False)
    for pos in POSITIONS:
        pos = Position(pos)
        assert a[pos].acts.shape == b[pos].acts.shape
        assert a[pos].acts.dtype == torch.float32 and a[pos].acts.device.type == "cpu"
        assert torch.isfinite(a[pos].acts).all()
        for k, site in enumerate(sites):
            assert _max_diff(a[pos].acts[:, k], b[pos].acts[:, k]) < 1e-4, (pos, str(site))
        assert np.array_equal(a[pos].row_sample, b[pos].row_sample)
        assert np.array_equal(a[pos].row_token, b[pos].row_token)
    # Different sites really are different places (not one tensor read 16 times); only
    # resid_post of a block and resid_pre of the next are the same place by definition.
    acts = a[Position.ALL].acts
    for i, si in enumerate(sites):
        for j, sj in enumerate(sites[i + 1 :], start=i + 1):
            same = si.point == Point.RESID_POST and sj == Site(si.layer + 1, Point.RESID_PRE)
            assert torch.equal(acts[:, i], acts[:, j]) == same, (str(si), str(sj))


def test_response_mean_parity(adapters) -> None:
    nn, tl = adapters["nnsight"], adapters["transformer_lens"]
    prompts = _prompts(nn)
    responses = [" Ahoy", "Salt comes from rocks.", " Aye", " Because of the rivers."]
    sites = nn.sites([0, 3], points=["attn_out", "resid_post"])
    a = nn.activations(prompts, sites, ["response_mean", "last"], responses=responses, progress=False)
    b = tl.activations(prompts, sites, ["response_mean", "last"], responses=responses, progress=False)
    for pos in a:
        assert _max_diff(a[pos].acts, b[pos].acts) < 1e-4
    assert not torch.allclose(a[Position.RESPONSE_MEAN].acts, a[Position.LAST].acts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sites_match_hf_hidden_states(adapters, backend: str) -> None:
    adapter = adapters[backend]
    hf, tok = adapters["nnsight"].hf_model, adapter.tokenizer
    prompt = _prompts(adapter)[2]
    sites = adapter.sites("all", points=["resid_pre", "resid_post"])
    got = adapter.activations([prompt], sites, "all", progress=False)[Position.ALL].acts
    with torch.inference_mode():
        hs = hf(torch.tensor([_hf_ids(tok, prompt)]), output_hidden_states=True).hidden_states
    last = adapter.n_layers - 1
    for layer in range(adapter.n_layers):
        pre = got[:, sites.index(Site(layer, Point.RESID_PRE))]
        post = got[:, sites.index(Site(layer, Point.RESID_POST))]
        assert _max_diff(pre, hs[layer][0]) < 1e-5
        if layer < last:
            assert _max_diff(post, hs[layer + 1][0]) < 1e-5
        else:  # Hugging Face applies the final norm to its last hidden state
            with torch.inference_mode():
                normed = hf.model.norm(post)
            assert _max_diff(normed, hs[-1][0]) < 1e-5
            assert _max_diff(post, hs[-1][0]) > 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
def test_block_decomposes_into_attn_and_mlp(adapters, backend: str) -> None:
    adapter = adapters[backend]
    got = adapter.activations(_prompts(adapter), adapter.sites("all", points=list(Point)), "all",
                              progress=False)[Position.ALL]
    for layer in range(adapter.n_layers):
        col = {p: got.acts[:, got.sites.index(Site(layer, p))] for p in Point}
        total = col[Point.RESID_PRE] + col[Point.ATTN_OUT] + col[Point.MLP_OUT]
        assert _max_diff(total, col[Point.RESID_POST]) < 1e-5
        assert col[Point.ATTN_OUT].abs().max() > 0 and col[Point.MLP_OUT].abs().max() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_equals_one_by_one(adapters, backend: str) -> None:
    adapter = adapters[backend]
    prompts = _prompts(adapter) + ["Ok", adapter.format_chat(user="Sing a sea shanty, please.")]
    lengths = [len(_hf_ids(adapter.tokenizer, p)) for p in prompts]
    assert max(lengths) > 10 * min(lengths)
    sites = adapter.sites([0, 2, 3], points=list(Point))
    batched = adapter.activations(prompts, sites, POSITIONS, batch_size=3, progress=False)
    singles = [adapter.activations([p], sites, POSITIONS, batch_size=1, progress=False) for p in prompts]
    for pos in POSITIONS:
        pos = Position(pos)
        one = torch.cat([s[pos].acts for s in singles], 0)
        assert _max_diff(batched[pos].acts, one) < 1e-5, pos
    assert np.array_equal(np.bincount(batched[Position.ALL].row_sample), lengths)


# ------------------------------------------------------------------------------ scoring
def _manual_logprobs(hf, tok, prompts, conts) -> np.ndarray:
    out = []
    for p, c in zip(prompts, conts, strict=True):
        p_ids, c_ids = _hf_ids(tok, p), encode(tok, c, is_continuation=True)
        ids = torch.tensor([p_ids + c_ids])
        with torch.inference_mode():
            logp = torch.log_softmax(hf(ids).logits[0].double(), -1)
        out.append(sum(logp[len(p_ids) - 1 + k, t].item() for k, t in enumerate(c_ids)))
    return np.array(out)


def test_logprobs_parity_and_manual(adapters) -> None:
    nn, tl = adapters["nnsight"], adapters["transformer_lens"]
    prompts = _prompts(nn)
    conts = [" there", " Arr, the salt of tears!", " Once upon a time", " Rivers"]
    manual = _manual_logprobs(nn.hf_model, nn.tokenizer, prompts, conts)
    n_tok = np.array([len(encode(nn.tokenizer, c, is_continuation=True)) for c in conts])
    for adapter in (nn, tl):
        got = adapter.logprobs(prompts, conts, batch_size=3)
        assert got.dtype == np.float64 and got.shape == (4,)
        assert np.all(got < 0)
        np.testing.assert_allclose(got, manual, rtol=1e-5, atol=1e-4)
        mean = adapter.logprobs(prompts, conts, reduce="mean", batch_size=1)
        np.testing.assert_allclose(mean, manual / n_tok, rtol=1e-5, atol=1e-4)
    with pytest.raises(UsageError, match="sum, mean"):
        nn.logprobs(prompts, conts, reduce="max")
    with pytest.raises(UsageError, match="responses"):
        nn.logprobs(prompts, conts[:2])
    with pytest.raises(UsageError, match="empty"):
        nn.logprobs(prompts[:1], [""])


def test_steered_logprobs_match_hooked_hf(adapters) -> None:
    nn = adapters["nnsight"]
    prompts, conts = _prompts(nn)[1:3], [" Ahoy there", " The end."]
    v = _vec(nn.d_model, 5, norm=3.0)
    for positions in ("all", "prompt", "response"):
        expected = []
        for p, c in zip(prompts, conts, strict=True):
            p_len = len(_hf_ids(nn.tokenizer, p))
            with _hf_steer(nn.hf_model, 1, v, positions, p_len):
                expected.append(_manual_logprobs(nn.hf_model, nn.tokenizer, [p], [c])[0])
        plain = _manual_logprobs(nn.hf_model, nn.tokenizer, prompts, conts)
        assert np.abs(np.array(expected) - plain).max() > 1e-3  # the steer matters
        for adapter in adapters.values():
            with adapter.steer(v, layer=1, positions=positions):
                got = adapter.logprobs(prompts, conts, batch_size=2)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------ steering
@pytest.mark.parametrize("backend", BACKENDS)
def test_steer_restores_even_after_an_exception(adapters, backend: str) -> None:
    adapter = adapters[backend]
    prompts = _prompts(adapter)[:2]
    sites = adapter.sites("all")
    v = _vec(adapter.d_model, 1, norm=4.0)

    def read() -> torch.Tensor:
        return adapter.activations(prompts, sites, "all", progress=False)[Position.ALL].acts

    before = read()
    with adapter.steer(v, layer=1, coeff=2.0) as steered:
        assert steered is adapter
        inside = read()
    assert not torch.allclose(inside, before)
    assert torch.equal(read(), before)
    assert adapter._steers == []

    with pytest.raises(RuntimeError, match="boom"), adapter.steer(v, layer=2):
        assert not torch.allclose(read(), before)
        raise RuntimeError("boom")
    assert adapter._steers == []
    assert torch.equal(read(), before)
    # Logits too, and generation afterwards is unsteered.
    text = adapter.generate(prompts, 4, progress=False)
    with adapter.steer(v, layer=1, coeff=50.0):
        pass
    assert adapter.generate(prompts, 4, progress=False) == text


@pytest.mark.parametrize("backend", BACKENDS)
def test_nested_and_stacked_steers_add(adapters, backend: str) -> None:
    adapter = adapters[backend]
    prompts = _prompts(adapter)[1:3]
    sites = adapter.sites([0, 1])
    v1, v2 = _vec(adapter.d_model, 11, 2.0), _vec(adapter.d_model, 12, 3.0)

    def layer1() -> torch.Tensor:
        return adapter.activations(prompts, sites, "all", progress=False)[Position.ALL].acts[:, 1]

    base = layer1()
    with adapter.steer(v1, layer=1, coeff=1.5):
        with adapter.steer(ps.Steer(Site(1), v2, -0.5)):
            both = layer1()
        outer_only = layer1()
    with adapter.steer([ps.Steer(Site(1), v1, 1.5), ps.Steer(Site(-3), v2, -0.5)]):
        listed = layer1()
    assert _max_diff(both - base, (1.5 * v1 - 0.5 * v2).expand_as(base)) < 1e-4
    assert _max_diff(outer_only - base, (1.5 * v1).expand_as(base)) < 1e-4
    assert _max_diff(listed, both) < 1e-5
    assert adapter._steers == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("coeff", [0.5, 8.0])
def test_steering_adds_exactly_coeff_times_v(adapters, backend: str, coeff: float) -> None:
    adapter = adapters[backend]
    prompts = _prompts(adapter)
    sites = adapter.sites("all")
    v = _vec(adapter.d_model, 2, norm=1.0)
    base = adapter.activations(prompts, sites, "all", progress=False)[Position.ALL].acts
    with adapter.steer(v, layer=1, coeff=coeff):
        steered = adapter.activations(prompts, sites, "all", progress=False)[Position.ALL].acts
    diff = steered - base
    planted = (coeff * v).expand(diff.shape[0], -1)
    assert _max_diff(diff[:, 1], planted) < 1e-4
    assert _cos(diff[:, 1], planted).min().item() > 0.999  # at every position
    assert torch.equal(steered[:, 0], base[:, 0])  # earlier layers untouched
    assert diff[:, 2].norm(dim=-1).min().item() > 1e-4  # later layers see it


@pytest.mark.parametrize("positions", ["prompt", "response"])
def test_steering_positions_in_a_scored_pass(adapters, positions: str) -> None:
    prompts = _prompts(adapters["nnsight"])[1:]
    responses = [" Ahoy", " Salt, mostly.", " Because rivers carry it."]
    v = _vec(64, 4, norm=2.0)
    results = {}
    for name, adapter in adapters.items():
        sites = adapter.sites([1])
        base = adapter.activations(prompts, sites, "all", responses=responses, progress=False)
        with adapter.steer(v, layer=1, positions=positions):
            st = adapter.activations(prompts, sites, "all", responses=responses, progress=False)
        rows, diff = st[Position.ALL], st[Position.ALL].acts[:, 0] - base[Position.ALL].acts[:, 0]
        p_lens = np.array([len(_hf_ids(adapter.tokenizer, p)) for p in prompts])
        in_prompt = torch.from_numpy(rows.row_token < p_lens[rows.row_sample])
        hit = in_prompt if positions == "prompt" else ~in_prompt
        assert hit.any() and (~hit).any()
        assert _max_diff(diff[hit], v.expand(int(hit.sum()), -1)) < 1e-4
        assert diff[~hit].abs().max().item() == 0.0
        results[name] = st[Position.ALL].acts
    assert _max_diff(results["nnsight"], results["transformer_lens"]) < 1e-4


@pytest.mark.parametrize("point", list(Point))
def test_steering_every_point_agrees_across_backends(adapters, point: Point) -> None:
    prompts = _prompts(adapters["nnsight"])[1:3]
    v = _vec(64, 9, norm=3.0)
    out = {}
    for name, adapter in adapters.items():
        sites = adapter.sites("all", points=list(Point))
        base = adapter.activations(prompts, sites, "all", progress=False)[Position.ALL]
        with adapter.steer(ps.Steer(Site(2, point), v)):
            st = adapter.activations(prompts, sites, "all", progress=False)[Position.ALL]
        col = st.sites.index(Site(2, point))
        # The steered site itself reads the steered value; everything before it is untouched.
        assert _max_diff(st.acts[:, col] - base.acts[:, col], v.expand(len(st.acts), -1)) < 1e-4
        assert torch.equal(st.acts[:, :col], base.acts[:, :col])
        out[name] = st.acts
    assert _max_diff(out["nnsight"], out["transformer_lens"]) < 1e-4


def test_resid_pre_steer_equals_previous_resid_post_steer(adapters) -> None:
    v = _vec(64, 13, norm=3.0)
    for adapter in adapters.values():
        prompts = _prompts(adapter)[1:3]
        sites = adapter.sites([2, 3])
        with adapter.steer(ps.Steer(Site(2, Point.RESID_PRE), v)):
            a = adapter.activations(prompts, sites, "all", progress=False)[Position.ALL].acts
        with adapter.steer(ps.Steer(Site(1, Point.RESID_POST), v)):
            b = adapter.activations(prompts, sites, "all", progress=False)[Position.ALL].acts
        assert _max_diff(a, b) < 1e-5


def test_steer_errors(adapters) -> None:
    for adapter in adapters.values():
        with pytest.raises(UsageError) as err, adapter.steer(torch.zeros(63), layer=1):
            pass
        assert "(63,)" in str(err.value) and "(64,)" in str(err.value)
        with pytest.raises(UsageError, match=r"\(64,\)"), adapter.steer(torch.zeros(1, 64), layer=1):
            pass
        with pytest.raises(UsageError) as err, adapter.steer(torch.zeros(64), layer=4):
            pass
        assert "0..3" in str(err.value)
        with pytest.raises(UsageError, match="layer"), adapter.steer(torch.zeros(64)):
            pass
        with pytest.raises(UsageError, match="0..3"):
            adapter.generate(["Hi"], 2, steer=ps.Steer(Site(-5), torch.zeros(64)), progress=False)
        assert adapter._steers == []
    with pytest.raises(UsageError) as err:
        ps.Steer(Site(1), torch.zeros(64), positions="middle")
    for allowed in ("all", "prompt", "response"):
        assert allowed in str(err.value)


# ------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steered_greedy_generation_identical_across_backends(adapters, ctx, positions: str) -> None:
    for group in (adapters, ctx):
        nn, tl = group["nnsight"], group["transformer_lens"]
        prompts = _prompts(nn)[1:]
        st = ps.Steer(Site(1), _vec(64, 25, norm=6.0), 1.0, positions)
        a = nn.generate(prompts, 6, steer=st, batch_size=3, progress=False)
        b = tl.generate(prompts, 6, steer=st, batch_size=3, progress=False)
        assert a == b
        assert all(isinstance(t, str) for t in a)


def test_unsteered_generation_matches_uncached_greedy(ctx) -> None:
    hf, tok = ctx["hf"], ctx["tok"]
    nn = ctx["nnsight"]
    prompts = _prompts(nn)[1:]
    eos = nn._eos_ids()
    truth = [_greedy_truth(hf, tok, p, 8, eos) for p in prompts]
    # The model's text depends on more than the last prompt token (same chat suffix, other text).
    assert len({tuple(t[:2]) for t in truth}) == len(truth)
    for backend in BACKENDS:
        got = ctx[backend].generate(prompts, 8, batch_size=3, progress=False)
        assert got == [tok.decode(t, skip_special_tokens=True) for t in truth], backend


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steering_applies_to_every_generated_token(ctx, positions: str) -> None:
    """generate() with a steer equals greedy decoding by full forward passes with the same steer."""
    hf, tok = ctx["hf"], ctx["tok"]
    nn = ctx["nnsight"]
    prompts = _prompts(nn)[1:]
    eos = nn._eos_ids()
    st = ps.Steer(Site(1), _vec(64, 25, norm=6.0), 1.0, positions)
    truth = [_greedy_truth(hf, tok, p, 8, eos, st) for p in prompts]
    plain = [_greedy_truth(hf, tok, p, 8, eos) for p in prompts]
    assert truth != plain  # the steer changes the text
    if positions == "all":
        # ... and steering the generated tokens matters, not just steering the prompt.
        prompt_only = [_greedy_truth(hf, tok, p, 8, eos, ps.Steer(st.site, st.vector, 1.0, "prompt"))
                       for p in prompts]
        assert truth != prompt_only
    for backend in BACKENDS:
        adapter = ctx[backend]
        # Token by token, batched with left padding.
        enc = [_hf_ids(tok, p) for p in prompts]
        ids, mask = adapter._pad(enc, "left")
        gen_kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tok.pad_token_id,
                      "eos_token_id": eos}
        with adapter.steer(st), torch.inference_mode():
            out = adapter._generate_ids(ids, mask, gen_kwargs)[:, ids.shape[1]:].tolist()
        for j, t in enumerate(truth):
            assert out[j][: len(t)] == t, (backend, j)
        # And through the public API (per-call steer).
        texts = adapter.generate(prompts, 8, steer=st, batch_size=2, progress=False)
        assert texts == [tok.decode(t, skip_special_tokens=True) for t in truth], backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_is_deterministic_given_a_seed(ctx, backend: str) -> None:
    adapter = ctx[backend]
    prompts = _prompts(adapter)[1:3]
    first = adapter.generate(prompts, 6, do_sample=True, seed=123, progress=False)
    torch.manual_seed(999)  # the global RNG state must not matter
    again = adapter.generate(prompts, 6, do_sample=True, seed=123, progress=False)
    assert first == again
    other = adapter.generate(prompts, 6, do_sample=True, seed=124, progress=False)
    greedy = adapter.generate(prompts, 6, progress=False)
    assert other != first  # the seed is used ...
    assert greedy != first  # ... and sampling really samples
    if backend == "transformer_lens":
        assert first == ctx["nnsight"].generate(prompts, 6, do_sample=True, seed=123, progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_sampling_leaves_the_global_rng_alone(ctx, backend: str) -> None:
    adapter = ctx[backend]
    torch.manual_seed(4321)
    expected = torch.rand(3)  # what the user's next draw is without our call in between
    torch.manual_seed(4321)
    adapter.generate(_prompts(adapter)[1:3], 4, do_sample=True, seed=7, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_eos_ids_include_end_of_turn(adapters) -> None:
    tok = adapters["nnsight"].tokenizer
    eos = adapters["nnsight"]._eos_ids()
    assert tok.convert_tokens_to_ids("<|im_end|>") in eos
    assert tok.eos_token_id in eos
