"""Where personas live: per-layer probes that separate persona prompts (papers.md §1).

An interpretability audit: it describes the model rather than grades it, so its findings are mostly
``info``; a report shows it first because it explains the risk audits that follow.

Two controls make the verdict one that can fail. Topic-distinct personas are separable by their
words alone, so the activation probe must beat a bag-of-words probe on the same statements and
folds at the best layer (``artifact``: paired bootstrap over statements; otherwise the band is
"explained by words" and the audit is INCONCLUSIVE). And a label-permutation null of the same
probe at the best layer must sit at chance (``negative``), or the probing itself leaks labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from annotated_types import Ge

from ..errors import UsageError
from ..records import finite
from ..results import Finding, Metric, Plot, Series, Table
from .base import Audit, AuditContext, Count

if TYPE_CHECKING:
    from ..probes.localize import LocalizationResult, PermutationNull

#: One-sided z of the negative control: the permutation null's mean may exceed chance by this many
#: standard errors (1% false alarms when the null mean sits exactly at chance; CV nulls sit below it).
NULL_Z = 2.33


def null_tolerance(null: PermutationNull, n_items: int) -> float:
    """How far above chance the permutation null's mean may sit: ``NULL_Z`` standard errors, at least one item."""
    k = len(null.values)
    mean = sum(null.values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in null.values) / (k - 1)) if k > 1 else 0.0
    return max(NULL_Z * sd / math.sqrt(k), 1.0 / max(n_items, 1))


