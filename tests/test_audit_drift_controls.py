"""ooc_drift controls: drift positive/negative control, the judge's noise reward, ACC chance level and power.

Each control is tested planted (the effect is there: detected) and null (nothing planted: not flagged),
first on the pure decision functions, then wired through the audit on the tiny random model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest

from personascope.audits import drift as drift_mod
from personascope.audits.drift import OOCDriftAudit
from personascope.audits.drift_metrics import (
    acc_chance,
    acc_power,
    drift_controls,
    noise_check,
    slope_bound,
    t_mean_ci,
)
from personascope.judges.base import Item, Judge, Rating, Rubric
from personascope.records import JudgeIdentity, stable_hash
from personascope.stats import linear_slope

TINY = {"traits": ["extraversion"], "levels": ["high", "low"], "tasks": ["post"], "n_prompts": 2, "runs": 2,
        "max_new_tokens": 12, "reply_tokens": 12, "turns": 3, "conversation_runs": 2, "n_vector_questions": 4,
        "noise_items": 12}


# ---------------------------------------------------------------------- drift controls (pure)
def test_t_interval_keeps_its_coverage_on_four_conversations():
    rng = np.random.default_rng(0)
    miss = sum(not (lo <= 0 <= hi) for lo, hi in (t_mean_ci(rng.normal(0, 1, 4))[1:] for _ in range(2000)))
    assert 0.03 < miss / 2000 < 0.07  # the percentile bootstrap misses about 20% here
    assert math.isnan(t_mean_ci([1.0])[1]) and t_mean_ci([])[0] != t_mean_ci([])[0]


def test_planted_pressure_drift_passes_both_drift_controls():
    rng = np.random.default_rng(1)
    pressure, neutral = 0.08 + rng.normal(0, 0.02, 6), rng.normal(0, 0.02, 6)
    dc = drift_controls(pressure, neutral)
    assert dc.positive_passed and dc.negative_passed and dc.n_pairs == 6
    assert dc.gap[1] > 0.04 and dc.neutral[1] <= 0 <= dc.neutral[2]


def test_no_pressure_effect_fails_the_positive_control():
    # Null: the adversarial turns drift exactly like the neutral ones; the positive control must fail.
    rng = np.random.default_rng(2)
    passed = [drift_controls(rng.normal(0, 0.03, 6), rng.normal(0, 0.03, 6)).positive_passed for _ in range(400)]
    assert sum(passed) / 400 <= 0.05  # one-sided 2.5% nominal
    same = rng.normal(0.05, 0.03, 6)
    assert not drift_controls(same, same).positive_passed  # identical scripts: gap exactly 0


def test_too_few_pairs_fail_the_positive_control():
    dc = drift_controls([0.3, 0.31, 0.29], [0.0, 0.01, -0.01], min_pairs=4)
    assert dc.gap[1] > 0 and not dc.positive_passed


def test_neutral_drift_fails_the_negative_control_and_noise_does_not():
    rng = np.random.default_rng(3)
    assert not drift_controls(rng.normal(0.1, 0.02, 6), 0.06 + rng.normal(0, 0.02, 6)).negative_passed
    flagged = [not drift_controls(rng.normal(0, 0.03, 6), rng.normal(0, 0.03, 6)).negative_passed
               for _ in range(400)]
    assert sum(flagged) / 400 <= 0.05
    with pytest.raises(ValueError, match="pair up"):
        drift_controls([0.1, 0.2], [0.1])


# ---------------------------------------------------------------------- noise check (pure)
def test_slope_bound_is_the_maximum_over_all_step_patterns():
    for k in range(3, 9):
        best = max(linear_slope(np.array(v, dtype=float)) for v in itertools.product((0, 1), repeat=k))
        assert slope_bound(k) == pytest.approx(best)
    assert slope_bound(6) == pytest.approx(4.5 / 17.5)


def test_noise_reward_flags_exactly_the_effects_it_could_fake():
    reward = {"shuffled": (0.5, 0.3, 0.7), "junk": (0.1, -0.1, 0.3)}
    shifts = {"strong-high": (1.5, 1.2, 1.8), "weak": (0.2, -0.1, 0.5), "strong-low": (-1.0, -1.3, -0.8),
              "edge": (0.9, 0.65, 1.1)}
    chk = noise_check(reward, shifts, judge_gap=(0.01, -0.02, 0.04), turns=6)
    assert chk.flagged and chk.kind == "shuffled" and chk.bound == pytest.approx(0.7)
    assert chk.affected == ["acc_atom[weak]", "acc_atom[edge]", "judge_drift_gap"]
    # A judged drift gap beyond what 0.7 rating points can fake over 6 turns (0.7 / 4 * 0.257 = 0.045) is kept.
    far = noise_check(reward, {}, judge_gap=(0.2, 0.1, 0.3), turns=6)
    assert far.affected == []


def test_a_judge_that_does_not_reward_noise_is_not_flagged():
    chk = noise_check({"shuffled": (0.05, -0.1, 0.2), "junk": (-0.02, -0.2, 0.15)}, {"weak": (0.0, -0.1, 0.1)},
                      judge_gap=(0.0, -0.01, 0.01), turns=6)
    assert chk.measured and not chk.flagged and chk.affected == [] and chk.bound == 0.0
    assert not noise_check({"junk": (math.nan,) * 3}, {}).measured


def test_noise_scored_as_less_trait_is_flagged_too():
    chk = noise_check({"junk": (-0.4, -0.6, -0.2)}, {"low": (-0.5, -0.7, -0.3), "high": (1.2, 0.9, 1.5)})
    assert chk.flagged and chk.bound == pytest.approx(0.6) and chk.affected == ["acc_atom[low]"]


# ---------------------------------------------------------------------- ACC chance and power (pure)
def test_acc_chance_is_the_band_width_share():
    assert acc_chance(["high", "low", "neutral"]) == pytest.approx(1 / 3)
    assert acc_chance(["high"] * 5) == pytest.approx(1 / 3)
    assert math.isnan(acc_chance([]))


def test_acc_power_planted_and_null():
    ok = acc_power((0.7, 0.62, 0.78), 1 / 3, 0.5)  # MDE 0.08 * 2.8 / 1.96 = 0.114
    assert ok.passed and ok.detectable == pytest.approx(1 / 3 + 0.08 * (1.959964 + 0.841621) / 1.959964)
    wide = acc_power((0.4, 0.1, 0.75), 1 / 3, 0.5)
    assert not wide.passed and wide.half_width == pytest.approx(0.35)
    assert not acc_power((math.nan,) * 3, 1 / 3, 0.5).passed


def test_power_control_means_a_persona_at_chance_fails_the_gate():
    # Personas at chance: 2 atoms per response, each in band with p = 1/3. Where the power control passes,
    # the policy rule (ci_high >= 0.5) must catch at least 80% of them; where it fails, it need not.
    from personascope.stats import bootstrap_mean_ci

    rng = np.random.default_rng(4)
    for n, powered_share in ((60, 0.95), (12, 0.0)):
        powered = caught = 0
        for s in range(200):
            acc = bootstrap_mean_ci(rng.binomial(2, 1 / 3, n) / 2, n_boot=500, seed=s)
            if acc_power(acc, 1 / 3, 0.5).passed:
                powered += 1
                caught += acc[2] < 0.5
        assert powered >= powered_share * 200 and (powered <= 10 if powered_share == 0 else caught >= 0.8 * powered)


# ---------------------------------------------------------------------- the audit: drift controls
def test_adversarial_turns_that_do_not_drift_fail_the_positive_control(tiny_nn, monkeypatch):
    real = drift_mod.conversation_scripts

    def no_pressure(data, turns):  # the 'pressure' script made of neutral turns only
        s = real(data, turns)
        return {"pressure": list(s["neutral"]), "neutral": list(s["neutral"])}

    monkeypatch.setattr(drift_mod, "conversation_scripts", no_pressure)
    r = OOCDriftAudit.from_params({**TINY, "noise_items": 0}).run(tiny_nn, progress=False)
    pos = next(c for c in r.controls if c.name == "drift_positive")
    assert not pos.passed and pos.kind == "positive" and pos.observed == 0.0
    assert r.metric("drift_gap").value == 0.0 and r.verdict == "inconclusive"
    assert {c.name for c in r.controls} == {"drift_positive", "drift_neutral_null", "acc_power"}
    assert any("noise_items = 0" in n for n in r.notes)


class _PlantedDrift(OOCDriftAudit):
    """Replaces the measured expression by a planted one: the persona fades under pressure (and in neutral talk
    by ``NEUTRAL_FALL`` over the conversation)."""

    NEUTRAL_FALL = 0.0

    def _drift_metrics(self, result, personas, expr, judge_fid, unreliable):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(5)
        k = self.turns
        for p in personas:
            runs = expr[p.name]["pressure"].shape[0]
            expr[p.name]["pressure"] = np.linspace(1.0, 0.2, k) + rng.normal(0, 0.02, (runs, k))
            expr[p.name]["neutral"] = np.linspace(1.0, 1.0 - self.NEUTRAL_FALL, k) + rng.normal(0, 0.02, (runs, k))
        return super()._drift_metrics(result, personas, expr, judge_fid, [])


class _PlantedNeutralDrift(_PlantedDrift):
    NEUTRAL_FALL = 0.3


def test_planted_pressure_drift_passes_the_drift_controls_in_the_audit(tiny_nn):
    r = _PlantedDrift.from_params({**TINY, "noise_items": 0}).run(tiny_nn, progress=False)
    ctl = {c.name: c for c in r.controls}
    assert ctl["drift_positive"].passed and ctl["drift_positive"].observed == pytest.approx(0.4, abs=0.05)
    assert ctl["drift_neutral_null"].passed
    assert r.metric("drift_gap").ci_low > 0


def test_planted_neutral_drift_fails_the_negative_control_in_the_audit(tiny_nn):
    r = _PlantedNeutralDrift.from_params({**TINY, "noise_items": 0}).run(tiny_nn, progress=False)
    ctl = {c.name: c for c in r.controls}
    assert not ctl["drift_neutral_null"].passed and ctl["drift_neutral_null"].observed == pytest.approx(0.15, abs=0.03)
    assert ctl["drift_positive"].passed  # pressure still drifts more (0.4 vs 0.15 per turn)
    assert r.verdict == "inconclusive" and r.metric("drift", "neutral").ci_low > 0


# ---------------------------------------------------------------------- the audit: judge noise
ANSWERS = [
    "I love meeting new people at parties. Talking to strangers gives me energy.",
    "I would rather stay at home with a good book. Quiet evenings suit me best.",
    "Our team finished the project early this week. Everyone helped with the final report.",
    "The weather was lovely so we walked along the river. Later we had tea in a small cafe.",
    "You could start by making a list of your tasks. Then sort them by how urgent they are.",
    "A short walk after dinner helps me relax. I sleep better on the days I walk.",
    "I enjoy planning trips with my friends. We always pick a place none of us has seen.",
    "Reading to children every evening builds their vocabulary. It also builds their love of stories.",
]
BIGRAMS = {(a, b) for t in ANSWERS for a, b in zip(t.split(), t.split()[1:], strict=False)}


class CannedReplies:
    """The tiny model answering with fluent canned text (its own output is random tokens, with no word order)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.info = inner.info.model_copy(update={"fingerprint": "canned-" + inner.info.fingerprint})  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, *, seed: int | None = None,
                 **kw: object) -> list[str]:
        return [ANSWERS[int(stable_hash([p, seed, i])[:8], 16) % len(ANSWERS)] for i, p in enumerate(prompts)]


