"""Per-layer separability of labelled activations with scikit-learn pipelines.

The first, small piece of the probes stage: cross-validated probe accuracy per layer against
chance and a shuffled-label control, plus the between/within-class variance ratio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits


def linear_probe(seed: int = 0, C: float = 0.1) -> Any:
    """Standardize + multinomial logistic regression: the default persona probe."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


def fisher_ratio(x: np.ndarray, y: np.ndarray) -> float:
    """Between-class over within-class variance (trace ratio); larger means better separated."""
    mu = x.mean(0)
    between = within = 0.0
    for c in np.unique(y):
        xc = x[y == c]
        between += len(xc) * float(((xc.mean(0) - mu) ** 2).sum())
        within += float(((xc - xc.mean(0)) ** 2).sum())
    return between / max(within, 1e-12)


def layer_separability(
    acts: np.ndarray, labels: np.ndarray, layers: list[int], *, folds: int = 5, seed: int = 0
) -> list[dict[str, float]]:
    """Cross-validated probe accuracy per layer, with chance level and a shuffled-label control.

    Args:
        acts: ``[n, n_layers, d]`` activations.
        labels: ``[n]`` class labels.
        layers: Layer index of each column of ``acts``.
        folds: Stratified folds.
        seed: Seed for fold splits, label shuffling and the probe.

    Returns:
        One dict per layer: layer, accuracy, control_accuracy, selectivity, chance, fisher.

    """
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    y_shuffled = rng.permutation(y)
    _, counts = np.unique(y, return_counts=True)
    chance = float(counts.max() / counts.sum())
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = []
    # Small dense problems: multi-threaded BLAS only adds contention. Measured on 2 cores with
    # 320 x 576 inputs: 30-50x faster with one thread.
    with threadpool_limits(limits=1):
        for j, layer in enumerate(layers):
            rows.append(_one_layer(acts[:, j], y, y_shuffled, int(layer), chance, cv, seed))
    return rows


def _one_layer(
    x: np.ndarray, y: np.ndarray, y_shuffled: np.ndarray, layer: int, chance: float, cv: Any, seed: int
) -> dict[str, float]:
    x = x.astype(np.float64)
    acc = float(cross_val_score(linear_probe(seed), x, y, cv=cv).mean())
    ctl = float(cross_val_score(linear_probe(seed), x, y_shuffled, cv=cv).mean())
    return {
        "layer": layer, "accuracy": acc, "control_accuracy": ctl,
        "selectivity": acc - ctl, "chance": chance, "fisher": fisher_ratio(x, y),
    }

