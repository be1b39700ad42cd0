"""Degraded-text controls for judges: does a judge score noise as "more trait".

A judge-based effect (a steered answer is judged more evil, a fine-tune's answers more sycophantic)
is only an effect if the judge does not give the same points to degraded text. A same-model
contrast judge, for example, maps "no preference" to 50 while normal answers score about 41, so any
degradation (a steered model losing fluency) reads as "more trait". This module builds matched
degraded versions of real answers and measures the judge's *noise reward*: the judged score of the
degraded text minus that of the real text, paired by item, with a Student-t CI (Bonferroni over
the degradations).

Degradations (each keeps the item's length in words):

- ``shuffled``: the answer's own words in a random order (same words, no syntax);
- ``junk``: words drawn from the unigram distribution of all the answers pooled (same vocabulary and
  word frequencies, no content), a cheap stand-in for same-perplexity junk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..stats import rng, t_mean_ci

if TYPE_CHECKING:
    from .base import Item, Judge, Rubric

Degradation = Literal["shuffled", "junk"]
DEGRADATIONS: tuple[Degradation, ...] = ("shuffled", "junk")


def degrade(texts: Sequence[str], kind: Degradation, *, seed: int = 0) -> list[str]:
    """Degraded copies of ``texts`` (same number of words each): ``shuffled`` or ``junk`` words.

    Same seed, same texts: same output. A text without words (empty, whitespace) is returned as it is.
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; allowed: {', '.join(DEGRADATIONS)}")
    gen = rng(seed, "degrade", kind)
    words = [t.split() for t in texts]
    if kind == "shuffled":
        out = []
        for w in words:
            w = list(w)
            gen.shuffle(w)
            out.append(" ".join(w))
        return [o if o else t for o, t in zip(out, texts, strict=True)]  # no words: nothing to degrade
    pool = [x for w in words for x in w]
    if not pool:
        return ["" for _ in texts]
    return [" ".join(pool[i] for i in gen.integers(0, len(pool), size=len(w))) if w else t
            for w, t in zip(words, texts, strict=True)]


@dataclass
class NoiseReward:
    """How much more trait a judge gives degraded text than the real text it came from.

    Attributes:
        real: Mean judged score of the real texts (valid ratings only).
        degraded: Per degradation: mean judged score of the degraded texts.
        reward: Per degradation: paired mean (degraded - real) with its Student-t CI, ``(mean, lo, hi)``.
        n: Items with a valid rating for both the real and the degraded text, per degradation.
        invalid: Ratings the judge could not give (real and degraded), counted, never imputed.
    """

    real: float
    degraded: dict[str, float] = field(default_factory=dict)
    reward: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    invalid: int = 0

    @property
    def worst(self) -> tuple[str, tuple[float, float, float]]:
        """The degradation the judge rewards most (by the CI's lower end) and its reward."""
        finite = {k: v for k, v in self.reward.items() if not math.isnan(v[1])}
        if not finite:
            return "", (math.nan, math.nan, math.nan)
        k = max(finite, key=lambda x: finite[x][1])
        return k, finite[k]

    @property
    def rewards_noise(self) -> bool:
        """True when some degradation scores significantly higher than the real text (CI above 0)."""
        return self.worst[1][1] > 0


def noise_reward(judge: Judge, items: Sequence[Item], rubric: Rubric, *, seed: int = 0,
                 kinds: Sequence[Degradation] = DEGRADATIONS, alpha: float = 0.05) -> NoiseReward:
    """Rate ``items`` and their degraded copies with ``judge``; the paired noise reward per degradation.

    Args:
        judge: The judge under test (its ratings are cached like any other).
        items: Real answers with their question/target context, as the audit rates them.
        rubric: The rubric of the effect being qualified.
        seed: Seed of the degradations.
        kinds: Degradations to apply.
        alpha: Family-wise error of the intervals: each degradation's is a two-sided Student-t interval
            at ``1 - alpha / len(kinds)`` (a percentile bootstrap over a handful of items covers far
            less than it claims; measured: 11-15% false flags per degradation at n = 8), so a judge
            that does not reward noise is flagged in at most about ``alpha / 2`` of runs.
    """
    real = _values(judge.rate(list(items), rubric))
    out = NoiseReward(real=float(np.nanmean(real)) if np.isfinite(real).any() else math.nan,
                      invalid=int((~np.isfinite(real)).sum()))
    texts = [i.text for i in items]
    for kind in kinds:
        deg = degrade(texts, kind, seed=seed)
        vals = _values(judge.rate([i.model_copy(update={"text": t}) for i, t in zip(items, deg, strict=True)], rubric))
        out.invalid += int((~np.isfinite(vals)).sum())
        ok = np.isfinite(real) & np.isfinite(vals)
        out.n[kind] = int(ok.sum())
        out.degraded[kind] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        d = vals[ok] - real[ok]
        if ok.sum() < 2:
            out.reward[kind] = (math.nan, math.nan, math.nan)
        elif np.all(d == d[0]):  # no spread: the interval is the value itself
            out.reward[kind] = (float(d[0]), float(d[0]), float(d[0]))
        else:
            out.reward[kind] = t_mean_ci(d, alpha=alpha / max(1, len(kinds)))
    return out


def _values(ratings: Sequence[object]) -> np.ndarray:
    return np.array([r.value if getattr(r, "valid", False) and r.value is not None else np.nan  # type: ignore[attr-defined]
                     for r in ratings], dtype=float)


__all__ = ["DEGRADATIONS", "NoiseReward", "degrade", "noise_reward"]
