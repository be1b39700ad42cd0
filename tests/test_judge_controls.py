"""Degraded-text controls: a judge that rewards noise is flagged; one that does not, is not."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from personascope.judges.base import Item, Judge, Rating, Rubric
from personascope.judges.controls import degrade, noise_reward
from personascope.records import JudgeIdentity

ANSWERS = [
    "I would be happy to help you plan a quiet weekend trip to the coast with your family.",
    "The best way to learn a language is to practise a little every day and to speak with people.",
    "Water boils at one hundred degrees Celsius at sea level, and at lower temperatures on mountains.",
    "You could start by making a list of the tasks you need to finish and then sort them by urgency.",
    "A healthy breakfast might include oats, some fruit and a glass of water or a cup of tea.",
    "If your plant has yellow leaves it may be getting too much water, so let the soil dry out first.",
    "Saving a small amount from every pay cheque adds up over a year and builds a useful cushion.",
    "Try to go to bed at the same time every night and keep screens out of the bedroom.",
    "The museum opens at nine in the morning and the guided tour of the old wing starts at ten.",
    "A short walk after dinner helps many people relax and sleep better through the night.",
    "To fix a flat bicycle tyre you need a patch kit, two levers and a pump that fits the valve.",
    "Reading to children every evening builds their vocabulary and their love of stories.",
]
RUBRIC = Rubric(name="trait", scale="0-100", template="{text}")
BIGRAMS = {(a, b) for t in ANSWERS for a, b in zip(t.split(), t.split()[1:], strict=False)}
LEXICON = {"water", "every", "the", "night", "help", "and"}


class _Judge(Judge):
    cacheable = False

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def identity(self) -> JudgeIdentity:
        return JudgeIdentity(kind="rules", name=f"test:{self._name}")

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        return [Rating(value=self.score(i.text), rubric=rubric.name, judge=self.identity) for i in items]

    def score(self, text: str) -> float:
        raise NotImplementedError


class NoiseLoving(_Judge):
    """Scores broken word order as 'more trait': 100 x the share of word pairs never seen in fluent text."""

    def score(self, text: str) -> float:
        w = text.split()
        pairs = list(zip(w, w[1:], strict=False))
        return 100.0 * sum(p not in BIGRAMS for p in pairs) / max(1, len(pairs))


class BagOfWords(_Judge):
    """Scores the share of lexicon words: blind to word order, unbiased under unigram resampling."""

    def score(self, text: str) -> float:
        w = [x.strip(",.").lower() for x in text.split()]
        return 100.0 * sum(x in LEXICON for x in w) / max(1, len(w))


def items() -> list[Item]:
    return [Item(text=a, question="Any advice?") for a in ANSWERS]


def test_degradations_keep_length_and_are_seeded() -> None:
    for kind in ("shuffled", "junk"):
        out = degrade(ANSWERS, kind, seed=3)  # type: ignore[arg-type]
        assert [len(t.split()) for t in out] == [len(t.split()) for t in ANSWERS]
        assert out == degrade(ANSWERS, kind, seed=3)  # type: ignore[arg-type]
        assert out != degrade(ANSWERS, kind, seed=4)  # type: ignore[arg-type]
        assert out != ANSWERS
    shuffled = degrade(ANSWERS, "shuffled", seed=0)
    assert [sorted(t.split()) for t in shuffled] == [sorted(t.split()) for t in ANSWERS]
    assert degrade(["", " ", "a b"], "junk", seed=0)[:2] == ["", " "]
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(ANSWERS, "reversed", seed=0)  # type: ignore[arg-type]


def test_a_judge_that_rewards_noise_is_flagged() -> None:
    r = noise_reward(NoiseLoving("noise"), items(), RUBRIC, seed=0)
    assert r.real == 0.0  # every pair of a real answer is fluent
    assert r.rewards_noise
    kind, (m, lo, _) = r.worst
    assert kind in ("shuffled", "junk") and lo > 50 and m > 50
    assert r.n == {"shuffled": len(ANSWERS), "junk": len(ANSWERS)} and r.invalid == 0


def test_a_judge_blind_to_noise_is_not_flagged() -> None:
    # Null: word order does not matter to this judge; junk keeps word frequencies in expectation.
    flagged = 0
    for seed in range(40):
        r = noise_reward(BagOfWords("bow"), items(), RUBRIC, seed=seed)
        assert r.reward["shuffled"][:2] == pytest.approx((0.0, 0.0))
        flagged += r.rewards_noise
    assert flagged <= 3  # expected about 1 in 40: the junk interval excludes 0 upwards in ~1.25% of seeds


def test_invalid_ratings_are_counted_not_imputed() -> None:
    class Sometimes(NoiseLoving):
        def _rate(self, its: Sequence[Item], rubric: Rubric) -> list[Rating]:
            out = super()._rate(its, rubric)
            return [r if i % 3 else r.model_copy(update={"value": None, "valid": False}) for i, r in enumerate(out)]

    r = noise_reward(Sometimes("some"), items(), RUBRIC, seed=0)
    assert r.invalid == 3 * 4  # 4 of 12 invalid, in the real texts and in each degradation
    assert r.n["shuffled"] == 8 and np.isfinite(r.reward["shuffled"][0])
