"""``judge-check``: how well a judge agrees with the small labelled sets shipped in the package.

Audits record this agreement next to their numbers, and reports say when a judge is weak. The
sets are clear cases by design, so agreement here is an upper bound on real-world quality.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ..records import finite, now_iso
from ..stats import auroc, wilson
from .base import Item, Judge, JudgeIdentity, Rubric
from .rubrics import LEAK, REFUSAL, TRAIT, TRAIT_DESCRIPTIONS

CHECK_SETS = ("refusal", "trait", "leak")
# Value above which a rating counts as "positive" for accuracy, per rubric scale.
THRESHOLDS = {"0-100": 50.0, "1-5": 3.0, "yes-no": 0.5, "label": 0.5}


class SetAgreement(BaseModel):
    """Agreement of one judge with one labelled set."""

    set: str
    rubric: str
    n: int
    n_valid: int
    accuracy: float | None  # on valid ratings, at the scale's midpoint threshold
    accuracy_ci: tuple[float, float] | None
    balanced_accuracy: float | None
    auc: float | None  # ranking quality of the raw values; 0.5 is chance
    mean_valid_mass: float | None
    first_error: str | None = None  # of the first invalid rating, so "0 valid" comes with a reason


class JudgeCheckResult(BaseModel):
    """Agreement of one judge over the shipped sets."""

    judge: JudgeIdentity
    created: str
    sets: list[SetAgreement]

    @property
    def unusable(self) -> bool:
        """True when the judge gave no valid rating at all (a broken server, key or configuration)."""
        return bool(self.sets) and all(s.n_valid == 0 for s in self.sets)

    @property
    def first_error(self) -> str | None:
        """The first invalid rating's error over the sets, or None."""
        return next((s.first_error for s in self.sets if s.first_error), None)

    @property
    def weak(self) -> bool:
        """True when any set's AUC is below 0.75 or a third of its ratings are invalid."""
        return any(
            (s.auc is None or s.auc < 0.75) or s.n_valid < 2 * s.n / 3 for s in self.sets
        )


def check_set_path(name: str) -> Path:
    """Path of a shipped labelled set."""
    return Path(str(resources.files("personascope") / "data" / "judge_check" / f"{name}.jsonl"))


def load_check_set(name: str) -> tuple[list[Item], list[int], Rubric]:
    """Items, labels and the model-judge rubric of a shipped set."""
    if name not in CHECK_SETS:
        raise ValueError(f"Unknown check set {name!r}; allowed: {', '.join(CHECK_SETS)}")
    recs = [json.loads(line) for line in check_set_path(name).read_text().splitlines() if line.strip()]
    if name == "trait":
        items = [Item(text=r["text"], question=r["question"], target=TRAIT_DESCRIPTIONS[r["trait"]],
                      meta={"trait": r["trait"]}) for r in recs]
        rubric = TRAIT
    elif name == "refusal":
        items = [Item(text=r["text"], question=r["question"]) for r in recs]
        rubric = REFUSAL
    else:
        items = [Item(text=r["text"], target=r["target"], meta={"attribute": r["attribute"]}) for r in recs]
        rubric = LEAK
    return items, [int(r["label"]) for r in recs], rubric


def auc_score(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (ties count half, `personascope.stats.auroc`); None if one class is missing."""
    return finite(auroc(scores, [int(v) == 1 for v in labels]))


def agreement(
    name: str, rubric: Rubric, values: Sequence[float | None], labels: Sequence[int],
    masses: Sequence[float | None], first_error: str | None = None,
) -> SetAgreement:
    """Agreement statistics of ratings against labels (``first_error``: of the first invalid rating)."""
    ok = [i for i, v in enumerate(values) if v is not None]
    thr = THRESHOLDS[rubric.scale]
    pred = [int(values[i] >= thr) for i in ok]  # type: ignore[operator]
    y = [labels[i] for i in ok]
    k = sum(int(p == t) for p, t in zip(pred, y, strict=True))
    recalls = [
        np.mean([p == c for p, t in zip(pred, y, strict=True) if t == c]) for c in (0, 1) if c in y
    ]
    ms = [m for m in masses if m is not None]
    return SetAgreement(
        set=name, rubric=rubric.name, n=len(values), n_valid=len(ok),
        accuracy=k / len(ok) if ok else None, accuracy_ci=wilson(k, len(ok)) if ok else None,
        balanced_accuracy=float(np.mean(recalls)) if recalls else None,
        auc=auc_score([values[i] for i in ok], y) if ok else None,  # type: ignore[misc]
        mean_valid_mass=float(np.mean(ms)) if ms else None, first_error=first_error,
    )


def judge_check(
    judge: Judge, sets: Sequence[str] = CHECK_SETS, *, rubrics: dict[str, Rubric] | None = None,
    cache: bool = True,
) -> JudgeCheckResult:
    """Run ``judge`` on the shipped sets and measure agreement.

    Args:
        judge: Any judge; rule judges are checked only on the sets they declare in
            ``check_sets`` (a class attribute mapping set name to the rubric they use).
        sets: Which sets to run.
        rubrics: Override the rubric per set.
        cache: Use the judgement cache.
    """
    own: dict[str, Rubric] = getattr(judge, "check_sets", None) or {}
    results = []
    for name in sets:
        items, labels, rubric = load_check_set(name)
        if own:
            if name not in own:
                continue
            rubric = own[name]
        rubric = (rubrics or {}).get(name, rubric)
        ratings = judge.rate(items, rubric, cache=cache)
        # An invalid rating with a non-finite value is treated as invalid, whatever its flag says.
        values = [r.value if r.valid and r.value is not None and np.isfinite(r.value) else None
                  for r in ratings]
        first = next((r.error or "invalid rating (no error given)" for r, v in zip(ratings, values, strict=True)
                      if v is None), None)
        results.append(agreement(name, rubric, values, labels, [r.valid_mass for r in ratings], first))
    return JudgeCheckResult(judge=judge.identity, created=now_iso(), sets=results)


def format_check(result: JudgeCheckResult) -> str:
    """Plain-text table of a check result."""
    j = result.judge
    lines = [f"judge {j.kind} {j.name} {('@' + j.model_fingerprint[:12]) if j.model_fingerprint else ''}",
             "set       rubric     valid    accuracy (95% CI)      bal.acc   AUC    mass"]
    for s in result.sets:
        ci = s.accuracy_ci or (float("nan"), float("nan"))
        acc = "-" if s.accuracy is None else f"{s.accuracy:.3f} ({ci[0]:.2f}-{ci[1]:.2f})"
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"{s.set:<9} {s.rubric:<10} {s.n_valid:>3}/{s.n:<4} {acc:<22} {fmt(s.balanced_accuracy):<9}"
                     f" {fmt(s.auc):<6} {fmt(s.mean_valid_mass)}")
    if result.unusable:
        lines.append(f"NO VALID RATINGS: the judge failed on every item; first error: {result.first_error}")
    elif result.weak:
        lines.append("WEAK JUDGE: AUC < 0.75 or many invalid ratings on clear cases; treat its scores as noisy.")
    return "\n".join(lines)
