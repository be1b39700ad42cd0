"""The user_persona_refusal audit: disjoint splits, the random-direction null, controls that pass and fail."""

import math

import numpy as np
import pytest
import torch
from test_user_persona import planted_refusal_direction

from personascope.audits.refusal import UserPersonaRefusalAudit, null_size_for, read_against_null
from personascope.errors import UsageError
from personascope.stats import rng
from personascope.steering import user_persona as up
from personascope.steering.vector import PersonaVector


# ---------------------------------------------------------------------------------------------- pure reading
def test_null_size_is_the_fewest_draws_that_let_holm_reach_alpha():
    for m, k in [(1, 20), (3, 60), (7, 140)]:
        assert null_size_for(m) == k
        assert m / (k + 1) < 0.05 <= m / k  # one draw fewer and no persona could ever be flagged


def test_reading_against_the_null_flags_a_planted_shift_and_not_a_null_one():
    null = rng(0, "synthetic-null").normal(0, 0.2, 60)
    # Planted: the refusal direction and one persona far outside the null; two personas inside it.
    r = read_against_null(null, 1.5, {"planted": -1.5, "a": 0.05, "b": -0.1}, 0.03)
    assert r.positive_p == pytest.approx(1 / 61) and r.positive_p < 0.05
    assert r.persona_holm["planted"] == pytest.approx(3 / 61) and r.flagged() == ["planted"]
    assert r.persona_holm["a"] > 0.5 and r.persona_holm["b"] > 0.5
    assert r.negative_adjusted >= 0.05 and r.resolution == pytest.approx(3 / 61)
    # Failing cases: a refusal direction that lowers refusal, a "random" direction far outside the
    # null (flagged as a persona would be), and too few draws for Holm over three personas.
    bad = read_against_null(null, -1.5, {"a": 0.05, "b": -0.1, "c": 0.0}, 2.0)
    assert bad.positive_p == pytest.approx(1.0) and bad.flagged() == []
    assert bad.negative_adjusted == pytest.approx(3 / 61) and bad.negative_adjusted < 0.05
    few = read_against_null(null[:20], 1.5, {"planted": -1.5, "a": 0.05, "b": -0.1}, 0.03)
    assert few.resolution == pytest.approx(3 / 21) and few.flagged() == []  # planted, but Holm cannot reach


def test_splits_must_fit_the_built_in_requests():
    with pytest.raises(UsageError, match="exceed"):
        UserPersonaRefusalAudit.from_params({"n_requests": 30, "n_select": 11}).validate()
    UserPersonaRefusalAudit.from_params({}, "quick").validate()
    assert UserPersonaRefusalAudit.from_params({}, "quick").null_size() == 40  # two personas
    assert UserPersonaRefusalAudit.from_params({}).null_size() == 140  # all seven


# ---------------------------------------------------------------------------------------------- the audit
def _plant(monkeypatch, model, refusal_sign: float, flagged: tuple[str, ...]) -> dict[str, list]:
    """Replace the data-driven vectors with planted ones and record which requests each step used.

    The refusal direction is ``refusal_sign`` times a last-layer direction that raises the refusal
    phrases; a persona in ``flagged`` is the control plus that direction, any other persona the
    control plus a random direction.
    """
    d, layers = model.d_model, range(model.n_layers)
    planted = planted_refusal_direction(model)

    def random_vec(name: str) -> PersonaVector:
        g = rng(0, "fake", name)
        return PersonaVector(name, {k: torch.from_numpy(g.standard_normal(d)).float() for k in layers})

    ctrl = random_vec("coffee")
    seen: dict[str, list] = {"fit": [], "shift": []}

    def fake_vector(m, name, **kw):
        if name == "coffee":
            return ctrl
        return ctrl + (PersonaVector(name, {k: 10 * planted for k in layers}) if name in flagged else random_vec(name))

    def fake_refusal(m, harmful=None, harmless=None, **kw):
        seen["fit"].append(list(harmful))
        return PersonaVector("refusal", {k: refusal_sign * planted for k in layers})

    real = up.measure_refusal_shift

    def spy(model, vectors, refusal, **kw):
        seen["shift"].append((tuple(vectors), tuple(kw["harmful"])))
        return real(model, vectors, refusal, **kw)

    monkeypatch.setattr(up, "user_persona_vector", fake_vector)
    monkeypatch.setattr(up, "refusal_direction", fake_refusal)
    monkeypatch.setattr(up, "measure_refusal_shift", spy)
    return seen


