"""Per-layer measures of how well labelled activations separate, and how classes overlap.

NumPy and scikit-learn only (no torch), so reports and tests can use them on plain arrays.
Every function takes one layer's ``X [n, d]`` and labels ``y [n]`` unless it says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, silhouette_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import UsageError
from ..stats import bootstrap_columns, rng

__all__ = [
    "best_layer_set",
    "bootstrap_ci",
    "centroid_cosine_matrix",
    "cka_matrix",
    "cohens_d",
    "cv_accuracy",
    "cv_predict",
    "fisher_ratio",
    "jaccard_matrix",
    "lexical_probe",
    "linear_cka",
    "localized_band",
    "mean_centroid_distance",
    "normalized_confusion",
    "paired_diff_ci",
    "permutation_null",
    "selection_adjusted_p",
    "silhouette",
    "top_units",
]


def linear_probe(seed: int = 0, C: float = 0.1) -> Any:
    """Standardize + multinomial logistic regression: the default persona probe (a scikit-learn pipeline)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


def lexical_probe(seed: int = 0, C: float = 10.0) -> Any:
    """TF-IDF unigrams + multinomial logistic regression: the bag-of-words baseline (a pipeline over raw texts).

    What the statements' words alone predict. Sublinear term frequency and rows scaled to unit
    length; ``C=10`` was the best of 0.1/1/10/100 on the built-in persona set (n 24 and 60 per
    persona), so the baseline is a strong one and activations must earn their margin over it.
    """
    return make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 1)),
                         LogisticRegression(C=C, max_iter=2000, random_state=seed))


