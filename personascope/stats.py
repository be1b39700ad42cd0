"""The statistics every audit shares: intervals, tests, AUROC and seeded randomness (numpy + scipy; no torch).

Every effect in a report carries an interval: Wilson for rates, a percentile bootstrap for means and
differences (vectorised), Fisher z for correlations, exact McNemar for paired accuracy differences,
Holm for many comparisons. Random choices draw from generators derived from the audit's seed and a
*named key* (`rng`), so adding a new random step never shifts the numbers of an existing one and the
user's global RNGs are never touched.

Intervals are ``(point, low, high)`` triples; NaN where undefined (`finite` turns NaN into None for
JSON).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .records import finite

#: A vector of numbers: a sequence or a numpy array.
Floats = Sequence[float] | np.ndarray
#: A vector of integers (or booleans): a sequence or a numpy array.
Ints = Sequence[int] | np.ndarray

CI = tuple[float, float, float]
NAN3: CI = (math.nan, math.nan, math.nan)


# ====================================================================== seeding
def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed derived from ``seed`` and named ``keys`` (same inputs, same seed, on every platform).

    Python's ``hash()`` of a string changes between processes; this uses SHA-256 of the JSON of
    ``[seed, *keys]``, so ``derive_seed(0, "conv", 3)`` is the same everywhere.
    """
    blob = json.dumps([int(seed), *keys], sort_keys=True, default=str, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big") >> 1


def rng(seed: int, *keys: Any) -> np.random.Generator:
    """A numpy generator seeded from ``seed`` and named ``keys`` (no key: ``default_rng(seed)``)."""
    return np.random.default_rng(derive_seed(seed, *keys) if keys else seed)


# ====================================================================== small helpers
def _clean(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    x = np.asarray([math.nan if v is None else v for v in np.asarray(values, dtype=object).ravel()], dtype=float)
    return x[~np.isnan(x)]


def _quantiles(boots: np.ndarray, alpha: float, axis: int = 0) -> tuple[Any, Any]:
    return np.quantile(boots, alpha / 2, axis=axis), np.quantile(boots, 1 - alpha / 2, axis=axis)


# ====================================================================== rates and correlations
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k/n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def rate_ci(k: int, n: int) -> CI:
    """``(k/n, wilson low, wilson high)``; NaNs when ``n == 0``."""
    if n <= 0:
        return NAN3
    lo, hi = wilson(k, n)
    return k / n, lo, hi


def pearson_ci(x: Floats, y: Floats, z: float = 1.96) -> tuple[float, float, float, int]:
    """Pearson r with a Fisher-z interval: ``(r, lo, hi, n)``; NaNs when undefined."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n < 3 or a.std() == 0 or b.std() == 0:
        return math.nan, math.nan, math.nan, n
    r = float(np.corrcoef(a, b)[0, 1])
    r = max(min(r, 1 - 1e-12), -1 + 1e-12)
    if n <= 3:
        return r, -1.0, 1.0, n
    fz, se = math.atanh(r), 1 / math.sqrt(n - 3)
    return r, math.tanh(fz - z * se), math.tanh(fz + z * se), n


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``."""
    from scipy.stats import binomtest

    n = b + c
    if n == 0:
        return 1.0
    return float(binomtest(min(b, c), n, 0.5, alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as the input)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def linear_slope(y: Floats | Sequence[float | None]) -> float:
    """Least-squares slope of ``y`` against 0, 1, 2, ... (NaN with fewer than two points)."""
    v = np.asarray(y, dtype=float)
    ok = ~np.isnan(v)
    if ok.sum() < 2:
        return math.nan
    x = np.arange(v.size, dtype=float)[ok]
    return float(np.polyfit(x, v[ok], 1)[0])


# ====================================================================== bootstrap
def bootstrap_mean_ci(
    values: Sequence[float | None] | np.ndarray, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> CI:
    """Mean and percentile-bootstrap interval of ``values`` (None/NaN dropped); NaNs if empty."""
    x = _clean(values)
    if x.size == 0:
        return NAN3
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    means = x[rng(seed).integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = _quantiles(means, alpha)
    return float(x.mean()), float(lo), float(hi)


def bootstrap_columns(
    x: np.ndarray, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means of ``x [n, ...]`` and percentile intervals, resampling rows (paired across columns).

    The same resampled rows serve every column, so the band around a curve (one column per layer,
    say) is a joint band over the items.
    """
    a = np.asarray(x, dtype=float)
    idx = rng(seed).integers(0, a.shape[0], size=(n_boot, a.shape[0]))
    means = a[idx].mean(axis=1)  # [n_boot, ...]
    lo, hi = _quantiles(means, alpha)
    return a.mean(axis=0), lo, hi


def bootstrap_diff(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, paired: bool, n_boot: int = 2000,
    alpha: float = 0.05, seed: int = 0,
) -> CI:
    """Mean of ``a`` minus mean of ``b`` with a bootstrap interval (paired: ``a - b`` per item)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        return bootstrap_mean_ci(x - y, n_boot=n_boot, alpha=alpha, seed=seed)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size == 0 or y.size == 0:
        return NAN3
    g = rng(seed)
    boots = (x[g.integers(0, x.size, (n_boot, x.size))].mean(1) - y[g.integers(0, y.size, (n_boot, y.size))].mean(1))
    lo, hi = _quantiles(boots, alpha)
    return float(x.mean() - y.mean()), float(lo), float(hi)


def bootstrap_stat(
    fn: Callable[[np.ndarray], float], n_units: int, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> CI:
    """``fn(all unit indices)`` and a percentile interval of ``fn(resampled unit indices)``; NaN draws skipped.

    For statistics that are not a mean of per-unit values (a variance across personas, a
    consistency over prompts): ``fn`` gets an index array and computes the statistic on those units.
    """
    full = float(fn(np.arange(n_units)))
    if n_units < 2:
        return full, full, full
    g = rng(seed)
    vals = np.array([fn(g.integers(0, n_units, n_units)) for _ in range(n_boot)], dtype=float)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return full, math.nan, math.nan
    lo, hi = _quantiles(vals, alpha)
    return full, float(lo), float(hi)


# ====================================================================== nulls
def empirical_p(effect: float, null: Sequence[float] | np.ndarray, *, two_sided: bool = True) -> float:
    """Permutation-style p-value of ``effect`` against ``null`` draws: ``(1 + #{null at least as extreme}) / (K + 1)``.

    Two-sided compares magnitudes; one-sided asks how often a null draw is at least ``effect``. The
    +1 keeps the p-value honest with few draws: with K draws it can never be below ``1 / (K + 1)``.
    NaN when there is no null draw or no effect.
    """
    x = np.asarray(null, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0 or effect is None or math.isnan(effect):
        return math.nan
    hits = int((np.abs(x) >= abs(effect)).sum()) if two_sided else int((x >= effect).sum())
    return (1 + hits) / (1 + x.size)


def null_summary(effect: float, null: Sequence[float] | np.ndarray, *, two_sided: bool = False) -> dict[str, float]:
    """Where ``effect`` falls in a null distribution (random directions, permutations, degraded text).

    Returns ``percentile`` (share of null draws below the effect, ties half: about uniform on [0, 1]
    when the effect is itself a null draw), ``z`` (effect minus the null mean over the null SD),
    ``p`` (`empirical_p`, one-sided unless ``two_sided``), the null's ``mean``, ``sd``, 95th percentile
    ``q95`` and ``k`` (number of finite draws). NaNs where undefined.
    """
    x = np.asarray(null, dtype=float)
    x = x[np.isfinite(x)]
    nan = math.nan
    if x.size == 0 or effect is None or not math.isfinite(effect):
        return {"percentile": nan, "z": nan, "p": nan, "mean": nan, "sd": nan, "q95": nan, "k": float(x.size)}
    sd = float(x.std(ddof=1)) if x.size > 1 else nan
    pct = float(((x < effect).sum() + 0.5 * (x == effect).sum()) / x.size)
    return {"percentile": pct, "z": (effect - float(x.mean())) / sd if sd and math.isfinite(sd) and sd > 0 else nan,
            "p": empirical_p(effect, x, two_sided=two_sided), "mean": float(x.mean()), "sd": sd,
            "q95": float(np.quantile(x, 0.95)), "k": float(x.size)}


def permutation_r_p(x: Floats, y: Floats, *, n_perm: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """Pearson r of ``x`` and ``y`` with its two-sided permutation p-value (pairs with NaN dropped).

    The null shuffles ``y`` against ``x``: what r would be with no relation, at this n and these
    marginals (a few extreme points can make a Fisher-z interval optimistic; the permutation cannot).
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return math.nan, math.nan
    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    r = float((a * b).mean())
    gen = rng(seed, "permutation_r")
    perms = np.array([float((a * b[gen.permutation(b.size)]).mean()) for _ in range(n_perm)])
    return r, empirical_p(r, perms, two_sided=True)


def t_mean_ci(values: Sequence[float] | np.ndarray, alpha: float = 0.05) -> CI:
    """Mean and Student-t interval of ``values`` (NaN dropped); NaNs below two values.

    The controls decide on a handful of conversations (4 in the quick profile), where a percentile
    bootstrap of the mean covers far less than 95% (about 80% at n = 4); the t interval keeps its
    coverage for roughly normal values such as per-conversation slopes or paired score differences.
    """
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return (float(x.mean()) if x.size else math.nan), math.nan, math.nan
    m, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))
    q = float(student_t.ppf(1 - alpha / 2, x.size - 1))
    return m, m - q * se, m + q * se


def welch_diff_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, alpha: float = 0.05) -> CI:
    """Mean of ``a`` minus mean of ``b`` with a Welch t interval (NaN dropped); NaNs below two values each.

    The unpaired companion of `t_mean_ci`, for a few conversations per group (a bootstrap of two
    small groups covers far less than it claims).
    """
    from scipy.stats import t as student_t

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size < 2 or y.size < 2:
        d = float(x.mean() - y.mean()) if x.size and y.size else math.nan
        return d, math.nan, math.nan
    vx, vy = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    d, se = float(x.mean() - y.mean()), math.sqrt(vx + vy)
    if se == 0:
        return d, d, d
    dof = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    q = float(student_t.ppf(1 - alpha / 2, dof))
    return d, d - q * se, d + q * se


# ====================================================================== binomial power
def poisson_binomial_pmf(probs: Sequence[float] | np.ndarray) -> np.ndarray:
    """Distribution of the number of successes of independent Bernoulli trials with success ``probs``.

    Returns ``pmf[s] = P(S = s)`` for ``s = 0 .. len(probs)`` (exact, by convolution).
    """
    pmf = np.ones(1)
    for p in np.asarray(probs, dtype=float):
        pmf = np.convolve(pmf, [1.0 - p, p])
    return pmf


def negative_control_limit(k: int, alpha: float, level: float = 0.05) -> int:
    """Most controls that may be flagged at ``alpha`` (each raw, leave-one-out) before the null is rejected.

    The smallest ``q`` with ``P(Binomial(k, alpha) > q) <= level``: a clean model fails the
    negative control at most ``level`` of the time (less, since the leave-one-out gaps of controls
    sum to zero and so vary less than independent ones).
    """
    from scipy.stats import binom

    if k <= 0:
        return 0
    return int(binom.ppf(1 - level, k, alpha))


def binom_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)`` (1 for ``k <= 0``)."""
    from scipy.stats import binom

    if k <= 0:
        return 1.0
    return float(binom.sf(k - 1, n, min(max(p, 0.0), 1.0)))


def min_detectable_rate(n: int, chance: float, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest true rate the one-sided exact binomial test against ``chance`` detects with ``power``.

    The test rejects at the smallest count ``k*`` with ``P(X >= k* | chance) <= alpha``; the MDE is
    the rate ``p`` with ``P(X >= k* | p) = power`` (bisection; the power rises with ``p``).

    Returns:
        The minimum detectable rate, or None when no rate can be detected (``n == 0``, or even
        ``k* = n`` is not significant).
    """
    if n <= 0 or math.isnan(chance):
        return None
    from scipy.stats import binom

    tails = binom.sf(np.arange(n + 1) - 1, n, min(max(chance, 0.0), 1.0))  # P(X >= k), k = 0..n
    ok = np.flatnonzero(tails <= alpha)
    if not ok.size:
        return None
    k_star = int(ok[0])
    lo, hi = min(max(chance, 0.0), 1.0), 1.0
    if binom_sf(k_star, n, hi) < power:
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binom_sf(k_star, n, mid) < power else (lo, mid)
    return hi


# ====================================================================== AUROC
def auroc(scores: Floats, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half); NaN for one class.

    Rank-based (Mann-Whitney U with average ranks): the same number as
    ``sklearn.metrics.roc_auc_score`` in O(n log n) time and O(n) memory, without sklearn's per-call
    overhead (bootstraps call it a thousand times).
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    ok = ~np.isnan(s)
    s, y = s[ok], y[ok]
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc(pos: Floats, neg: Floats) -> float:
    """AUROC of ``pos`` scored above ``neg`` (Mann-Whitney; ties count half); NaN when either is empty."""
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if p.size == 0 or n.size == 0:
        return math.nan
    return auroc(np.concatenate([p, n]), np.r_[np.ones(p.size, bool), np.zeros(n.size, bool)])


def auc_ci(pos: Floats, neg: Floats, *, seed: int = 0, n_boot: int = 1000,
           alpha: float = 0.05) -> CI:
    """AUROC with a stratified percentile-bootstrap interval (positives and negatives resampled apart)."""
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    point = auc(p, n)
    if math.isnan(point):
        return NAN3
    g = rng(seed)
    boots = np.array([auc(p[g.integers(0, p.size, p.size)], n[g.integers(0, n.size, n.size)])
                      for _ in range(n_boot)])
    boots = boots[~np.isnan(boots)]
    lo, hi = _quantiles(boots, alpha)
    return point, float(lo), float(hi)


__all__ = ["CI", "NAN3", "auc", "auc_ci", "auroc", "bootstrap_columns", "bootstrap_diff", "bootstrap_mean_ci",
           "bootstrap_stat", "derive_seed", "empirical_p", "finite", "holm", "linear_slope", "mcnemar_exact",
           "binom_sf", "min_detectable_rate", "negative_control_limit", "null_summary", "pearson_ci",
           "poisson_binomial_pmf", "permutation_r_p", "rate_ci", "rng", "t_mean_ci", "welch_diff_ci", "wilson"]
