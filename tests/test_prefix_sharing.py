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
    if model.kv_option_scoring:  # nnsight: the prefix is computed once per batch
        assert n_shared < 0.6 * n_plain, (n_shared, n_plain)
    else:  # TransformerLens generates through its hooks: no sharing, nothing changes
        assert n_shared == n_plain


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
def test_embedded_model_shares_persona_prompts_exactly(smol_nn):
    prompts = _prompts(smol_nn)
    shared, n_shared = _generate(smol_nn, prompts, True)
    plain, n_plain = _generate(smol_nn, prompts, False)
    assert shared == plain
    print(f"tokens computed: shared {n_shared}, unshared {n_plain}")
    assert n_shared < n_plain
