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
from typing import TYPE_CHECKING

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
