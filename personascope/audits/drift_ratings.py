"""Ratings of the out-of-character drift audit: every atom, reply and anchor sentence, rated per trait.

Atoms and anchors are rated alike, without the question that prompted them, so equal sentences
share one rating. The contrast judge's raw log-likelihood ratios are centred and scaled per trait
on the hand-written anchor sentences (medians of the high and low anchors map to `ANCHOR_HIGH` and
`ANCHOR_LOW`); any other judge rates on its own 1-5 scale. The anchors measure the judge either
way (AUC of high over low anchors, with a bootstrap interval).

`AuditRater` rates any text exactly as the audit rated its atoms (the trait's rubric, the trait's
calibration), so that the judge's noise reward (`personascope.judges.controls.noise_reward`) is
measured in the same 1-5 points as the ratings behind ACC_atom and the judged drift.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..judges.base import Item, Judge, Rating
from ..stats import auc_ci, derive_seed
from .drift_metrics import SCALE_MAX, SCALE_MIN, split_atoms

if TYPE_CHECKING:
    from ..judges.base import Rubric
    from ..records import JudgeIdentity
    from .drift_data import Persona

# Anchor medians are mapped to these ratings by the contrast-judge calibration.
ANCHOR_LOW, ANCHOR_HIGH = 1.5, 4.5


class AuditRater(Judge):
    """Rates items as `rate_all` rated the audit's atoms: per trait (``item.meta["trait"]``), calibrated or not.

    The ``rubric`` passed to `rate` is ignored: each item is rated on its own trait's rubric, and a
    calibrated contrast judge goes through `ContrastJudge.log_ratios` and the trait's calibration, so
    real texts come from the rating cache and degraded ones land on the audit's 1-5 scale.

    Args:
        judge: The run's judge.
        rubrics: The 1-5 rubric per trait.
        targets: The rubric target (trait description) per trait, as the audit's items carry it.
        calibrations: Per trait, the calibrated contrast judge, or None where the anchors did not separate
            (raw contrast ratings, as in `rate_all`); empty when the judge is not calibrated.
        calibrate: Whether the audit calibrated the contrast judge.
    """

    cacheable = False  # the wrapped judge caches; a second layer would only duplicate it

    def __init__(self, judge: Judge, rubrics: Mapping[str, Rubric], targets: Mapping[str, str],
                 calibrations: Mapping[str, Judge | None], calibrate: bool) -> None:
        self.judge = judge
        self.rubrics = dict(rubrics)
        self.targets = dict(targets)
        self.calibrations = dict(calibrations)
        self.calibrate = calibrate

    @property
    def identity(self) -> JudgeIdentity:
        """The wrapped judge's identity."""
        return self.judge.identity

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        ident = self.identity
        out: list[Rating] = [Rating(value=None, valid=False, rubric=rubric.name, judge=ident,
                                    error="item has no known trait") for _ in items]
        by_trait: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            if it.meta.get("trait") in self.rubrics:
                by_trait.setdefault(it.meta["trait"], []).append(i)
        for trait, idx in by_trait.items():
            # The audit's own items: same text and target, no question and no meta (same cache keys).
            plain = [Item(text=items[i].text, target=self.targets[trait]) for i in idx]
            rub = self.rubrics[trait]
            if self.calibrate:
                rater = self.calibrations.get(trait) or self.judge
                for i, d in zip(idx, self.judge.log_ratios(plain, rub), strict=True):  # type: ignore[attr-defined]
                    out[i] = (Rating(value=None, valid=False, rubric=rub.name, judge=ident, error="invalid ratio")
                              if d is None else
                              Rating(value=rater.value_of(d, "1-5"), rubric=rub.name, judge=ident))  # type: ignore[attr-defined]
            else:
                for i, r in zip(idx, self.judge.rate(plain, rub), strict=True):
                    out[i] = r
        return out


