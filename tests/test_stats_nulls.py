"""Null distributions: random-direction percentiles are uniform for a null effect and extreme for a planted one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kstest

from personascope.stats import null_summary, permutation_r_p


def _unit(gen: np.random.Generator, k: int, d: int) -> np.ndarray:
    u = gen.standard_normal((k, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def test_random_direction_percentile_is_uniform_for_a_random_vector() -> None:
    # A "shift" m projected on a random trait direction vs on K random directions of the same norm.
    gen = np.random.default_rng(0)
    d, k = 64, 32
    pcts = []
    for _ in range(400):
        m = gen.standard_normal(d) * gen.uniform(0.5, 3)
        trait = _unit(gen, 1, d)[0]
        null = _unit(gen, k, d) @ m
        pcts.append(null_summary(float(trait @ m), null)["percentile"])
    assert kstest(pcts, "uniform").pvalue > 0.01
    assert 0.4 < float(np.mean(pcts)) < 0.6


def test_random_direction_percentile_is_extreme_for_a_planted_direction() -> None:
    gen = np.random.default_rng(1)
    d, k = 64, 200
    trait = _unit(gen, 1, d)[0]
    for _ in range(20):
        m = gen.standard_normal(d) + 4.0 * trait * math.sqrt(d) / 4  # planted: a strong move along the trait
        s = null_summary(float(trait @ m), _unit(gen, k, d) @ m)
        assert s["percentile"] > 0.99 and s["z"] > 3 and s["p"] <= 1 / (k + 1) + 1e-12


def test_null_summary_handles_empty_and_nan() -> None:
    s = null_summary(1.0, [math.nan])
    assert math.isnan(s["percentile"]) and s["k"] == 0
    s = null_summary(math.nan, [1.0, 2.0])
    assert math.isnan(s["z"])
    s = null_summary(2.0, [1.0, 2.0, 3.0])
    assert s["percentile"] == 0.5 and s["q95"] > 2.8


def test_permutation_r_planted_and_null() -> None:
    gen = np.random.default_rng(2)
    x = gen.standard_normal(40)
    r, p = permutation_r_p(x, x + 0.5 * gen.standard_normal(40), n_perm=500, seed=0)
    assert r > 0.7 and p <= 2 / 501
    ps = [permutation_r_p(gen.standard_normal(30), gen.standard_normal(30), n_perm=200, seed=i)[1] for i in range(60)]
    assert 0.3 < float(np.mean(ps)) < 0.7  # uniform p under the null
    assert sum(p < 0.05 for p in ps) <= 8
    assert all(math.isnan(v) for v in permutation_r_p([1, 1, 1], [1, 2, 3]))


def test_welch_diff_ci_matches_scipy_and_covers() -> None:
    import numpy as np
    from scipy import stats as sps

    from personascope.stats import welch_diff_ci

    g = np.random.default_rng(0)
    a, b = g.normal(1.0, 1.0, 6), g.normal(0.0, 2.0, 4)
    d, lo, hi = welch_diff_ci(a, b)
    res = sps.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert d == pytest.approx(a.mean() - b.mean()) and lo == pytest.approx(ci.low) and hi == pytest.approx(ci.high)
    # Null: two samples of one distribution, the interval holds 0 in about 95% of draws (n = 4 and 6).
    draws = [welch_diff_ci(g.normal(0, 1, 4), g.normal(0, 1, 6)) for _ in range(400)]
    hits = sum(lo <= 0 <= hi for _, lo, hi in draws)
    assert 0.92 <= hits / 400 <= 0.98