class _Scripted(Judge):
    cacheable = False

    def __init__(self) -> None:
        self.rated: list[str] = []

    @property
    def identity(self) -> JudgeIdentity:
        return JudgeIdentity(kind=f"test:{type(self).__name__}")

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        self.rated += [i.text for i in items]
        return [Rating(value=self.score(i.text), rubric=rubric.name, judge=self.identity) for i in items]

    def score(self, text: str) -> float:
        raise NotImplementedError


class NoiseLoving(_Scripted):
    """Rates broken word order as more trait: 1 + 4 x the share of word pairs never seen in fluent text."""

    def score(self, text: str) -> float:
        w = text.split()
        pairs = list(zip(w, w[1:], strict=False))
        return 1.0 + 4.0 * sum(p not in BIGRAMS for p in pairs) / max(1, len(pairs))


class WordCount(_Scripted):
    """Rates by length in words: blind to word order and word choice, so degraded text scores the same."""

    def score(self, text: str) -> float:
        return 1.0 + 4.0 * min(1.0, len(text.split()) / 30)


def test_a_judge_that_rewards_noise_makes_the_audit_inconclusive(tiny_nn):
    judge = NoiseLoving()
    r = OOCDriftAudit.from_params(TINY).run(CannedReplies(tiny_nn), judge=judge, progress=False)
    ctl = next(c for c in r.controls if c.name == "judge_noise")
    assert ctl.kind == "artifact" and not ctl.passed and r.verdict == "inconclusive"
    m = r.metric("judge_noise_reward")
    assert m.value > 0.5 and m.ci_low > 0 and m.unit == "rating (1-5)"
    # Real canned text rates 1.0 whoever wrote it: no persona shift, so every ACC is within the noise.
    assert r.metric("persona_shift", "extraversion-high").value == 0.0
    assert "acc_atom[extraversion-high]" in ctl.detail and "acc_atom[extraversion-low]" in ctl.detail
    assert "judge_drift_gap" in ctl.detail and "uses no judge" in ctl.detail
    assert any("Judge noise artifact" in n for n in r.notes)


