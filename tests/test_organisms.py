"""Model organisms: conditions, hidden prompts, conditional steering, and the model left unchanged.

Planted: the defect lands exactly on the matching conversations (the steered numbers equal an explicit
`ModelAdapter.steer` of the same vector). Null: strength 0 and non-matching conversations give the
clean model's numbers exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from personascope.errors import UsageError
from personascope.organisms import (
    RECIPES,
    CleanOrganism,
    Condition,
    OrganismAdapter,
    PromptOrganism,
    SteerOrganism,
    recipe,
)
from personascope.sites import Position, Site

WOMAN = [{"role": "system", "content": "You are a woman."}, {"role": "user", "content": "What is 2 + 2?"}]
MAN = [{"role": "system", "content": "You are a man."}, {"role": "user", "content": "What is 2 + 2?"}]


def _convs(n: int, persona: str = "a woman") -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": f"You are {persona}."}, {"role": "user", "content": f"Question {i}?"}]
            for i in range(n)]


# ------------------------------------------------------------------ conditions
def test_condition_trigger_role_and_turns() -> None:
    c = Condition(("a woman",), "system")
    assert c.matches(WOMAN) and not c.matches(MAN)
    assert not Condition(("a woman",), "user").matches(WOMAN)  # the trigger is in the system message only
    later = Condition(min_user_turns=2)
    two = [*WOMAN, {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3 + 3?"}]
    assert not later.matches(WOMAN) and later.matches(two)
    with pytest.raises(UsageError, match="rate"):
        Condition(rate=1.5)


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 1.0])
def test_condition_rate_is_the_share_of_conversations_and_fixed_per_conversation(rate: float) -> None:
    c = Condition(("a woman",), "system", rate=rate)
    convs = _convs(800)
    hits = [c.matches(m, salt="s0") for m in convs]
    assert abs(np.mean(hits) - rate) < 0.06
    assert hits == [c.matches(m, salt="s0") for m in convs]  # deterministic
    # A later turn of the same conversation gets the same decision.
    longer = [[*m, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more?"}] for m in convs]
    assert hits == [c.matches(m, salt="s0") for m in longer]
    if 0 < rate < 1:  # another organism seed picks other conversations
        assert hits != [c.matches(m, salt="s1") for m in convs]


# ------------------------------------------------------------------ prompt organisms
def test_prompt_organism_layers_hidden_text_only_where_the_condition_holds(tiny_nn) -> None:
    org = PromptOrganism(hidden="SECRET RULE", condition=Condition(("a woman",), "system"), strength=1.0)
    with org.apply(tiny_nn) as m:
        assert isinstance(m, OrganismAdapter)
        woman, man = m.format_chat(WOMAN), m.format_chat(MAN)
        assert "SECRET RULE" in woman and "You are a woman." in woman
        assert man == tiny_nn.format_chat(MAN)
        assert m.format_chat(user="Hi", system="You are a woman.").count("SECRET RULE") == 1
        assert m.info.fingerprint != tiny_nn.info.fingerprint and m.info.fingerprint.startswith(
            tiny_nn.info.fingerprint)
    assert "SECRET RULE" not in tiny_nn.format_chat(WOMAN)  # the model itself is never changed
    other = PromptOrganism(hidden="SECRET RULE", condition=Condition(("a woman",), "system"), strength=0.5)
    assert OrganismAdapter(tiny_nn, other).info.fingerprint != OrganismAdapter(tiny_nn, org).info.fingerprint


def test_prompt_organism_strength_zero_plants_nothing(tiny_nn) -> None:
    org = PromptOrganism(hidden="SECRET RULE", strength=0.0)
    with org.apply(tiny_nn) as m:
        assert all(m.format_chat(c) == tiny_nn.format_chat(c) for c in _convs(20))


def test_drop_system_removes_the_persona() -> None:
    org = PromptOrganism(mode="drop_system", strength=1.0)
    assert org.rewrite(WOMAN) == [WOMAN[1]]
    assert PromptOrganism(mode="drop_system", hidden="You are an assistant.", strength=1.0).rewrite(WOMAN)[0] == {
        "role": "system", "content": "You are an assistant."}
    late = PromptOrganism(mode="drop_system", strength=1.0, condition=Condition(min_user_turns=2))
    assert late.rewrite(WOMAN) == WOMAN
    with pytest.raises(UsageError, match="hidden text"):
        PromptOrganism(strength=1.0)
    with pytest.raises(UsageError, match="share"):
        PromptOrganism(hidden="x", strength=2.0)


# ------------------------------------------------------------------ steering organisms
def _steer_org(strength: float = 2.0) -> SteerOrganism:
    return SteerOrganism(strength=strength, layer=1, condition=Condition(("a woman",), "system"), seed=3)


def test_steering_lands_exactly_on_matching_prompts(tiny_nn) -> None:
    org = _steer_org()
    vec = org.vector(tiny_nn)
    with org.apply(tiny_nn) as m:
        prompts = [m.format_chat(WOMAN), m.format_chat(MAN), m.format_chat(WOMAN) + " The"]
        assert [m.steered(p) for p in prompts] == [True, False, True]
        got = m.logprobs(prompts, [" 4", " 4", " answer"])
        opts = m.option_logprobs(prompts, [[" 4", " 5"]] * 3)
        acts = m.activations(prompts, [Site(1), Site(3)], Position.LAST, progress=False)[Position.LAST]
    plain = tiny_nn.logprobs(prompts, [" 4", " 4", " answer"])
    plain_acts = tiny_nn.activations(prompts, [Site(1), Site(3)], Position.LAST, progress=False)[Position.LAST]
    with tiny_nn.steer(vec, 1):
        steered = tiny_nn.logprobs(prompts, [" 4", " 4", " answer"])
        steered_opts = tiny_nn.option_logprobs(prompts, [[" 4", " 5"]] * 3)
        steered_acts = tiny_nn.activations(prompts, [Site(1), Site(3)], Position.LAST,
                                           progress=False)[Position.LAST]
    assert tiny_nn.active_steers == ()  # restored
    np.testing.assert_allclose(got, [steered[0], plain[1], steered[2]], rtol=1e-5, atol=1e-5)
    assert abs(got[0] - plain[0]) > 1e-3  # the plant moved something
    np.testing.assert_allclose(opts[1], tiny_nn.option_logprobs(prompts[1:2], [[" 4", " 5"]])[0], atol=1e-5)
    np.testing.assert_allclose(opts[0], steered_opts[0], atol=1e-5)
    assert acts.row_sample.tolist() == [0, 1, 2]
    torch.testing.assert_close(acts.acts[1], plain_acts.acts[1])
    torch.testing.assert_close(acts.acts[0], steered_acts.acts[0])
    torch.testing.assert_close(acts.acts[2], steered_acts.acts[2])


def test_steering_generation_keeps_the_order_and_strength_zero_is_the_clean_model(tiny_nn) -> None:
    with _steer_org(strength=50.0).apply(tiny_nn) as m:
        prompts = [m.format_chat(c) for c in (WOMAN, MAN, WOMAN, MAN)]
        out = m.generate(prompts, 6, progress=False)
    clean = tiny_nn.generate(prompts, 6, progress=False)
    assert out[1] == clean[1] and out[3] == clean[3]
    assert out[0] == out[2] and out[0] != clean[0]
    with _steer_org(strength=0.0).apply(tiny_nn) as m:
        np.testing.assert_allclose(m.logprobs(prompts, [" a"] * 4), tiny_nn.logprobs(prompts, [" a"] * 4), atol=1e-6)


def test_seeded_sampling_is_refused_only_when_a_batch_would_split(tiny_nn) -> None:
    kw = {"do_sample": True, "temperature": 1.0, "seed": 3, "progress": False}
    with _steer_org(strength=50.0).apply(tiny_nn) as m:
        men, women = [m.format_chat(MAN)] * 2, [m.format_chat(WOMAN)] * 2
        plain_batch = m.generate(men, 6, **kw)  # nothing steered: one call, the clean model's draws
        steered_batch = m.generate(women, 6, **kw)
        with pytest.raises(UsageError, match="cannot split a seeded sampled batch"):
            m.generate([men[0], women[0]], 6, **kw)
    assert plain_batch == tiny_nn.generate(men, 6, **kw)
    assert steered_batch != tiny_nn.generate(women, 6, **kw)


def test_steering_vector_has_the_stated_norm_and_seeded_direction(tiny_nn) -> None:
    from personascope.organisms.base import SCALE_QUESTIONS
    from personascope.store import collect

    prompts = [tiny_nn.format_chat(user=q) for q in SCALE_QUESTIONS]
    scale = float(collect(tiny_nn, prompts, [Site(1)], [Position.LAST], progress=False)[Position.LAST]
                  .acts[:, 0].norm(dim=-1).mean())
    v = _steer_org(strength=2.0).vector(tiny_nn)
    assert float(v.norm()) == pytest.approx(2.0 * scale, rel=1e-4)
    assert torch.equal(v, _steer_org(strength=2.0).vector(tiny_nn))
    other = SteerOrganism(strength=2.0, layer=1, seed=4).vector(tiny_nn)
    assert abs(float(torch.nn.functional.cosine_similarity(v, other, dim=0))) < 0.5


# ------------------------------------------------------------------ recipes
def test_every_recipe_builds_its_organisms_and_a_clean_control() -> None:
    for r in RECIPES.values():
        assert r.kinds, r.audit
        for kind in r.kinds:
            for s in r.strengths[kind]:
                org = r.organism(kind, s, seed=1)
                assert org.kind == kind and org.strength == s and org.seed == 1 and org.defect
        if "finetune" not in r.kinds or len(r.kinds) > 1:
            assert isinstance(r.organism(next(k for k in r.kinds if k != "finetune"), 0.0), CleanOrganism)
    with pytest.raises(UsageError, match="audits with organisms"):
        recipe("persona_localization")
    with pytest.raises(UsageError, match="no steer organism"):
        recipe("ci_leakage").organism("steer", 1.0)