def _splitter(y: np.ndarray, folds: int, seed: int) -> StratifiedKFold:
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise UsageError(f"Cross-validation needs at least two classes, got {list(classes)}")
    if folds < 2:
        raise UsageError(f"folds must be >= 2, got {folds}")
    if counts.min() < folds:
        raise UsageError(
            f"The smallest class has {counts.min()} items but folds={folds}; "
            "use fewer folds or more items per class"
        )
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def cv_predict(
    X: Any, y: np.ndarray, estimator: Any, folds: int = 5, seed: int = 0, strata: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of a stratified k-fold, and the fold of each item.

    Args:
        X: ``[n, d]`` features (or ``[n]`` texts for a text pipeline such as `lexical_probe`).
        y: ``[n]`` labels.
        estimator: An unfitted scikit-learn estimator or pipeline (cloned for every fold).
        folds: Number of stratified folds.
        seed: Seed of the fold shuffle.
        strata: ``[n]`` labels to stratify the folds on instead of ``y``. The folds depend only on
            ``strata`` and ``seed``, so probes of different features (activations, words) or of
            shuffled labels all see the same folds when given the same strata.

    Returns:
        ``(pred [n], fold [n])``: each item's prediction by the model that did not see it.

    """
    y = np.asarray(y)
    s = y if strata is None else np.asarray(strata)
    if len(s) != len(y):
        raise UsageError(f"strata has {len(s)} entries for {len(y)} labels")
    cv = _splitter(s, folds, seed)
    pred = np.empty(len(y), dtype=y.dtype)
    fold = np.empty(len(y), dtype=np.int64)
    X = X if hasattr(X, "shape") else np.asarray(X, dtype=object)
    for k, (train, test) in enumerate(cv.split(np.zeros(len(y)), s)):
        model = clone(estimator).fit(X[train], y[train])
        pred[test] = model.predict(X[test])
        fold[test] = k
    return pred, fold


def cv_accuracy(
    X: Any, y: np.ndarray, estimator: Any, folds: int = 5, seed: int = 0, strata: np.ndarray | None = None
) -> tuple[float, list[float]]:
    """Mean stratified k-fold accuracy and the accuracy of each fold.

    Same splits as `cv_predict` with the same seed and strata, so the two can be mixed.
    """
    y = np.asarray(y)
    pred, fold = cv_predict(X, y, estimator, folds, seed, strata)
    per_fold = [float((pred[fold == k] == y[fold == k]).mean()) for k in range(folds)]
    return float(np.mean(per_fold)), per_fold


def silhouette(X: np.ndarray, y: np.ndarray, metric: str = "cosine") -> float:
    """Mean silhouette coefficient of the labelled classes, in [-1, 1] (sklearn).

    ``metric="cosine"`` (default) compares directions, which suits residual streams whose norm
    grows with depth; ``"euclidean"`` is the textbook choice. No scaling is applied.
    """
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(silhouette_score(X, y, metric=metric))


def fisher_ratio(x: np.ndarray, y: np.ndarray) -> float:
    """Between-class over within-class variance (trace ratio); larger means better separated."""
    mu = x.mean(0)
    between = within = 0.0
    for c in np.unique(y):
        xc = x[y == c]
        between += len(xc) * float(((xc.mean(0) - mu) ** 2).sum())
        within += float(((xc - xc.mean(0)) ** 2).sum())
    return between / max(within, 1e-12)


def _centroids(X: np.ndarray, y: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    return np.stack([X[y == c].mean(0) for c in classes])


def _cosine_rows(M: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    U = M / np.maximum(norms, 1e-12)
    return U @ U.T


def centroid_cosine_matrix(
    X: np.ndarray, y: np.ndarray, classes: Sequence[Any] | None = None, center: np.ndarray | None = None
) -> np.ndarray:
    """Cosine similarity ``[k, k]`` between class centroids, optionally after subtracting ``center``.

    Residual streams share a large common offset, so raw centroid cosines are all near 1; pass
    the mean of a background set as ``center`` to compare each class's *shift* from it instead.
    """
    y = np.asarray(y)
    classes = list(np.unique(y)) if classes is None else list(classes)
    C = _centroids(X.astype(np.float64), y, classes)
    if center is not None:
        C = C - np.asarray(center, dtype=np.float64)
    return _cosine_rows(C)


def mean_centroid_distance(X: np.ndarray, y: np.ndarray) -> float:
    """Mean over class pairs of the cosine distance (1 - cosine) between raw class centroids.

    Uncentered on purpose: centering on the grand mean would make two balanced classes always
    exactly opposite (distance 2), whatever the data.
    """
    S = centroid_cosine_matrix(X, y)
    k = len(S)
    if k < 2:
        return float("nan")
    iu = np.triu_indices(k, 1)
    return float((1.0 - S[iu]).mean())


def _centered_gram(X: np.ndarray) -> np.ndarray:
    Xc = X.astype(np.float64) - X.mean(0, dtype=np.float64)
    return Xc @ Xc.T


def _cka_from_grams(K: np.ndarray, L: np.ndarray) -> float:
    # <K, L>_F = ||Y^T X||_F^2 for centered features (Kornblith et al. 2019, eq. for linear CKA).
    num = float((K * L).sum())
    den = float(np.sqrt((K * K).sum() * (L * L).sum()))
    return num / den if den > 0 else float("nan")


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear centered kernel alignment of two representations of the same ``n`` items.

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centered ``Xc``, ``Yc``
    (Kornblith et al. 2019). It is 1 for identical representations and invariant to orthogonal
    transforms and isotropic scaling; ``X`` and ``Y`` may have different widths.
    """
    if len(X) != len(Y):
        raise UsageError(f"CKA needs the same items in both: {len(X)} vs {len(Y)} rows")
    return _cka_from_grams(_centered_gram(X), _centered_gram(Y))


def cka_matrix(acts: np.ndarray) -> np.ndarray:
    """Linear CKA between every pair of layers of ``acts [n, L, d]``; returns ``[L, L]``."""
    # n x n Gram matrices, each computed once: cheaper than d x d when n < d, and exact either way.
    grams = [_centered_gram(acts[:, j]) for j in range(acts.shape[1])]
    n_l = len(grams)
    out = np.eye(n_l)
    for i in range(n_l):
        for j in range(i + 1, n_l):
            out[i, j] = out[j, i] = _cka_from_grams(grams[i], grams[j])
    return out


def localized_band(scores: Sequence[float], chance: float, frac: float = 0.9) -> tuple[int, int]:
    """The contiguous run of positions around the best score where the score is near its maximum.

    Rule: with ``m = max(scores)`` and threshold ``t = chance + frac * (m - chance)``, start at the
    first argmax and extend left and right while ``score >= t``. Returns inclusive indices
    ``(start, end)`` into ``scores``. If ``m <= chance`` nothing is localized and the band is just
    the argmax. NaN scores never join the band. ``chance`` is the floor the band is measured
    from: chance, or a baseline's accuracy (the bag-of-words probe) to localize what the
    activations add over it.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise UsageError("localized_band needs at least one score")
    if not 0.0 <= frac <= 1.0:
        raise UsageError(f"frac must be in [0, 1], got {frac}")
    best = int(np.nanargmax(s))
    m = s[best]
    if m <= chance:
        return best, best
    threshold = chance + frac * (m - chance)
    start = end = best
    while start > 0 and s[start - 1] >= threshold:
        start -= 1
    while end < len(s) - 1 and s[end + 1] >= threshold:
        end += 1
    return start, end


def bootstrap_ci(
    correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of accuracy, resampling statements (items) with replacement.

    ``correct`` is per-item correctness from out-of-fold predictions (`cv_predict`), ``[n]`` or
    ``[L, n]`` for several layers. The same resampled items are used for every layer, so the band
    is a band around the whole curve. This is the cheap bootstrap: probes are not refit, so it
    measures item sampling noise given the fitted folds, not fold-to-fold training variance.

    Returns:
        ``(low, high)``, each of shape ``correct.shape[:-1]``.

    """
    # Items are the last axis here and the rows of `bootstrap_columns`.
    items_first = np.moveaxis(np.asarray(correct, dtype=np.float64), -1, 0)
    _, low, high = bootstrap_columns(items_first, n_boot=n_boot, alpha=1.0 - level, seed=seed)
    return low, high


def paired_diff_ci(
    correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy difference ``a - b`` on the same items, with a paired percentile bootstrap over items.

    ``correct_a`` and ``correct_b`` are ``[n]`` or ``[L, n]`` (several layers; the two broadcast).
    Items (the last axis) are resampled together, so what the two probes share (an easy statement,
    a hard one) cancels. Like `bootstrap_ci`, probes are not refit.

    Returns:
        ``(diff, low, high)``, each of the broadcast shape without the item axis.

    """
    a, b = np.broadcast_arrays(np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64))
    diff, low, high = bootstrap_columns(np.moveaxis(a - b, -1, 0), n_boot=n_boot, alpha=1.0 - level, seed=seed)
    return diff, low, high


def best_layer_set(acc_ci: Sequence[tuple[float, float]], best: int) -> list[int]:
    """Positions whose accuracy CI overlaps the best position's CI (``high_j >= low_best``), in order.

    The uncertainty of an argmax: any of these could be the best on another sample of statements
    or folds. CI overlap is looser than a paired test on purpose: the item bootstrap does not see
    fold-to-fold training variance, which moves the argmax too.
    """
    lo_best = acc_ci[best][0]
    return [j for j, (_, hi) in enumerate(acc_ci) if hi >= lo_best]


def permutation_null(
    X: Any,
    y: np.ndarray,
    make_probe: Callable[[], Any],
    n_permutations: int,
    folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """CV accuracy of a probe on ``n_permutations`` random permutations of the labels: the no-signal null.

    Each draw reruns the whole procedure on permuted labels, stratified folds included (on the
    permuted labels, or on group x permuted label with ``groups``), so a draw is what the real
    probe would score if the labels carried no information. With ``groups`` the labels are
    permuted within each group: a global permutation would leave some groups (personas) with
    more of one label than the other, and a probe that recognizes the group would score above
    chance on labels that carry no information of their own.

    Returns:
        ``[n_permutations]`` accuracies (mean of the folds, as `cv_accuracy`).

    """
    y = np.asarray(y)
    gen = rng(seed, "permutation_null")
    out = np.empty(n_permutations)
    g = None if groups is None else np.asarray(groups)
    for i in range(n_permutations):
        if g is None:
            yp, strata = gen.permutation(y), None
        else:
            yp = y.copy()
            for name in np.unique(g):
                idx = np.flatnonzero(g == name)
                yp[idx] = y[gen.permutation(idx)]
            strata = _cross(g, yp)
        out[i] = cv_accuracy(X, yp, make_probe(), folds, seed, strata)[0]  # strata None: stratify on yp
    return out


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One label per (a, b) pair, for stratifying on two labels at once."""
    return np.array([f"{u}\x1f{v}" for u, v in zip(a.astype(str), b.astype(str), strict=True)])


def selection_adjusted_p(best: float, null: np.ndarray, n_layers: int, n_items: int, chance: float) -> float:
    """P-value of the best of ``n_layers`` accuracies against a single-layer null, Bonferroni over layers.

    The empirical p of the maximum against draws at one layer ignores that the maximum was chosen
    among ``n_layers``: on pure noise over 12 layers it is at its floor 1/(K+1) half the time. This
    fits a normal to the null (mean at least ``chance``; sd at least the binomial sd of ``n_items``
    statements, since K draws estimate it roughly), takes its upper tail at ``best`` and multiplies
    by ``n_layers`` (capped at 1). Conservative for correlated layers; NaN without null draws.
    """
    x = np.asarray(null, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return float("nan")
    from scipy.stats import norm

    mu = max(chance, float(x.mean()))
    sd = max(float(x.std(ddof=1)), float(np.sqrt(chance * (1.0 - chance) / max(n_items, 1))))
    return float(min(1.0, n_layers * norm.sf((best - mu) / sd)))


def normalized_confusion(y: np.ndarray, pred: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """Confusion matrix ``[k, k]`` with rows (true class) normalized to sum to 1."""
    cm = confusion_matrix(np.asarray(y), np.asarray(pred), labels=list(classes)).astype(np.float64)
    return cm / np.maximum(cm.sum(1, keepdims=True), 1.0)


def cohens_d(X: np.ndarray, X_ref: np.ndarray) -> np.ndarray:
    """Standardized mean difference per unit: (mean(X) - mean(X_ref)) / pooled sd, shape ``[d]``."""
    X = X.astype(np.float64)
    X_ref = X_ref.astype(np.float64)
    n1, n2 = len(X), len(X_ref)
    v1, v2 = X.var(0, ddof=1), X_ref.var(0, ddof=1)
    pooled = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / max(n1 + n2 - 2, 1))
    return (X.mean(0) - X_ref.mean(0)) / np.maximum(pooled, 1e-12)


def top_units(
    X: np.ndarray,
    y: np.ndarray,
    classes: Sequence[Any],
    k: int = 20,
    background: np.ndarray | None = None,
) -> dict[Any, list[int]]:
    """Per class, the ``k`` units with the largest |Cohen's d| against a background set.

    Args:
        X: ``[n, d]`` features.
        y: ``[n]`` labels.
        classes: Classes to rank units for.
        k: Units per class.
        background: ``[m, d]`` reference rows (e.g. neutral statements). Without it each class
            is compared with all rows of the other classes (one-vs-rest).

    Returns:
        ``{class: [unit, ...]}``, most divergent first. Absolute value: a unit that moves either
        way counts as the class's unit.

    """
    y = np.asarray(y)
    out: dict[Any, list[int]] = {}
    for c in classes:
        ref = background if background is not None else X[y != c]
        d = np.abs(cohens_d(X[y == c], ref))
        out[c] = [int(i) for i in np.argsort(-d, kind="stable")[:k]]
    return out


def jaccard_matrix(sets: Mapping[Any, Sequence[int]], classes: Sequence[Any]) -> np.ndarray:
    """Pairwise Jaccard index ``|A & B| / |A | B|`` of the unit sets of ``classes``."""
    ss = [set(sets[c]) for c in classes]
    k = len(ss)
    out = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            union = len(ss[i] | ss[j])
            out[i, j] = out[j, i] = len(ss[i] & ss[j]) / union if union else 0.0
    return out