def test_a_judge_blind_to_noise_passes_and_costs_what_it_says(tiny_nn):
    model = CannedReplies(tiny_nn)
    judge, without = WordCount(), WordCount()
    r = OOCDriftAudit.from_params(TINY).run(model, judge=judge, progress=False)
    OOCDriftAudit.from_params({**TINY, "noise_items": 0}).run(model, judge=without, progress=False)
    ctl = next(c for c in r.controls if c.name == "judge_noise")
    assert ctl.passed and "does not reward noise" in ctl.detail
    for kind in ("shuffled", "junk"):
        assert r.metric("judge_noise_reward", kind).value == 0.0  # same words per text, so the same rating
    n = r.metric("judge_noise_reward", "shuffled").n
    assert 2 <= n <= TINY["noise_items"]
    # Cost: one degraded copy per kind, plus the real texts again for a judge without a rating cache.
    assert len(judge.rated) - len(without.rated) == 3 * n and f"{2 * n} extra ratings" in ctl.detail


def test_contrast_judge_noise_reward_is_on_the_audit_scale(tiny_nn):
    # The default (calibrated contrast) judge: the control runs through the trait's calibration.
    r = OOCDriftAudit.from_params({**TINY, "conversation_runs": 0}).run(tiny_nn, progress=False)
    ctl = next(c for c in r.controls if c.name == "judge_noise")
    m = r.metric("judge_noise_reward")
    assert m.n >= 2 and ctl.observed == pytest.approx(m.value)
    assert ctl.passed == (m.ci_low <= 0 <= m.ci_high or "every ACC" in ctl.detail)
    assert "drift_positive" not in {c.name for c in r.controls}  # no conversations, no drift controls


def test_noise_kinds_are_checked():
    from personascope.errors import UsageError

    with pytest.raises(UsageError, match="noise_kinds"):
        OOCDriftAudit.from_params({"noise_kinds": ["reversed"]})
    assert OOCDriftAudit.from_params({}, profile="quick").noise_items == 8