def test_planted_refusal_direction_and_persona_pass_the_null_on_held_out_requests(tiny_nn, monkeypatch):
    seen = _plant(monkeypatch, tiny_nn, +1.0, ("selfish",))
    last = tiny_nn.n_layers - 1
    res = UserPersonaRefusalAudit.from_params({"personas": ["selfish"], "n_questions": 3, "n_requests": 3,
                                               "n_select": 3, "layer": last}).run(tiny_nn, progress=False)
    ctl = {c.name: c for c in res.controls}
    assert {c.kind for c in ctl.values()} == {"positive", "negative", "power"}
    assert ctl["refusal_direction_beats_null"].passed and ctl["refusal_direction_beats_null"].observed == \
        pytest.approx(1 / 21)  # K = 20 by default for one persona
    assert ctl["persona_null_resolution"].passed and ctl["random_direction_not_flagged"].passed
    assert res.verdict != "inconclusive"
    # The planted persona is reported, on the strength of its Holm-adjusted null p.
    m = res.metrics_by_key()
    assert m["refusal_shift_holm_p[selfish]"].value == pytest.approx(1 / 21)
    assert [f.metric for f in res.findings if f.subject == "selfish"] == ["refusal_shift_holm_p[selfish]"]
    assert "yes_no_shift[selfish]" in m and "yes_no_r" in m
    assert m["random_cos_scale"].value == pytest.approx(1 / math.sqrt(tiny_nn.d_model))
    # Splits: disjoint, seeded, recorded; the layer scan saw only the selection split, every reported
    # shift only the evaluation split, and the refusal direction was fitted without the evaluation split.
    split = up.split_requests(up.refusal_prompts()[0], 3, 3, rng(0, "request_split"))
    assert res.data_hashes["refusal_selection_requests"] == split.hashes()["selection"]
    assert res.data_hashes["refusal_evaluation_requests"] == split.hashes()["evaluation"]
    table = next(t for t in res.tables if t.title.startswith("Harmful-request splits"))
    assert [row[:2] for row in table.rows[:2]] == [["selection", 3], ["evaluation", 3]]
    assert not set(split.selection) & set(split.evaluation)
    scans = [h for names, h in seen["shift"] if names == ("+", "-")]
    others = [h for names, h in seen["shift"] if names != ("+", "-")]
    assert scans and all(h == tuple(split.selection) for h in scans)
    assert len(others) == 3 and all(h == tuple(split.evaluation) for h in others)  # personas, positive, null
    assert seen["fit"] == [split.fit] and not set(split.fit) & set(split.evaluation)


def test_controls_fail_when_the_refusal_direction_points_the_wrong_way_and_the_null_is_too_small(
        tiny_nn, monkeypatch):
    _plant(monkeypatch, tiny_nn, -1.0, ())
    last = tiny_nn.n_layers - 1
    res = UserPersonaRefusalAudit.from_params({"personas": ["selfish", "unlawful"], "n_questions": 3, "n_requests": 3,
                                               "n_select": 3, "layer": last, "null_directions": 20}
                                              ).run(tiny_nn, progress=False)
    ctl = {c.name: c for c in res.controls}
    assert not ctl["refusal_direction_beats_null"].passed and ctl["refusal_direction_beats_null"].observed == 1.0
    assert not ctl["persona_null_resolution"].passed  # 2 personas need 40 draws
    assert ctl["persona_null_resolution"].observed == pytest.approx(2 / 21)
    assert res.verdict == "inconclusive"
    assert not [f for f in res.findings if f.subject in ("selfish", "unlawful")]
    assert np.isfinite(res.metric("null_shift_sd").value)


def test_no_null_leaves_the_audit_inconclusive(tiny_nn, monkeypatch):
    _plant(monkeypatch, tiny_nn, +1.0, ("selfish",))
    res = UserPersonaRefusalAudit.from_params({"personas": ["selfish"], "n_questions": 3, "n_requests": 3,
                                               "n_select": 3, "layer": tiny_nn.n_layers - 1, "null_directions": 0}
                                              ).run(tiny_nn, progress=False)
    assert [(c.name, c.passed) for c in res.controls] == [("persona_null_resolution", False)]
    assert res.verdict == "inconclusive" and not [f for f in res.findings if f.subject == "selfish"]
