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

from ..records import stable_hash
from .base import Item, Judge, JudgeIdentity, Rating, Rubric

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter


class ContrastJudge(Judge):
    """Log-prob judge that compares the text's likelihood under two contrasting system prompts.

    The value maps the log-likelihood ratio ``d`` (nats per token) onto the rubric's scale with a
    logistic curve, ``sigmoid(d / temperature)``: 50 (or 0.5) means no preference. Rubrics need a
    ``contrast`` pair.

    Args:
        model: The judge model (any adapter from `personascope.load_model`).
        temperature: Nats per token that move the value from 50% to 73%.
        batch_size: Prompts per forward pass.
    """

    @property
    def check_sets(self) -> dict[str, Rubric]:
        """Shipped judge-check sets whose rubric has contrast prompts (leaks are left to rules)."""
        from .rubrics import REFUSAL, TRAIT

        return {"refusal": REFUSAL, "trait": TRAIT}

    def __init__(self, model: ModelAdapter, *, temperature: float = 0.25, batch_size: int = 16) -> None:
        self.model = model
        self.temperature = temperature
        self.batch_size = batch_size

    @property
    def identity(self) -> JudgeIdentity:
        """Judge identity (model fingerprint, temperature)."""
        return JudgeIdentity(
            kind="logprob:contrast",
            name=self.model.info.id,
            model_fingerprint=self.model.info.fingerprint,
            prompt_hash=stable_hash({"temperature": self.temperature})[:16],
        )

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        ident = self.identity
        if rubric.contrast is None or rubric.scale not in ("0-100", "yes-no", "1-5"):
            err = f"rubric {rubric.name!r} has no contrast prompts; ContrastJudge cannot rate it"
            return [Rating(value=None, valid=False, rubric=rubric.name, judge=ident, error=err) for _ in items]
        pos_t, neg_t = rubric.contrast
        texts = [it.text for it in items]
        questions = [it.question or "Say something." for it in items]
        pos = [self.model.format_chat(user=q, system=pos_t.format(target=it.target or ""))
               for q, it in zip(questions, items, strict=True)]
        neg = [self.model.format_chat(user=q, system=neg_t.format(target=it.target or ""))
               for q, it in zip(questions, items, strict=True)]
        lp = self.model.logprobs(pos + neg, texts + texts, reduce="mean", batch_size=self.batch_size)
        n = len(items)
        out = []
        for i in range(n):
            d = float(lp[i] - lp[n + i])
            p = 1.0 / (1.0 + math.exp(-d / self.temperature))
            value = {"0-100": 100 * p, "yes-no": p, "1-5": 1 + 4 * p}[rubric.scale]
            out.append(Rating(value=value, valid=True, rubric=rubric.name, judge=ident,
                              raw=f"log-likelihood ratio {d:+.3f} nats/token"))
        return out

    def __repr__(self) -> str:
        return f"ContrastJudge({self.model.info.short})"

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (scikit-learn style)."""
        return {"temperature": self.temperature, "batch_size": self.batch_size}