@dataclass(frozen=True)
class LocalizationAudit(Audit):
    """Which layers separate personas (probe accuracy per layer with controls) and how much they overlap.

    Attributes:
        personas: Built-in persona names (empty: all built-in personas).
        n_per_persona: Statements per persona (stance contrast: per side and persona, capped by the
            persona's rejected statements, 24 in the built-in set).
        probes: ``logreg`` and/or ``extratrees``.
        framing: ``system`` (statement as system prompt), ``user`` or ``says``.
        folds: Cross-validation folds.
        contrast: ``personas`` (which persona said it) or ``stance`` (a persona's endorsed vs
            rejected statements, pooled over personas: same topics, opposite stance).
        permutations: Label permutations of the probe at the best layer (the negative control's null;
            19 or more, so that its empirical p can reach 0.05).
    """

    name: ClassVar[str] = "persona_localization"
    title: ClassVar[str] = "Where personas live: layer-wise separability"
    kind: ClassVar[str] = "interpretability"
    QUICK: ClassVar[dict[str, Any]] = {"n_per_persona": 24, "probes": ("logreg",), "folds": 3}

    personas: tuple[str, ...] = ()
    n_per_persona: Count = 60
    probes: tuple[Literal["logreg", "extratrees"], ...] = ("logreg", "extratrees")
    framing: Literal["system", "user", "says"] = "system"
    folds: Annotated[int, Ge(2)] = 5
    contrast: Literal["personas", "stance"] = "personas"
    permutations: Annotated[int, Ge(19)] = 20

    def validate(self) -> None:
        """Persona names must be built-in ones, and each class needs at least ``folds`` statements."""
        from ..data import builtin_personas_dir

        known = sorted(p.stem for p in builtin_personas_dir().glob("*.jsonl") if p.stem != "neutral")
        bad = [p for p in self.personas if p not in known]
        if bad:
            raise UsageError(f"personas: unknown {', '.join(map(repr, bad))}; built-in: {', '.join(known)} "
                             f"('neutral' is the background set)")
        if len(set(self.personas)) != len(self.personas):
            raise UsageError(f"personas has repeats: {list(self.personas)}")
        if "logreg" not in self.probes:
            raise UsageError(f"probes must include 'logreg' (got {list(self.probes)})")
        if self.n_per_persona < self.folds:
            raise UsageError(f"n_per_persona={self.n_per_persona} is fewer than folds={self.folds}: every fold "
                             f"needs a statement of each persona")

    def execute(self, ctx: AuditContext) -> None:
        """Probe every layer in one pass per batch; report the curve against words, the band and the overlap."""
        model, progress = ctx.model, ctx.progress
        from ..probes.localize import layer_ranges, localize

        res = ctx.result
        stance = self.contrast == "stance"
        with ctx.step("localize"):
            loc = localize(model, list(self.personas) or None, framing=self.framing,
                           contrast=self.contrast, n_per_persona=self.n_per_persona, folds=self.folds,
                           seed=self.seed, probes=self.probes, n_permutations=self.permutations,
                           progress=progress)
        ctx.state["loc"] = loc
        by_layer = {s.layer: s for s in loc.layers}
        best = by_layer[loc.best_layer]
        n = sum(loc.counts.values())
        what = "endorsed vs rejected statements" if stance else "personas"
        candidates = loc.best_layer_set
        res.metrics += [
            Metric(name="best_accuracy", value=best.accuracy, ci_low=best.accuracy_ci[0], ci_high=best.accuracy_ci[1],
                   n=n, description=f"Logistic probe accuracy ({what}) at the best layer ({loc.best_layer}); "
                                    f"chance {best.chance:.2f}."),
            Metric(name="best_layer", value=loc.best_layer, ci_low=min(candidates), ci_high=max(candidates),
                   description="Layer with the highest probe accuracy; the interval spans the layers whose "
                               "accuracy CI overlaps the best one's (any could be best on another sample)."),
            Metric(name="best_layer_candidates", value=len(candidates),
                   description="How many layers are indistinguishable from the best (CI overlap)."),
            Metric(name="chance", value=best.chance, description="Share of the largest class."),
            Metric(name="control_accuracy_max", value=max(s.control_accuracy for s in loc.layers),
                   description="Shuffled-label control (one shuffle per layer), maximum over layers."),
            Metric(name="band_start", value=loc.band_fraction[0], unit="fraction of depth",
                   description=loc.band_rule),
            Metric(name="band_end", value=loc.band_fraction[1], unit="fraction of depth"),
            Metric(name="silhouette_best", value=max(s.silhouette for s in loc.layers),
                   description="Best cosine silhouette over layers (> 0: classes form clusters)."),
        ]
        if loc.lexical_accuracy is not None and best.above_lexical is not None:
            res.metrics += [
                Metric.of("lexical_accuracy", loc.lexical_accuracy, loc.lexical_accuracy_ci, n=n,
                          description=f"Bag-of-words probe on the same statements and folds ({loc.lexical_probe})."),
                Metric.of("above_lexical", best.above_lexical, best.above_lexical_ci, n=n,
                          description="Best layer's accuracy minus the bag-of-words probe's; paired bootstrap "
                                      "95% CI over statements (CI above 0: the activations add to the words)."),
            ]
        if loc.null is not None:
            res.metrics += [
                Metric(name="permutation_null_mean", value=loc.null.mean, n=loc.null.n_permutations,
                       description=f"Probe accuracy on permuted labels at layer {loc.null.layer}, mean of "
                                   f"{loc.null.n_permutations} permutations (should sit at chance)."),
                Metric(name="permutation_null_p95", value=loc.null.p95, n=loc.null.n_permutations,
                       description="95th percentile of the permutation null."),
                Metric(name="permutation_p", value=loc.null.p_value, n=loc.null.n_permutations,
                       description="Empirical p of best_accuracy against the permutation null "
                                   "((1 + #null >= best) / (K + 1)). Taken at the chosen layer: it ignores the "
                                   "choice of the best layer, so gate on permutation_p_layers."),
                Metric(name="permutation_p_layers", value=loc.null.p_adjusted, n=loc.null.n_permutations,
                       description=f"p of best_accuracy with the choice among {len(loc.layers)} layers accounted "
                                   "for (normal tail of the null x number of layers)."),
            ]
        xs = [float(s.layer) for s in loc.layers]
        curves = [Series(label="logistic probe", x=xs, y=[s.accuracy for s in loc.layers],
                         lo=[s.accuracy_ci[0] for s in loc.layers], hi=[s.accuracy_ci[1] for s in loc.layers]),
                  Series(label="shuffled-label control", x=xs, y=[s.control_accuracy for s in loc.layers]),
                  Series(label="chance", x=xs, y=[s.chance for s in loc.layers])]
        if loc.lexical_accuracy is not None:
            curves.insert(1, Series(label="bag-of-words baseline", x=xs, y=[loc.lexical_accuracy] * len(xs)))
        if any(s.extratrees_accuracy is not None for s in loc.layers):
            curves.insert(1, Series(label="ExtraTrees", x=xs, y=[finite(s.extratrees_accuracy) for s in loc.layers]))
        res.plots.append(Plot(title=f"Separability of {what} by layer", x_label="layer (block output)",
                              y_label="accuracy", series=curves,
                              note=f"Localized band: layers {loc.band[0]}-{loc.band[1]} (measured from the "
                                   f"bag-of-words baseline); best layer {loc.best_layer}, indistinguishable: "
                                   f"{layer_ranges(candidates)}."))
        if loc.lexical_accuracy is not None:
            res.plots.append(Plot(
                title="Accuracy above the bag-of-words baseline", x_label="layer (block output)",
                y_label="accuracy - lexical accuracy",
                series=[Series(label="above words (paired 95% CI)", x=xs,
                               y=[finite(s.above_lexical) for s in loc.layers],
                               lo=[finite(s.above_lexical_ci[0]) if s.above_lexical_ci else None for s in loc.layers],
                               hi=[finite(s.above_lexical_ci[1]) if s.above_lexical_ci else None for s in loc.layers]),
                        Series(label="words alone", x=xs, y=[0.0] * len(xs))],
                note="Where the curve's CI stays above 0 the activations carry more than the statement's words."))
            res.tables.append(Table(
                title="Probe accuracy by layer, against words",
                columns=["layer", "accuracy", "95% CI", "above words", "95% CI (paired)", "in band"],
                rows=[[s.layer, round(s.accuracy, 3), f"{s.accuracy_ci[0]:.3f}-{s.accuracy_ci[1]:.3f}",
                       round(finite(s.above_lexical) or 0.0, 3),
                       f"{s.above_lexical_ci[0]:+.3f} to {s.above_lexical_ci[1]:+.3f}" if s.above_lexical_ci else "",
                       "yes" if loc.band[0] <= s.layer <= loc.band[1] else ""] for s in loc.layers]))
        res.plots.append(Plot(title="Cluster geometry by layer", x_label="layer", y_label="value",
                              series=[Series(label="silhouette (cosine)", x=xs,
                                             y=[finite(s.silhouette) for s in loc.layers]),
                                      Series(label="Fisher between/within", x=xs,
                                             y=[finite(s.fisher) for s in loc.layers])]))
        if not stance:  # two classes (endorse/reject) have no persona overlap to show
            ov = loc.overlap
            res.plots.append(Plot(title=f"Centroid cosine at layer {ov.layer} ({ov.reference})", kind="heatmap",
                                  values=[[finite(v) for v in row] for row in ov.centroid_cosine],
                                  rows=ov.personas, cols=ov.personas))
            pairs = sorted(((ov.centroid_cosine[i][j], ov.confusion[i][j] + ov.confusion[j][i], ov.jaccard[i][j],
                             ov.personas[i], ov.personas[j]) for i in range(len(ov.personas))
                            for j in range(i + 1, len(ov.personas))), reverse=True)
            res.tables.append(Table(title=f"Most overlapping persona pairs at layer {ov.layer}",
                                    columns=["persona A", "persona B", "centroid cosine", "probe confusion",
                                             "top-unit Jaccard"],
                                    rows=[[a, b, round(c, 3), round(f, 3), round(jc, 3)]
                                          for c, f, jc, a, b in pairs[:8]]))
        floor = max(best.chance, loc.null.p95 if loc.null is not None else best.chance)
        if best.accuracy_ci[0] - floor <= 0.05:
            res.findings.append(Finding(severity="medium",
                                        title=f"{what.capitalize()} are not separable above the null",
                                        detail="The best layer's accuracy CI reaches chance or the permutation "
                                               "null's 95th percentile: the probes on this model measure noise.",
                                        metric="best_accuracy"))
        if loc.explained_by_words and best.above_lexical_ci is not None:
            lo, hi = best.above_lexical_ci
            res.findings.append(Finding(
                severity="info", title="The separability is explained by words",
                detail=f"A bag-of-words probe reaches {loc.lexical_accuracy:.2f}; the best layer adds "
                       f"{best.above_lexical:+.2f} (paired 95% CI {lo:+.2f} to {hi:+.2f}). The band does not "
                       "localize a representation beyond the statements' vocabulary.", metric="above_lexical"))
        subject = "Stance (endorsed vs rejected)" if stance else "Personas"
        res.findings.append(Finding(
            severity="info", title=f"{subject} {'separates' if stance else 'separate'} best at layer "
                                   f"{loc.best_layer} of {model.n_layers}",
            detail=f"accuracy {best.accuracy:.2f} (95% CI {best.accuracy_ci[0]:.2f}-{best.accuracy_ci[1]:.2f}), "
                   f"chance {best.chance:.2f}"
                   + (f", words alone {loc.lexical_accuracy:.2f}" if loc.lexical_accuracy is not None else "")
                   + f"; band {loc.band[0]}-{loc.band[1]}; layers {layer_ranges(candidates)} are within the "
                     "best one's CI.",
            metric="best_accuracy"))
        res.data_hashes["personas"] = str(loc.provenance.get("data_hash", ""))
        per_class = ", ".join(f"{k} {v}" for k, v in sorted(loc.counts.items()))
        res.notes.append(f"Contrast {self.contrast!r}, framing {self.framing!r}, read at the last prompt token of "
                         f"resid_post; {n} statements ({per_class}).")
        res.notes.append(
            f"The best layer is uncertain: layers {layer_ranges(candidates)} ({len(candidates)} of {len(loc.layers)}) "
            "have accuracy CIs that overlap the best layer's. The CIs resample statements only; a new statement "
            "sample or fold split moves the best layer and the band further"
            + (f" (with {self.n_per_persona} statements per persona and {self.folds} folds, as in the quick "
               "profile, the best layer and band change from seed to seed)" if self.n_per_persona < 40 else "")
            + ". Read the band together with the above-words curve, not as an exact layer.")

    def controls(self, ctx: AuditContext) -> None:
        """Artifact: the best layer beats words (paired bootstrap). Negative: the permutation null sits at chance."""
        loc: LocalizationResult | None = ctx.state.get("loc")
        if loc is None:
            return
        best = next(s for s in loc.layers if s.layer == loc.best_layer)
        n = sum(loc.counts.values())
        if best.above_lexical_ci is not None:
            lo = best.above_lexical_ci[0]
            ctx.control("beats_lexical_baseline", "artifact", lo > 0.0, observed=lo,
                        expected="lower 95% bound of (best-layer accuracy - bag-of-words accuracy) > 0",
                        detail=f"Paired bootstrap over {n} statements at layer {loc.best_layer}: activations "
                               f"{best.accuracy:.3f}, words {loc.lexical_accuracy:.3f}. Failed: the band is "
                               "explained by words.")
        else:
            ctx.control("beats_lexical_baseline", "artifact", False, expected="a bag-of-words baseline",
                        detail="No statement texts: the words baseline could not be measured.")
        if loc.null is not None:
            tol = null_tolerance(loc.null, n)
            ctx.control("permutation_null_at_chance", "negative", loc.null.mean <= best.chance + tol,
                        observed=loc.null.mean, expected=f"<= chance {best.chance:.3f} + {tol:.3f}",
                        detail=f"{loc.null.n_permutations} label permutations of the probe at layer {loc.null.layer} "
                               f"(same folds): mean {loc.null.mean:.3f}, 95th percentile {loc.null.p95:.3f}; "
                               f"best accuracy's p = {loc.null.p_value:.3f} at that layer, "
                               f"{loc.null.p_adjusted:.2g} with the choice of layer accounted for. Failed: the "
                               "probing leaks labels.")
