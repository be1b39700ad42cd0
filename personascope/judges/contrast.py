"""Contrast judge: how much likelier the text is when the model is told to show the property.

``score = mean log p(text | system_pos) - mean log p(text | system_neg)`` per response token,
with the item's question as the user turn. It uses a model's language modelling rather than its
instruction following, so it still works where a small model cannot answer a rubric question:
measured on the shipped trait set with the embedded 135M model, AUC 0.82 against 0.47 for the
rubric question (see ``personascope judge-check``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..records import stable_hash
from .base import Item, Judge, JudgeIdentity, Rating, Rubric

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter


class ContrastJudge(Judge):
    """Log-prob judge that compares the text's likelihood under two contrasting system prompts.

    The value maps the log-likelihood ratio ``d`` (nats per token) onto the rubric's scale with a
    logistic curve, ``sigmoid((d - center) / temperature)``: 50 (or 0.5) means ``d == center``.
    Rubrics need a ``contrast`` pair. `log_ratios` gives the raw ``d``; `calibrated` returns the
    judge whose curve puts the medians of labelled anchor texts at chosen points (the zero point of
    ``d`` differs between rubrics, so an uncalibrated 50 is not "no trait").

    Args:
        model: The judge model (any adapter from `personascope.load_model`).
        temperature: Nats per token that move the value from 50% to 73%.
        batch_size: Prompts per forward pass.
        center: The ``d`` that maps to the middle of the scale (0: no preference).
    """

    @property
    def check_sets(self) -> dict[str, Rubric]:
        """Shipped judge-check sets whose rubric has contrast prompts (leaks are left to rules)."""
        from .rubrics import REFUSAL, TRAIT

        return {"refusal": REFUSAL, "trait": TRAIT}

    def __init__(self, model: ModelAdapter, *, temperature: float = 0.25, batch_size: int = 16,
                 center: float = 0.0, progress: bool = False) -> None:
        self.model = model
        self.temperature = temperature
        self.batch_size = batch_size
        self.center = center
        self.progress = progress  # a bar per rating call (not part of the identity: it changes no rating)

    @property
    def identity(self) -> JudgeIdentity:
        """Judge identity (model fingerprint, temperature)."""
        return JudgeIdentity(
            kind="logprob:contrast",
            name=self.model.info.id,
            model_fingerprint=self.model.info.fingerprint,
            prompt_hash=stable_hash({"temperature": self.temperature} if self.center == 0.0 else
                                    {"temperature": self.temperature, "center": self.center})[:16],
        )

    def can_rate(self, rubric: Rubric) -> bool:
        """Only rubrics with contrast prompts on a numeric or yes-no scale."""
        return rubric.contrast is not None and rubric.scale in ("0-100", "yes-no", "1-5")

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        ident = self.identity
        if not self.can_rate(rubric):
            err = f"rubric {rubric.name!r} has no contrast prompts; ContrastJudge cannot rate it"
            return [Rating(value=None, valid=False, rubric=rubric.name, judge=ident, error=err) for _ in items]
        assert rubric.contrast is not None  # can_rate checked it
        pos_t, neg_t = rubric.contrast
        out: list[Rating] = [Rating(value=None, valid=False, rubric=rubric.name, judge=ident,
                                    error="empty text: nothing to rate") for _ in items]
        # An empty answer has no tokens to score: an invalid rating, counted by the audit, not a crash.
        todo = [i for i, it in enumerate(items) if it.text]
        if not todo:
            return out
        texts = [items[i].text for i in todo]
        questions = [items[i].question or "Say something." for i in todo]
        pos = [self.model.format_chat(user=q, system=pos_t.format(target=items[i].target or ""))
               for q, i in zip(questions, todo, strict=True)]
        neg = [self.model.format_chat(user=q, system=neg_t.format(target=items[i].target or ""))
               for q, i in zip(questions, todo, strict=True)]
        lp = self.model.logprobs(pos + neg, texts + texts, reduce="mean", batch_size=self.batch_size,
                                 progress=self.progress)
        n = len(todo)
        for k, i in enumerate(todo):
            d = float(lp[k] - lp[n + k])
            if not math.isfinite(d):
                out[i] = Rating(value=None, valid=False, rubric=rubric.name, judge=ident,
                                error=f"log-likelihood ratio is {d}")
                continue
            out[i] = Rating(value=self.value_of(d, rubric.scale), valid=True, rubric=rubric.name, judge=ident,
                            raw=f"log-likelihood ratio {d:+.3f} nats/token")
        return out

    def value_of(self, d: float, scale: str = "0-100") -> float:
        """The rating of a log-likelihood ratio ``d`` on ``scale`` (``0-100``, ``yes-no`` or ``1-5``)."""
        z = max(min((d - self.center) / self.temperature, 60.0), -60.0)  # exp overflows past ~709
        p = 1.0 / (1.0 + math.exp(-z))
        return {"0-100": 100 * p, "yes-no": p, "1-5": 1 + 4 * p}[scale]

    def log_ratios(self, items: Sequence[Item | str], rubric: Rubric) -> list[float | None]:
        """The raw log-likelihood ratio ``d`` (nats per token) of each item; None where invalid.

        Goes through the rating cache (as a unit-temperature, uncentred judge on the yes-no scale,
        from which ``d`` is recovered exactly), so a resumed run does not score the texts again.
        """
        unit = ContrastJudge(self.model, temperature=1.0, batch_size=self.batch_size)
        got = unit.rate(items, rubric.model_copy(update={"scale": "yes-no"}))
        out: list[float | None] = []
        for r in got:
            if not r.valid or r.value is None:
                out.append(None)
                continue
            p = min(max(float(r.value), 1e-15), 1 - 1e-15)
            out.append(math.log(p / (1 - p)))
        return out

    def calibrated(self, d_high: Sequence[float], d_low: Sequence[float], *,
                   p_high: float = 0.875) -> ContrastJudge | None:
        """A copy of the judge whose curve maps the anchor medians to ``p_high`` and ``1 - p_high``.

        ``d_high`` and ``d_low`` are `log_ratios` of texts known to show / not show the property. On
        a 1-5 scale the default puts the median high anchor at 4.5 and the median low anchor at 1.5.
        Returns None when the anchors do not separate (median high <= median low): the judge cannot
        rate this rubric, and calibrating would only hide that.
        """
        if not len(d_high) or not len(d_low):
            return None
        mh, ml = float(np.median(d_high)), float(np.median(d_low))
        if not mh > ml:
            return None
        x = math.log(p_high / (1 - p_high))
        return ContrastJudge(self.model, temperature=(mh - ml) / (2 * x), batch_size=self.batch_size,
                             center=(mh + ml) / 2)

    def __repr__(self) -> str:
        return f"ContrastJudge({self.model.info.short})"

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (scikit-learn style)."""
        return {"temperature": self.temperature, "batch_size": self.batch_size, "center": self.center}
