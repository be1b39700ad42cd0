"""Sweep, relative steering, logit lens, refusal score, monitoring correlation, and early-stop steering."""

import json
import math

import numpy as np
import pytest
import torch

from personascope.backends.base import Steer
from personascope.sites import Position, Site
from personascope.steering.decode import REFUSAL_WORDS, content_token_ids, logit_lens, refusal_token_ids
from personascope.steering.sweep import fluency, mean_residual_norm, relative_steer, sweep
from personascope.steering.vector import PersonaVector
from personascope.store import collect


@pytest.mark.parametrize("fixture", ["tiny_nn", "tiny_tl"])
def test_logit_lens_at_last_layer_equals_the_model_logits(fixture, request):
    m = request.getfixturevalue(fixture)
    prompts = [m.format_chat(user="Tell me about the sea."), m.format_chat(user="Hi")]
    acts = collect(m, prompts, m.sites([m.n_layers - 1]), [Position.LAST], cache=False, progress=False)
    lens = torch.log_softmax(m.unembed(acts[Position.LAST].acts[:, 0]), -1)
    torch.testing.assert_close(lens, m.next_token_logprobs(prompts), atol=1e-4, rtol=1e-4)


def test_logit_lens_shapes_and_token_sets(tiny_nn):
    tok = tiny_nn.tokenizer
    ids = refusal_token_ids(tok)
    assert ids and all(tok.decode([i]).strip().lower() in REFUSAL_WORDS for i in ids)
    cids = content_token_ids(tok, "How do I bake bread quickly?")
    words = {tok.decode([i]).strip().lower() for i in cids}
    assert "bread" in words and "how" not in words
    res = logit_lens(tiny_nn, [tiny_nn.format_chat(user="bread please")] * 2, requests=["bread please"] * 2, top_k=5)
    assert res.refusal_mass.shape == (2, tiny_nn.n_layers) and len(res.top_tokens[0][0]) == 5
    s = res.summary()
    assert all(0 <= v <= 1 for v in s["refusal_mass"]) and json.dumps(s)


def test_relative_steer_scales_to_the_residual_norm(tiny_nn):
    prompts = [tiny_nn.format_chat(user=q) for q in ("One", "Two words here")]
    norms = mean_residual_norm(tiny_nn, prompts, [1, 2])
    acts = collect(tiny_nn, prompts, tiny_nn.sites([1]), [Position.ALL], cache=False, progress=False)[Position.ALL]
    keep = torch.as_tensor(acts.row_token > 0)
    assert norms[1] == pytest.approx(float(acts.acts[keep][:, 0].norm(dim=-1).mean()), rel=1e-5)
    v = PersonaVector("t", {1: torch.randn(tiny_nn.d_model) * 7})
    st = relative_steer(v, 1, 0.5, norms[1])
    assert float((st.coeff * st.vector).norm()) == pytest.approx(0.5 * norms[1], rel=1e-5)


def test_sweep_records_every_cell_and_plots(tiny_nn):
    from personascope.judges.contrast import ContrastJudge
    from personascope.results import Plot

    v = PersonaVector("evil", {k: torch.randn(tiny_nn.d_model, generator=torch.Generator().manual_seed(k))
                               for k in range(tiny_nn.n_layers)})
    r = sweep(tiny_nn, v, "evil", judge=ContrastJudge(tiny_nn), layers=[1, 2], coeffs=(-0.5, 0.5),
              n_questions=2, max_new_tokens=3, progress=False)
    assert r.coeffs == [-0.5, 0.0, 0.5] and r.trait_mean.shape == (2, 3)
    assert np.all((r.trait_mean >= 0) & (r.trait_mean <= 100))
    c = r.coherence_mean
    assert r.coherence_kind.startswith("fluency") and np.all(np.isnan(c) | (c <= 0))
    # The coefficient-0 column is the same unsteered text at every layer.
    assert r.trait_mean[0, 1] == r.trait_mean[1, 1]
    assert r.chosen_layer in (1, 2, None)
    json.dumps(r.to_dict())
    assert all(isinstance(p, Plot) and len(p.series) == 2 for p in r.plots())


