"""Shared prefixes computed once in generation: same text as the unshared path, fewer tokens computed.

Tokens computed are counted at the input embeddings (every forward pass embeds the tokens it
runs), so the saving is measured, not inferred.
"""

from __future__ import annotations

import contextlib

import pytest

from personascope.backends.base import MIN_SHARED_PREFIX, Steer, common_prefix, prefix_batches
from personascope.chat import encode
from personascope.sites import Site

SYSTEM = ("You are a meticulous, warm and slightly old-fashioned librarian who has worked in a small "
          "seaside town for forty years and loves to recommend books. ")
QUESTIONS = ["What is your name?", "How do I boil an egg?", "Why is the sky blue?", "Tell me a joke.",
             "Who are you?", "Explain gravity to a child.", "What should I do this weekend?",
             "Write one sentence about the ocean.", "Name a fruit.", "Is it going to rain?"]


@contextlib.contextmanager
def counted(model):
    """Count the tokens every forward pass embeds while the block runs."""
    seen = [0]
    emb = model.hf_model.get_input_embeddings()
    handle = emb.register_forward_hook(lambda mod, args, out: seen.__setitem__(0, seen[0] + args[0].numel()))
    try:
        yield seen
    finally:
        handle.remove()


def _generate(model, prompts, share, **kw):
    old = model.share_prefixes
    model.share_prefixes = share
    try:
        with counted(model) as n:
            out = model.generate(prompts, 12, progress=False, **kw)
        return out, n[0]
    finally:
        model.share_prefixes = old


def _prompts(model, system=SYSTEM):
    # Two personas, interleaved: sharing must find the groups itself.
    return [model.format_chat(user=q, system=system + ("Speak like a pirate." if i % 2 else ""))
            for i, q in enumerate(QUESTIONS)]


@pytest.mark.parametrize("backend", ["tiny_nn", "tiny_tl"])
def test_shared_prefix_generation_gives_the_unshared_text(backend, request):
    model = request.getfixturevalue(backend)
    prompts = _prompts(model)
    shared, n_shared = _generate(model, prompts, True, batch_size=4)
    plain, n_plain = _generate(model, prompts, False, batch_size=4)
    assert shared == plain
    assert model.kv_generation_sharing  # both backends: the prefix is computed once per batch
    assert n_shared < 0.6 * n_plain, (n_shared, n_plain)


def test_sampled_generation_with_a_seed_repeats_with_sharing(tiny_nn):
    prompts = _prompts(tiny_nn)
    a, _ = _generate(tiny_nn, prompts, True, do_sample=True, temperature=0.9, seed=3, batch_size=4)
    b, _ = _generate(tiny_nn, prompts, True, do_sample=True, temperature=0.9, seed=3, batch_size=4)
    assert a == b


def test_a_steer_turns_sharing_off(tiny_nn):
    """A steer on prompt positions would be missing from a prefix cache made without it."""
    prompts = _prompts(tiny_nn)[:4]
    vec = tiny_nn.hf_model.get_input_embeddings().weight[5].detach() * 20
    steer = Steer(Site(1), vec, 1.0, "prompt")
    shared, n_shared = _generate(tiny_nn, prompts, True, steer=steer, batch_size=4)
    plain, n_plain = _generate(tiny_nn, prompts, False, steer=steer, batch_size=4)
    assert shared == plain and n_shared == n_plain
    unsteered, _ = _generate(tiny_nn, prompts, True, batch_size=4)
    assert unsteered != shared  # the steer acts (else this test could not see it dropped)


def test_prompts_without_a_common_prefix_keep_the_length_order(tiny_nn):
    """Null: no shared prefix, no change in batching or tokens computed."""
    prompts = [f"{w} " * (3 + i % 5) + "end" for i, w in enumerate("alpha beta gamma delta eps zeta eta".split())]
    ids = [encode(tiny_nn.tokenizer, p) for p in prompts]
    by_length = [list(b) for b in (sorted(range(len(ids)), key=lambda i: -len(ids[i]))[k:k + 3]
                                   for k in range(0, len(ids), 3))]
    assert prefix_batches(ids, 3) == by_length
    shared, n_shared = _generate(tiny_nn, prompts, True, batch_size=3)
    plain, n_plain = _generate(tiny_nn, prompts, False, batch_size=3)
    assert shared == plain and n_shared == n_plain