@dataclass
class Rated:
    """What the noise control needs from `rate_all`: the rated texts and a rater that rates like the audit.

    Attributes:
        texts: ``key -> (trait, text)`` for every rated atom and reply (anchors left out).
        rater: Rates new texts as the audit rated these.
    """

    texts: dict[Any, tuple[str, str]] = field(default_factory=dict)
    rater: AuditRater | None = None

    def sample(self, ratings: Mapping[Any, float], n: int, gen: np.random.Generator) -> list[Item]:
        """Up to ``n`` distinct rated texts with a valid rating, drawn at random, as items for `AuditRater`.

        Atoms, unprompted-assistant atoms and conversation replies are drawn alike, in proportion to
        how many distinct texts of each the audit rated.
        """
        pool = sorted({self.texts[k] for k in self.texts if k in ratings})
        pick = gen.permutation(len(pool))[:n] if pool else np.zeros(0, dtype=int)
        return [Item(text=pool[i][1], meta={"trait": pool[i][0]}) for i in sorted(pick)]


def rate_all(judge: Judge, data: dict[str, Any], personas: Sequence[Persona], traits: Sequence[str],
             rubrics: Mapping[str, Rubric], cells: Mapping[tuple[str, str], list[str]],
             base_cells: Mapping[tuple[str, str], list[str]], responses: Mapping[tuple[str, int], str],
             convs: Sequence[dict[str, Any]], *, runs: int, min_words: int, calibrate: bool,
             seed: int = 0) -> tuple[dict[Any, Any], dict[str, Any], Rated]:
    """Rate every atom, baseline atom, conversation reply and anchor sentence with ``judge``, one call per trait.

    Args:
        judge: The run's judge (a `ContrastJudge` when ``calibrate``).
        data: `personascope.audits.drift_data.load_data`.
        personas: The audited personas.
        traits: Traits of those personas (one rubric and one judge call each).
        rubrics: The 1-5 rubric per trait.
        cells: ``(persona, task) -> prompts``; responses are keyed ``("p|persona|task|i", run)``.
        base_cells: ``(trait, task) -> prompts`` of the unprompted assistant; keys ``("b|trait|task|i", run)``.
        responses: Generated texts.
        convs: Conversations (a rating per reply).
        runs: Runs per prompt.
        min_words: Shortest sentence kept as an atom.
        calibrate: Centre and scale the contrast judge's log-likelihood ratios per trait on the anchors.
        seed: Seed of the anchor-AUC bootstraps.

    Returns:
        ``(ratings, info, rated)``: the valid ratings keyed ``("p", persona, task, run, prompt, atom)``,
        ``("b", trait, task, run, prompt, atom)`` or ``("c", conversation, turn)``; the judge's
        details (anchor AUC per trait, calibration, ``n_valid`` and ``n_total``, ``n_texts`` = distinct
        texts rated); and the rated texts with a rater that rates like this (`Rated`).
    """
    by_name = {p.name: p for p in personas}
    todo: dict[str, list[tuple[Any, Item]]] = {t: [] for t in traits}
    desc = {t: data["bigfive"]["traits"][t]["description"] for t in traits}
    for (pname, task), prompts in cells.items():
        trait = by_name[pname].trait
        for r in range(runs):
            for i in range(len(prompts)):
                for j, a in enumerate(split_atoms(responses[(f"p|{pname}|{task}|{i}", r)], min_words)):
                    todo[trait].append((("p", pname, task, r, i, j), Item(text=a, target=desc[trait])))
    for (trait, task), prompts in base_cells.items():
        for r in range(runs):
            for i in range(len(prompts)):
                for j, a in enumerate(split_atoms(responses[(f"b|{trait}|{task}|{i}", r)], min_words)):
                    todo[trait].append((("b", trait, task, r, i, j), Item(text=a, target=desc[trait])))
    for ci, c in enumerate(convs):
        for t, reply in enumerate(c["replies"]):
            # One rating per reply: the per-turn drift curve needs a value, not an atom profile.
            if len(re.findall(r"\w+", reply)) >= min_words:
                todo[c["trait"]].append((("c", ci, t), Item(text=reply.strip(), target=desc[c["trait"]])))
    for trait in traits:
        for level in ("high", "low"):
            for j, a in enumerate(data["bigfive"]["traits"][trait]["anchors"][level]):
                todo[trait].append((("a", trait, level, j), Item(text=a, target=desc[trait])))
    ratings: dict[Any, float] = {}
    valid = total = n_texts = 0
    info: dict[str, Any] = {"anchors": {}, "calibration": {}}
    cals: dict[str, Judge | None] = {}
    for trait in traits:
        keys = [k for k, _ in todo[trait]]
        # Atoms are rated without their question (as the anchors are), so equal texts rate once.
        uniq = sorted({it.text for _, it in todo[trait]})
        n_texts += len(uniq)
        items = [Item(text=t, target=desc[trait]) for t in uniq]
        if calibrate:
            # The contrast judge's raw log-likelihood ratios, centred and scaled per trait on the anchors.
            ratios = judge.log_ratios(items, rubrics[trait])  # type: ignore[attr-defined]
            d_of = {t: v for t, v in zip(uniq, ratios, strict=True) if v is not None}
            d = {k: d_of[it.text] for k, it in todo[trait] if it.text in d_of}
            anchors = {lv: [d[k] for k in keys if k[0] == "a" and k[2] == lv and k in d] for lv in ("high", "low")}
            cal = judge.calibrated(anchors["high"], anchors["low"],  # type: ignore[attr-defined]
                                   p_high=(ANCHOR_HIGH - SCALE_MIN) / (SCALE_MAX - SCALE_MIN))
            cals[trait] = cal
            if cal is None:
                info["calibration"][trait] = {"ok": False, "note": "anchors do not separate; raw ratings used"}
            else:
                info["calibration"][trait] = {"ok": True, "center": round(cal.center, 5),
                                              "scale": round(cal.temperature, 5)}
            scorer: Any = cal or judge  # a calibrated contrast judge, or the judge's own scale
            raw = {k: scorer.value_of(v, "1-5") for k, v in d.items()}
        else:
            got = judge.rate(items, rubrics[trait])
            by_text = {t: float(rt.value) for t, rt in zip(uniq, got, strict=True)
                       if rt.valid and rt.value is not None and not math.isnan(rt.value)}
            raw = {k: by_text[it.text] for k, it in todo[trait] if it.text in by_text}
        hi_s = [raw[k] for k in keys if k[0] == "a" and k[2] == "high" and k in raw]
        lo_s = [raw[k] for k in keys if k[0] == "a" and k[2] == "low" and k in raw]
        info["anchors"][trait] = {"auc": auc_ci(hi_s, lo_s, seed=derive_seed(seed, "anchor_auc", trait)),
                                  "n": len(hi_s) + len(lo_s)}
        for k in keys:
            if k[0] == "a":
                continue
            total += 1
            if k in raw:
                valid += 1
                ratings[k] = raw[k]
    info["calibration_note"] = (
        "rating = 1 + 4 * sigmoid((d - center) / scale), d = log-likelihood ratio per token; medians of the "
        f"high / low anchors map to {ANCHOR_HIGH} / {ANCHOR_LOW}" if calibrate else "judge ratings used as given")
    info["n_valid"], info["n_total"], info["n_texts"] = valid, total, n_texts
    rated = Rated(texts={k: (t, it.text) for t in traits for k, it in todo[t] if k[0] != "a"},
                  rater=AuditRater(judge, rubrics, desc, cals, calibrate))
    return ratings, info, rated


__all__ = ["ANCHOR_HIGH", "ANCHOR_LOW", "AuditRater", "Rated", "rate_all"]