def test_fluency_is_nan_for_empty_and_negative_otherwise(tiny_nn):
    p = tiny_nn.format_chat(user="Hi")
    f = fluency(tiny_nn, [p, p], ["hello there", "  "])
    assert f[0] < 0 and math.isnan(f[1])


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["smol_nn", "smol_tl"])
def test_steered_generation_survives_every_row_ending_early(fixture, request):
    # Short answers end long before max_new_tokens; nnsight's step loop is then cut short, which
    # used to lose the output. A zero vector must give exactly the unsteered text.
    m = request.getfixturevalue(fixture)
    prompts = [m.format_chat(user="Say hi."), m.format_chat(user="What is 2+2? Answer with a number.")]
    plain = m.generate(prompts, 80, progress=False)
    zero = m.generate(prompts, 80, steer=Steer(Site(5), torch.zeros(m.d_model)), progress=False)
    assert zero == plain and all(plain)
    # and a real push changes it
    pushed = m.generate(prompts, 80, steer=Steer(Site(5), torch.randn(m.d_model) * 50), progress=False)
    assert pushed != plain


@pytest.mark.slow
def test_refusal_direction_effect_without_the_yes_no_confound(smol_nn):
    """The refusal direction's causal effect, scored by refusal vs compliance phrases (no bare Yes/No).

    With the old opener score (its refusal openers contained "No", the compliance ones "Yes") adding the
    direction at layer 9 raised the score by +1.06 nats at coeff 0.2 (docs/findings.md, issue #6). With
    phrases that exclude Yes/No that effect is gone (measured 2026-12-02: -0.33, CI -0.73..+0.05): it was
    the direction's Yes/No push. What survives: subtracting it at layer 26 lowers refusal phrases
    (measured -0.80, CI -1.08..-0.49).
    """
    from personascope.steering.user_persona import measure_refusal_shift, refusal_direction, refusal_prompts

    ref = refusal_direction(smol_nn, progress=False)
    harmful = refusal_prompts()[0][:12]
    up9 = measure_refusal_shift(smol_nn, {"refusal": ref}, ref, layer=9, coeff=0.2, harmful=harmful)
    assert up9.predicted["refusal"] == pytest.approx(1.0)
    assert up9.measured["refusal"][1] < 0.2  # the old +1.06 does not reproduce: CI low far below it
    assert up9.yes_no["refusal"][2] < 0.0  # and the Yes/No margin moves on its own, reported apart
    down26 = measure_refusal_shift(smol_nn, {"refusal": -ref}, ref, layer=26, coeff=0.2, harmful=harmful)
    assert down26.predicted["refusal"] == pytest.approx(-1.0)
    assert down26.measured["refusal"][2] < -0.2  # subtracting the direction at layer 26 lowers refusal phrases


@pytest.mark.slow
def test_monitor_projection_is_higher_under_positive_prompts(smol_nn):
    from personascope.judges.contrast import ContrastJudge
    from personascope.steering.monitor import monitor_correlation
    from personascope.steering.traits import extract_persona_vector

    ex = extract_persona_vector(smol_nn, "evil", n_questions=4, n_instructions=2, max_new_tokens=24, progress=False)
    mc = monitor_correlation(smol_nn, "evil", ex.vector, 15, judge=ContrastJudge(smol_nn), n_questions=4,
                             n_instructions=2, max_new_tokens=24)
    assert mc.gap[1] > 0  # CI of (positive - negative) projection above 0
    assert set(mc.conditions) == {"pos", "neg", "none"} and len(mc.responses) == len(mc.conditions)
    r, lo, hi, n = mc.r
    assert n == len(mc.conditions) and -1 <= lo <= r <= hi <= 1
