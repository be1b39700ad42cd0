"""Small, exact statistics shared by the audits (numpy + scipy; no torch).

Every effect in a report carries an interval: Wilson for rates, bootstrap for means, Fisher z
for correlations, exact McNemar for paired accuracy differences, Holm for many comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k/n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def bootstrap_mean_ci(
    values: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of ``values`` (NaNs dropped); NaNs if empty."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    return float(x.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def pearson_ci(x: Sequence[float], y: Sequence[float], z: float = 1.96) -> tuple[float, float, float, int]:
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


def linear_slope(y: Sequence[float]) -> float:
    """Least-squares slope of ``y`` against 0, 1, 2, ... (NaN with fewer than two points)."""
    v = np.asarray(y, dtype=float)
    ok = ~np.isnan(v)
    if ok.sum() < 2:
        return math.nan
    x = np.arange(v.size, dtype=float)[ok]
    return float(np.polyfit(x, v[ok], 1)[0])
