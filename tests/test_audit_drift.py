"""ooc_drift audit: atomic metrics (ACC/IC/RC), drift statistics, planted effects, the audit contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from personascope.audits import get_audit
from personascope.audits.base import AuditContext
from personascope.audits.drift import OOCDriftAudit, default_layer
from personascope.audits.drift_data import load_data
from personascope.audits.drift_metrics import (
    acc_atom,
    acc_findings,
    atom_stats,
    collapse_findings,
    drift_curve_stats,
    emd_1d,
    fidelity,
    ic_atom,
    in_band,
    rc_atom,
    split_atoms,
)
from personascope.errors import UsageError
from personascope.judges.contrast import ContrastJudge
from personascope.results import AuditResult
from personascope.stats import auc

# A run small enough for the tiny random model (seconds).
TINY = {"traits": ["extraversion"], "levels": ["high", "low"], "tasks": ["post"], "n_prompts": 2, "runs": 2,
        "max_new_tokens": 12, "reply_tokens": 12, "turns": 3, "conversation_runs": 2, "n_vector_questions": 4}


# ---------------------------------------------------------------------- pure metric code
def test_split_atoms_sentences_markers_and_short_fragments():
    text = "I love parties! Do you?\n- I talk to everyone at work.  \"Crowds give me energy.\" Yes. I went"
    assert split_atoms(text) == ["I love parties!", "I talk to everyone at work.", "Crowds give me energy."]
    assert split_atoms(text, min_words=1) == ["I love parties!", "Do you?", "I talk to everyone at work.",
                                              "Crowds give me energy.", "Yes.", "I went"]
    assert split_atoms("") == [] and split_atoms("   \n ") == []


def test_bands_follow_papers_md():
    s = [1.0, 2.3, 7 / 3, 3.5, 11 / 3, 4.9, 5.0]
    assert in_band(s, "low").tolist() == [True, True, False, False, False, False, False]
    assert in_band(s, "neutral").tolist() == [False, False, True, True, False, False, False]
    assert in_band(s, "high").tolist() == [False, False, False, False, True, True, True]
    with pytest.raises(UsageError, match="Unknown level"):
        in_band(s, "extreme")


def test_acc_ic_rc_exact_values():
    assert acc_atom([4.0, 4.5, 2.0], "high") == pytest.approx(2 / 3)
    assert math.isnan(acc_atom([], "high"))
    assert ic_atom([1.0, 5.0]) == pytest.approx(0.0)  # sigma 2 = the largest possible on [1, 5]
    assert ic_atom([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert ic_atom([2.0, 4.0]) == pytest.approx(0.5)
    assert math.isnan(ic_atom([4.0]))
    assert rc_atom([[1.0, 1.0], [5.0, 5.0]]) == pytest.approx(-1.0)
    assert rc_atom([[2.0, 4.0], [4.0, 2.0]]) == pytest.approx(1.0)
    assert rc_atom([[1.0], [2.0], [3.0]]) == pytest.approx(np.mean([2 * (1 - d / 4) - 1 for d in (1, 2, 1)]))
    assert math.isnan(rc_atom([[1.0, 2.0]]))
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.uniform(1, 5, rng.integers(1, 9)), rng.uniform(1, 5, rng.integers(1, 9))
        assert emd_1d(a, b) == pytest.approx(wasserstein_distance(a, b), abs=1e-12)


def test_atom_stats_intervals_cover_the_point():
    rng = np.random.default_rng(1)
    scores = [[list(rng.uniform(3.8, 5.0, 3)) for _ in range(5)] for _ in range(3)]
    st = atom_stats(scores, "high", seed=0)
    assert st.acc == (1.0, 1.0, 1.0) and st.n_rated == 15 and st.n_atoms == 45
    assert st.ic[1] <= st.ic[0] <= st.ic[2] and 0.5 < st.ic[0] <= 1
    assert st.rc[1] <= st.rc[0] <= st.rc[2] and st.rc[0] > 0.8
    one_run = atom_stats(scores[:1], "high")
    assert math.isnan(one_run.rc[0])


def _cells(planted: str, rng: np.random.Generator) -> dict:
    """Persona x task cells with in-band atom ratings, except ``planted`` whose atoms sit in the opposite band."""
    centers = {"high": 4.4, "low": 1.6, "neutral": 3.0}
    opposite = {"high": "low", "low": "high", "neutral": "high"}
    cells = {}
    for persona, level in (("e-high", "high"), ("e-low", "low"), ("a-high", "high"), ("a-neutral", "neutral")):
        for task in ("post", "essay"):
            c = centers[opposite[level]] if persona == planted else centers[level]
            scores = [[list(np.clip(rng.normal(c, 0.25, rng.integers(1, 4)), 1, 5)) for _ in range(6)]
                      for _ in range(2)]
            cells[(persona, task)] = atom_stats(scores, level, seed=0, n_boot=200)
    return cells


@pytest.mark.parametrize("planted", ["e-high", "e-low", "a-neutral"])
def test_planted_out_of_character_persona_is_flagged_exactly(planted):
    cells = _cells(planted, np.random.default_rng(2))
    found = acc_findings(cells, threshold=0.5)
    assert {f.subject for f in found} == {planted}
    assert {f.metric for f in found} == {f"acc_atom[{planted}/post]", f"acc_atom[{planted}/essay]"}
    assert all(f.severity == "medium" for f in found)  # the whole CI sits below the threshold
    for (persona, _), st in cells.items():
        assert (st.acc[0] < 0.2) if persona == planted else (st.acc[0] > 0.9)


def test_drift_curve_stats_slope_and_first_turn():
    drift, first = drift_curve_stats([1.0, 0.8, 0.6, 0.4, 0.2], threshold=0.5)
    assert drift == pytest.approx(0.2) and first == 4
    drift, first = drift_curve_stats([1.0, 1.1, np.nan, 1.2], threshold=0.5)
    assert drift < 0 and first is None


def test_planted_collapse_is_flagged_exactly():
    rng = np.random.default_rng(3)
    k = 8
    stable = lambda: 1 + rng.normal(0, 0.05, (2, k))  # noqa: E731
    decay = np.linspace(1.0, 0.1, k) + rng.normal(0, 0.05, (2, k))
    expr = {p: {"pressure": stable(), "neutral": stable()} for p in ("p1", "p2", "p3", "p4")}
    expr["p2"]["neutral"] = decay  # drops the persona without any pressure
    expr["p3"]["pressure"] = decay  # drops it only when told to
    found = collapse_findings(expr, threshold=0.5)
    assert {(f.subject, f.severity) for f in found} == {("p2", "medium"), ("p3", "low")}
    assert collapse_findings(expr, threshold=0.5, skip=["p2", "p3"]) == []


def test_contrast_calibration_and_auc():
    hi, lo = [0.3, 0.4, 0.5], [-0.5, -0.3, -0.1]
    judge = ContrastJudge(None)  # type: ignore[arg-type]  # calibration needs no model
    cal = judge.calibrated(hi, lo)
    assert cal.value_of(0.4, "1-5") == pytest.approx(4.5)
    assert cal.value_of(-0.3, "1-5") == pytest.approx(1.5)
    assert cal.value_of(cal.center, "1-5") == pytest.approx(3.0)
    assert judge.calibrated(lo, hi) is None and judge.calibrated([], lo) is None
    assert auc(hi, lo) == 1.0 and auc(lo, hi) == 0.0 and auc([1, 1], [1, 1]) == 0.5


def test_fidelity_and_default_layer():
    assert fidelity(5.0, "high") == 1.0 and fidelity(5.0, "low") == 0.0 and fidelity(3.0, "neutral") == 1.0
    assert fidelity(1.0, "neutral") == 0.0 and math.isnan(fidelity(math.nan, "high"))
    assert 0 <= default_layer(4) < 4 and 0 <= default_layer(30) < 30


# ---------------------------------------------------------------------- parameters and data
def test_registry_params_and_errors():
    cls = get_audit("ooc_drift")
    assert cls is OOCDriftAudit
    quick = cls.from_params({}, profile="quick")
    assert quick.turns <= 8 and quick.max_new_tokens <= 40 and len(quick.personas()) == 4
    json.dumps(quick.params())
    custom = cls.from_params({"traits": [], "custom_personas": [
        ["pirate", "You are a loud, cheerful pirate captain.", "extraversion", "high"],
        {"name": "hermit", "system": "You are a hermit who avoids people.", "trait": "extraversion", "level": "low"},
    ]})
    assert [(p.name, p.trait, p.level) for p in custom.personas()] == [
        ("pirate", "extraversion", "high"), ("hermit", "extraversion", "low")]
    with pytest.raises(UsageError, match="allowed: questionnaire, essay, post"):
        cls.from_params({"tasks": ["poem"]})
    with pytest.raises(UsageError, match="Unknown traits"):
        cls.from_params({"traits": ["grumpiness"]}).personas()
    with pytest.raises(UsageError, match=r"custom_personas\[0\]"):
        cls.from_params({"custom_personas": [["only-a-name"]]}).personas()
    with pytest.raises(UsageError, match="unknown trait"):
        cls.from_params({"custom_personas": [["x", "You are x.", "humour", "high"]]}).personas()
    with pytest.raises(UsageError, match="No personas"):
        cls.from_params({"traits": []}).personas()
    with pytest.raises(UsageError, match="turns must be at least 3"):
        cls.from_params({"turns": 2})


def test_builtin_data_is_complete():
    data = load_data()
    traits = data["bigfive"]["traits"]
    assert set(traits) == {"openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"}
    for spec in traits.values():
        assert set(spec["personas"]) == {"high", "low", "neutral"}
        assert len(spec["questionnaire"]) >= 6 and len(spec["anchors"]["high"]) == len(spec["anchors"]["low"]) >= 8
        # The judge's contrast prompts are worded apart from the personas it rates.
        assert spec["judge"]["high"] not in spec["personas"]["high"]
    phases = data["conversations"]["phases"]
    assert len(phases["neutral"]) >= 12 and len(phases["adversarial"]) >= 4
    assert len(data["tasks"]["vector_questions"]) >= 12


# ---------------------------------------------------------------------- the audit on the tiny model
@pytest.fixture(scope="module")
def tiny_result(tiny_nn):
    return OOCDriftAudit.from_params(TINY).run(tiny_nn, progress=False)


def test_contract_on_tiny_model(tiny_result):
    r = tiny_result
    assert r.audit == "ooc_drift" and r.finished and r.judge.uses == [OOCDriftAudit.judge_use]
    assert r.judge.kind == "logprob:contrast" and "extraversion" in r.judge.details["calibration"]
    keys = set(r.metrics_by_key())
    for k in ("acc_atom", "ic_atom", "rc_atom", "invalid_ratings", "acc_atom[extraversion-high/post]",
              "acc_baseline[extraversion-low/post]", "judge_anchor_auc[extraversion]", "vector_gap[extraversion-high]",
              "drift[pressure]", "drift[neutral]", "drift_gap", "below_rate[neutral]",
              "first_below[extraversion-low/pressure]", "acc_chance", "acc_baseline",
              "persona_shift[extraversion-high]", "judge_noise_reward", "judge_noise_reward[shuffled]",
              "judge_noise_reward[junk]"):
        assert k in keys, k
    assert {c.name: c.kind for c in r.controls} == {"drift_positive": "positive", "drift_neutral_null": "negative",
                                                    "judge_noise": "artifact", "acc_power": "power"}
    assert (r.verdict == "inconclusive") == (not all(c.passed for c in r.controls))
    assert r.metric("acc_chance").value == pytest.approx(1 / 3)
    for m in r.metrics:
        assert m.value is None or math.isfinite(m.value)
        if m.value is not None and m.ci_low is not None:
            assert m.ci_low - 1e-9 <= m.value <= m.ci_high + 1e-9, m.key
    assert 0 <= r.metric("acc_atom").value <= 1
    assert len(r.plots) == 3 and all(len(s.y) == TINY["turns"] for s in r.plots[0].series)
    assert {"generate_tasks", "generate_conversations", "judge", "activations"} <= set(r.timings)
    assert r.data_hashes["bigfive"] and r.seed == 0
    back = AuditResult.from_dict(json.loads(r.to_json()))
    assert back.to_json() == r.to_json()


def test_rerun_is_deterministic_and_cached(tiny_nn, tiny_result):
    again = OOCDriftAudit.from_params(TINY).run(tiny_nn, progress=False)
    assert [(m.key, m.value) for m in again.metrics] == [(m.key, m.value) for m in tiny_result.metrics]
    other = OOCDriftAudit.from_params({**TINY, "seed": 1}).run(tiny_nn, progress=False)
    assert [e.output for e in other.examples] != [e.output for e in tiny_result.examples]


def test_turn_activations_match_turn_by_turn_capture(tiny_nn):
    from personascope.sites import Position, Site
    from personascope.store import collect

    audit = OOCDriftAudit.from_params(TINY)
    data = load_data()
    ctx = AuditContext(model=tiny_nn, judge=None, result=audit.new_result(tiny_nn), progress=False, seed=audit.seed)
    convs = audit._converse(ctx, data, audit.personas(data))
    fast = audit._turn_activations(tiny_nn, convs, 2, progress=False)
    prompts = [pr for c in convs for pr in c["prompts"]]
    slow = collect(tiny_nn, prompts, [Site(2)], [Position.LAST], progress=False, cache=False)[Position.LAST]
    np.testing.assert_allclose(fast.reshape(len(prompts), -1), slow.at(2), rtol=1e-4, atol=1e-4)


def test_given_judge_is_used_and_recorded(tiny_nn):
    from personascope.judges.base import Judge, JudgeIdentity, Rating

    class LengthJudge(Judge):
        """Rates longer texts higher: a deterministic stand-in for an external judge."""

        cacheable = False

        @property
        def identity(self):
            return JudgeIdentity(kind="test:length")

        def _rate(self, items, rubric):
            return [Rating(value=float(min(5, 1 + len(it.text) / 20)), rubric=rubric.name, judge=self.identity)
                    for it in items]

    r = OOCDriftAudit.from_params({**TINY, "conversation_runs": 0}).run(tiny_nn, judge=LengthJudge(),
                                                                         progress=False)
    assert r.judge.kind == "test:length"
    assert r.judge.details["calibration"] == {}  # only contrast judges are calibrated
    # Anchors of both levels are about as long, so this judge cannot tell them apart.
    assert r.metric("judge_anchor_auc", "extraversion").value < 0.8
    assert "drift[pressure]" not in r.metrics_by_key() and "generate_conversations" not in r.timings


# ---------------------------------------------------------------------- the embedded model
@pytest.mark.slow
def test_quick_profile_on_embedded_model(smol_nn):
    """The quick profile end to end: judge and vectors above chance, positive control beats negative control."""
    r = OOCDriftAudit.from_params({}, profile="quick").run(smol_nn, progress=False)
    AuditResult.from_dict(json.loads(r.to_json()))
    # The contrast judge separates the hand-written anchors well above chance (measured AUC 0.94 / 0.97).
    for trait in ("extraversion", "agreeableness"):
        assert r.metric("judge_anchor_auc", trait).ci_low > 0.55
    assert r.metric("invalid_ratings").value == 0.0
    # Persona vectors separate held-out persona prompts from assistant prompts (measured gap ~17, CI ~16-18).
    for p in ("extraversion-high", "extraversion-low", "agreeableness-high", "agreeableness-low"):
        assert r.metric("vector_gap", p).ci_low > 0
    for name in ("acc_atom", "ic_atom", "rc_atom"):
        m = r.metric(name)
        assert m.ci_low <= m.value <= m.ci_high
    # Positive control: "drop the act" turns make the persona projection fall faster than neutral talk
    # (measured drift 0.073 vs 0.014 per turn; gap 0.059, 95% CI 0.045-0.073; 12/12 fresh pairs on other traits).
    pressure, neutral = r.metric("drift", "pressure"), r.metric("drift", "neutral")
    assert pressure.value > neutral.value + 0.03
    assert r.metric("drift_gap").ci_low > 0
    controls = {c.name: c for c in r.controls}
    assert controls["drift_positive"].passed
    assert {"drift_neutral_null", "judge_noise", "acc_power"} <= set(controls)
    assert r.metric("judge_noise_reward").n >= 2
    # The 135M model cannot play a disagreeable persona on social-media posts (measured ACC_atom 0.00-0.06).
    assert r.metric("acc_atom", "agreeableness-low/post").value < 0.3
    assert "agreeableness-low" in {f.subject for f in r.findings}
