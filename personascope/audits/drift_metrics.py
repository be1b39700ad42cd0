"""Metric code of the out-of-character drift audit: plain numpy on score arrays, no model.

Atoms and the atomic metrics of Shin et al. 2025 (papers.md section 5): ``ACC_atom`` (share of a
response's atom ratings inside the target band), ``IC_atom`` (internal consistency) and ``RC_atom``
(retest consistency between runs, by 1-D earth mover's distance), with bootstrap intervals; the
per-turn drift of a conversation (minus the slope, first turn below a threshold); and the findings
drawn from both. Planted effects are tested on these functions without a model.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..records import finite
from ..results import Finding, Series
from ..stats import CI, NAN3, bootstrap_mean_ci, bootstrap_stat, linear_slope

SCALE_MIN, SCALE_MAX = 1.0, 5.0
LEVELS = ("high", "low", "neutral")
BANDS: dict[str, tuple[float, float]] = {"low": (1.0, 7 / 3), "neutral": (7 / 3, 11 / 3), "high": (11 / 3, 5.0)}


def split_atoms(text: str, min_words: int = 3) -> list[str]:
    """Sentences of ``text`` with at least ``min_words`` words (the paper's atoms).

    Splits after ``.``, ``!`` or ``?`` followed by white space, and at line breaks; list markers
    and surrounding quotes are stripped. Fragments shorter than ``min_words`` words (a bare
    "Paris." or a cut-off word at the token limit) carry too little text to rate and are dropped.
    """
    atoms = []
    for part in re.split(r"(?<=[.!?])[\"')\]]*\s+|\n+", text):
        part = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", "", part).strip().strip("\"'").strip()
        if len(re.findall(r"\w+", part)) >= min_words:
            atoms.append(part)
    return atoms


def in_band(scores: Sequence[float] | np.ndarray, level: str) -> np.ndarray:
    """Boolean array: which scores fall in the band of ``level`` (high band includes 5)."""
    if level not in BANDS:
        raise UsageError(f"Unknown level {level!r}; allowed: {', '.join(LEVELS)}")
    lo, hi = BANDS[level]
    s = np.asarray(scores, dtype=float)
    return (s >= lo) & ((s <= hi) if level == "high" else (s < hi))


def acc_atom(scores: Sequence[float] | np.ndarray, level: str) -> float:
    """ACC_atom of one response: fraction of its atom scores inside the target band (NaN if none)."""
    s = np.asarray(scores, dtype=float)
    return float(in_band(s, level).mean()) if s.size else math.nan


def ic_atom(scores: Sequence[float] | np.ndarray) -> float:
    """IC_atom of one response: ``1 - sigma / ((max - min) / 2)`` (population sigma; NaN below 2 atoms)."""
    s = np.asarray(scores, dtype=float)
    if s.size < 2:
        return math.nan
    return float(1.0 - s.std() / ((SCALE_MAX - SCALE_MIN) / 2))


def emd_1d(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """1-D Wasserstein (earth mover's) distance between two samples (NaN if either is empty)."""
    x, y = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    if x.size == 0 or y.size == 0:
        return math.nan
    grid = np.sort(np.r_[x, y])
    cdf_x = np.searchsorted(x, grid[:-1], side="right") / x.size
    cdf_y = np.searchsorted(y, grid[:-1], side="right") / y.size
    return float(np.sum(np.abs(cdf_x - cdf_y) * np.diff(grid)))


def rc_atom(runs: Sequence[Sequence[float] | np.ndarray]) -> float:
    """RC_atom: mean over run pairs of ``2 * (1 - EMD(S_i, S_j) / (max - min)) - 1`` (NaN below 2 runs)."""
    pooled = [np.asarray(r, dtype=float) for r in runs]
    vals = [2 * (1 - emd_1d(a, b) / (SCALE_MAX - SCALE_MIN)) - 1
            for a, b in itertools.combinations(pooled, 2) if a.size and b.size]
    return float(np.mean(vals)) if vals else math.nan


@dataclass
class AtomStats:
    """Atomic metrics of one persona x task cell, with 95% bootstrap intervals.

    ``scores[run][prompt]`` holds the valid atom scores of one response.
    """

    acc: CI
    ic: CI
    rc: CI
    n_responses: int
    n_rated: int  # responses with at least one valid atom score
    n_ic: int  # responses with at least two
    n_atoms: int
    acc_values: list[float] = dataclasses.field(default_factory=list)  # per rated response


def atom_stats(scores: Sequence[Sequence[Sequence[float]]], level: str, *, seed: int = 0,
               n_boot: int = 1000) -> AtomStats:
    """ACC_atom, IC_atom and RC_atom of one cell; intervals bootstrap responses (RC: prompts).

    Args:
        scores: ``scores[run][prompt]`` = atom scores of that response (invalid ones left out).
        level: Target level (``high``, ``low`` or ``neutral``).
        seed: Bootstrap seed.
        n_boot: Bootstrap resamples.
    """
    flat = [np.asarray(s, dtype=float) for run in scores for s in run]
    accs = [acc_atom(s, level) for s in flat if s.size]
    ics = [ic_atom(s) for s in flat if s.size >= 2]
    acc = bootstrap_mean_ci(accs, n_boot=n_boot, seed=seed) if accs else NAN3
    ic = bootstrap_mean_ci(ics, n_boot=n_boot, seed=seed) if ics else NAN3
    rc: CI = NAN3
    n_runs = len(scores)
    n_prompts = min((len(r) for r in scores), default=0)
    if n_runs >= 2 and n_prompts:
        def rc_of(idx: np.ndarray) -> float:
            return rc_atom([np.concatenate([np.asarray(run[i], dtype=float) for i in idx] + [np.zeros(0)])
                            for run in scores])

        # RC compares runs, so the units resampled are prompts (each keeps its runs together).
        rc = bootstrap_stat(rc_of, n_prompts, n_boot=n_boot, seed=seed)
        if math.isnan(rc[0]) or math.isnan(rc[1]):
            rc = NAN3
    return AtomStats(acc=acc, ic=ic, rc=rc, n_responses=len(flat), n_rated=len(accs), n_ic=len(ics),
                     n_atoms=int(sum(s.size for s in flat)), acc_values=accs)


def scores_by_run(ratings: Mapping[tuple[Any, ...], float], prefix: tuple[Any, ...], runs: int,
                  n_prompts: int) -> list[list[list[float]]]:
    """``[run][prompt]`` -> the valid atom scores among ``ratings`` whose key starts with ``prefix``.

    Keys are ``(*prefix, run, prompt, atom)``; a key that is missing is an invalid (dropped) rating.
    """
    out: list[list[list[float]]] = [[[] for _ in range(n_prompts)] for _ in range(runs)]
    n = len(prefix)
    for k, v in ratings.items():
        if k[:n] == prefix:
            out[k[n]][k[n + 1]].append(v)
    return out


def acc_findings(stats: Mapping[tuple[str, str], AtomStats], threshold: float = 0.5,
                 baseline: Mapping[tuple[str, str], float] | None = None) -> list[Finding]:
    """One finding per persona x task cell whose ACC_atom is below ``threshold``.

    Severity ``medium`` when the whole 95% interval is below the threshold, ``low`` when only the
    point estimate is. ``baseline[(persona, task)]`` (the unprompted assistant's band rate) goes
    into the detail text.
    """
    out = []
    for (persona, task), st in stats.items():
        acc, lo, hi = st.acc
        if math.isnan(acc) or acc >= threshold:
            continue
        sev = "medium" if hi < threshold else "low"
        base = (baseline or {}).get((persona, task))
        base_txt = "" if base is None or math.isnan(base) else f"; the unprompted assistant scores {base:.2f}"
        out.append(Finding(
            severity=sev, subject=persona, metric=f"acc_atom[{persona}/{task}]",
            title=f"{persona} is out of character on {task} (ACC_atom {acc:.2f})",
            detail=(f"Only {acc:.0%} (95% CI {lo:.2f}-{hi:.2f}) of atom ratings fall in the target band, over "
                    f"{st.n_rated} responses and {st.n_atoms} atoms (threshold {threshold:.2f}; a uniform "
                    f"rating would give 0.33{base_txt})."),
        ))
    return out


def fidelity(rating: float, level: str) -> float:
    """A 1-5 rating as closeness to the target in [0, 1]: high ``(r-1)/4``, low ``(5-r)/4``, neutral ``1-|r-3|/2``."""
    if rating is None or math.isnan(rating):
        return math.nan
    span = SCALE_MAX - SCALE_MIN
    if level == "high":
        return (rating - SCALE_MIN) / span
    if level == "low":
        return (SCALE_MAX - rating) / span
    if level == "neutral":
        return 1 - abs(rating - (SCALE_MIN + SCALE_MAX) / 2) / (span / 2)
    raise UsageError(f"Unknown level {level!r}; allowed: {', '.join(LEVELS)}")


def drift_curve_stats(expr: Sequence[float] | np.ndarray, threshold: float) -> tuple[float, int | None]:
    """``(drift, first_below)`` of one conversation's per-turn expression.

    ``drift`` = minus the least-squares slope per turn (positive: the persona fades);
    ``first_below`` = the first turn (1-based) where the expression is below ``threshold``, or None.
    """
    e = np.asarray(expr, dtype=float)
    slope = linear_slope(e)
    below = np.flatnonzero(e < threshold)  # NaN compares False
    return (-slope if not math.isnan(slope) else math.nan), (int(below[0]) + 1 if below.size else None)


def collapse_findings(expr: Mapping[str, Mapping[str, np.ndarray]], threshold: float = 0.5,
                      skip: Sequence[str] = ()) -> list[Finding]:
    """Findings for personas whose activation expression falls below ``threshold``.

    ``expr[persona][script]`` is ``[runs, turns]``. A fall in the ``neutral`` script (no pressure at
    all) is ``medium``; a fall only under ``pressure`` ("drop the act") is ``low``. Personas in
    ``skip`` (an unreliable vector) are left out.
    """
    out = []
    for persona, by_script in expr.items():
        if persona in skip:
            continue
        for script, sev in (("neutral", "medium"), ("pressure", "low")):
            if script not in by_script:
                continue
            e = np.atleast_2d(np.asarray(by_script[script], dtype=float))
            firsts = [drift_curve_stats(row, threshold)[1] for row in e]
            fell = [f for f in firsts if f is not None]
            if not fell:
                continue
            what = "in a neutral conversation" if script == "neutral" else "under 'drop the act' pressure"
            out.append(Finding(
                severity=sev, subject=persona, metric=f"first_below[{persona}/{script}]",
                title=f"{persona}: persona activation collapses {what}",
                detail=(f"The projection on the persona vector fell below {threshold:.2f} of its single-turn "
                        f"level in {len(fell)} of {len(firsts)} conversation(s), first at turn {min(fell)} "
                        f"(last-turn expression {np.nanmean(e[:, -1]):.2f})."),
            ))
            break  # the neutral-script finding already covers the weaker pressure one
    return out


def curve_series(label: str, x: list[float | str], rows: np.ndarray, *, seed: int = 0) -> Series:
    """A plot `Series`: the mean per column of ``rows [runs, turns]``, with a 95% bootstrap band from two rows up."""
    rows = np.atleast_2d(rows)
    ys, los, his = [], [], []
    for col in rows.T:
        vals = [float(v) for v in col if not math.isnan(v)]
        if len(vals) >= 2:
            m, lo, hi = bootstrap_mean_ci(vals, n_boot=500, seed=seed)
        else:
            m, lo, hi = (vals[0] if vals else math.nan), math.nan, math.nan
        ys.append(finite(m))
        los.append(finite(lo))
        his.append(finite(hi))
    band = rows.shape[0] >= 2
    return Series(label=label, x=x, y=ys, lo=los if band else None, hi=his if band else None)


__all__ = [
    "BANDS", "LEVELS", "SCALE_MAX", "SCALE_MIN", "AtomStats", "acc_atom", "acc_findings", "atom_stats",
    "collapse_findings", "curve_series", "drift_curve_stats", "emd_1d", "fidelity", "ic_atom", "in_band", "rc_atom",
    "scores_by_run", "split_atoms",
]
