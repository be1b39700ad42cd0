"""Monitoring and data flagging by projection on a persona vector (persona-vectors paper, §2).

- `monitor`: projection of the last prompt token (and, given responses, the response average) on
  the unit vector; it predicts how strongly the coming response will show the trait.
- `flag_dataset`: the "projection difference" of training samples: for each (prompt, response)
  pair, the response-averaged activation of the dataset's response minus that of the model's own
  response to the same prompt, projected on the unit vector. Large values mean the sample would
  push the model along the trait; the dataset mean is the dataset-level score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..sites import Position
from ..store import collect
from .extract import project
from .vector import PersonaVector

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter


def monitor(
    model: ModelAdapter,
    prompts: Sequence[str],
    vector: PersonaVector,
    layer: int,
    *,
    responses: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Projection scores per prompt: ``{"last": [...]}`` plus ``"response_mean"`` with responses."""
    vector.check_model(model, force=True)
    positions = [Position.LAST] + ([Position.RESPONSE_MEAN] if responses is not None else [])
    sets = collect(model, list(prompts), model.sites([layer]), positions, responses=responses,
                   batch_size=batch_size, progress=progress)
    return {p.value: project(sets[p], vector, layer) for p in positions}


@dataclass
class FlagResult:
    """Per-sample projection differences, ranked, and the dataset score."""

    scores: np.ndarray  # per sample, in input order
    order: np.ndarray  # indices, highest score first
    dataset_score: float
    own_responses: list[str]

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` samples that push hardest along the vector: ``(index, score)``."""
        return [(int(i), float(self.scores[i])) for i in self.order[:k]]


def flag_dataset(
    model: ModelAdapter,
    prompts: Sequence[str],
    responses: Sequence[str],
    vector: PersonaVector,
    layer: int,
    *,
    max_new_tokens: int = 64,
    batch_size: int | None = None,
    progress: bool = False,
) -> FlagResult:
    """Rank (prompt, response) training samples by projection difference against the model's own answers.

    ``prompts`` are chat-formatted prompts; the model's own greedy responses to them are the
    baseline ``y'`` of the paper's formula ``dP = mean_i (a(x_i, y_i) - a(x_i, y'_i)) . v_hat``.
    """
    vector.check_model(model, force=True)
    own = model.generate(list(prompts), max_new_tokens, batch_size=batch_size, progress=progress)
    # A model that ends its turn at once gives "": use a single space so the average has a token.
    own = [o if o else " " for o in own]
    sites = model.sites([layer])
    data = collect(model, list(prompts), sites, [Position.RESPONSE_MEAN], responses=list(responses),
                   batch_size=batch_size, progress=progress)[Position.RESPONSE_MEAN]
    base = collect(model, list(prompts), sites, [Position.RESPONSE_MEAN], responses=own,
                   batch_size=batch_size, progress=progress)[Position.RESPONSE_MEAN]
    scores = project(data, vector, layer) - project(base, vector, layer)
    return FlagResult(scores, np.argsort(-scores, kind="stable"), float(scores.mean()), own)


@dataclass
class MonitorCorrelation:
    """Projection of the last prompt token vs the judged trait of the response, across system prompts."""

    conditions: list[str]  # per sample: "pos", "neg" or "none"
    projection: np.ndarray
    trait: np.ndarray
    r: tuple[float, float, float, int]  # Pearson r with 95% CI and n (per sample)
    gap: tuple[float, float, float]  # mean projection, positive minus negative prompts, with bootstrap CI
    responses: list[str]

    def condition_means(self) -> dict[str, tuple[float, float]]:
        """Mean projection and mean trait score per condition."""
        out = {}
        for c in dict.fromkeys(self.conditions):
            m = np.array([x == c for x in self.conditions])
            out[c] = (float(self.projection[m].mean()), float(np.nanmean(self.trait[m])))
        return out


def monitor_correlation(
    model: ModelAdapter,
    trait: Any,
    vector: PersonaVector,
    layer: int,
    *,
    judge: Any,
    n_questions: int = 6,
    n_instructions: int = 3,
    max_new_tokens: int = 40,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> MonitorCorrelation:
    """Correlation of the pre-answer projection with the judged trait of the answer, across system prompts.

    Prompts are the trait's evaluation questions under each positive and negative instruction and
    under no system prompt; the projection is read at the last prompt token (before any response
    token exists), the trait of the greedy answer is rated by ``judge``. The paper reports
    r = 0.75-0.83 on 7-8B models.
    """
    from ..judges.base import Item
    from ..judges.rubrics import TRAIT
    from ..stats import bootstrap_diff, pearson_ci
    from ..store import generate
    from .traits import load_trait

    spec = load_trait(trait) if isinstance(trait, str) else trait
    questions = list((spec.evaluation_questions + spec.extraction_questions)[:n_questions])
    prompts, conds, qs = [], [], []
    for pos_i, neg_i in spec.instructions[:n_instructions]:
        for cond, system in (("pos", pos_i), ("neg", neg_i)):
            for q in questions:
                prompts.append(model.format_chat(user=q, system=system))
                conds.append(cond)
                qs.append(q)
    for q in questions:
        prompts.append(model.format_chat(user=q))
        conds.append("none")
        qs.append(q)
    proj = monitor(model, prompts, vector, layer, batch_size=batch_size)["last"]
    texts = generate(model, prompts, max_new_tokens, batch_size=batch_size, progress=progress)
    ratings = judge.rate([Item(text=t, question=q, target=spec.description) for t, q in zip(texts, qs, strict=True)],
                         TRAIT)
    score = np.array([r.value if r.valid and r.value is not None else np.nan for r in ratings], dtype=float)
    c = np.array(conds)
    gap = bootstrap_diff(proj[c == "pos"], proj[c == "neg"], paired=False, n_boot=2000, seed=seed)
    return MonitorCorrelation(conds, proj, score, pearson_ci(proj, score), gap, texts)