def test_common_prefix_leaves_every_row_a_token():
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert common_prefix([[1, 2], [3, 4]]) == 0
    assert MIN_SHARED_PREFIX > 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["smol_nn", "smol_tl"])
def test_embedded_model_shares_persona_prompts_exactly(backend, request):
    model = request.getfixturevalue(backend)
    prompts = _prompts(model)
    shared, n_shared = _generate(model, prompts, True)
    plain, n_plain = _generate(model, prompts, False)
    assert shared == plain
    print(f"tokens computed: shared {n_shared}, unshared {n_plain}")
    assert n_shared < n_plain


def _scored(model, share, fn):
    old = model.share_prefixes
    model.share_prefixes = share
    try:
        with counted(model) as n:
            out = fn()
        return out, n[0]
    finally:
        model.share_prefixes = old


@pytest.mark.parametrize("backend", ["tiny_nn", "tiny_tl"])
def test_shared_prefix_scoring_gives_the_unshared_logprobs(backend, request):
    import numpy as np

    model = request.getfixturevalue(backend)
    prompts = _prompts(model)
    conts = [" Sure, here is my answer.", " No.", " I think so, yes, certainly."] * 3 + [" Maybe."]
    for fn in (lambda: model.logprobs(prompts, conts, batch_size=4),
               lambda: model.logprobs(prompts, conts, reduce="mean", batch_size=4),
               lambda: model.next_token_logprobs(prompts, batch_size=4).numpy()):
        shared, n_shared = _scored(model, True, fn)
        plain, n_plain = _scored(model, False, fn)
        np.testing.assert_allclose(shared, plain, atol=1e-5, rtol=0)
        if model.kv_option_scoring:
            assert n_shared < 0.6 * n_plain, (n_shared, n_plain)
        else:  # TransformerLens scores through its own forward: no sharing, nothing changes
            assert n_shared == n_plain
    # A steer turns sharing off: the steered numbers are the unshared ones, and they differ from unsteered.
    vec = model.hf_model.get_input_embeddings().weight[5].detach() * 20
    with model.steer([Steer(Site(1), vec, 1.0, "prompt")]):
        steered, n_s = _scored(model, True, lambda: model.logprobs(prompts, conts, batch_size=4))
        steered_plain, n_sp = _scored(model, False, lambda: model.logprobs(prompts, conts, batch_size=4))
    np.testing.assert_array_equal(steered, steered_plain)
    assert n_s == n_sp
    assert not np.allclose(steered, model.logprobs(prompts, conts), atol=1e-3)  # the steer acts


def test_token_budget_batches_fill_up_and_even_out():
    from personascope.backends.base import chunk_order

    order = list(range(64))
    assert [len(b) for b in chunk_order(order, 64, [72] * 64, 4096)] == [32, 32]  # not 56 + 8
    long = chunk_order(order, 64, [300] * 64, 4096)
    assert all(len(b) * 300 <= 4096 for b in long) and max(map(len, long)) - min(map(len, long)) <= 1
    # Mixed lengths: evening out never puts long rows into a batch over the budget.
    lens = [400] * 10 + [50] * 54
    mixed = chunk_order(order, 64, lens, 4096)
    assert all(len(b) * max(lens[i] for i in b) <= 4096 for b in mixed)
    assert [len(b) for b in mixed] == [10, 54]
    assert [len(b) for b in chunk_order(order, 20, [10] * 64, 10**6)] == [20, 20, 12, 12]  # the row cap holds
    assert chunk_order(order, 16) == [order[k:k + 16] for k in range(0, 64, 16)]  # no budget: fixed size
    assert sorted(i for b in long for i in b) == order


def test_generation_without_a_batch_size_uses_the_budget_and_gives_the_same_text(tiny_nn):
    prompts = _prompts(tiny_nn, system="") * 3  # 30 short prompts
    calls = [0]
    emb = tiny_nn.hf_model.get_input_embeddings()
    handle = emb.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    tiny_nn.share_prefixes = False
    try:
        budget = tiny_nn.generate(prompts, 12, progress=False)
        n_budget, calls[0] = calls[0], 0
        fixed = tiny_nn.generate(prompts, 12, batch_size=4, progress=False)
        n_fixed = calls[0]
    finally:
        tiny_nn.share_prefixes = True
        handle.remove()
    assert budget == fixed
    # All 30 rows fit one batch (30 x ~40 tokens < 256 x 16): one forward pass per step, not eight.
    assert n_budget * 6 <= n_fixed, (n_budget, n_fixed)
