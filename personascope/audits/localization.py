"""Where personas live: per-layer probes that separate persona prompts (papers.md §1).

An interpretability audit: it describes the model rather than grades it, so its findings are mostly
``info``; a report shows it first because it explains the risk audits that follow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge

from ..errors import UsageError
from ..records import finite
from ..results import Finding, Metric, Plot, Series, Table
from .base import Audit, AuditContext, Count


@dataclass(frozen=True)
class LocalizationAudit(Audit):
    """Which layers separate personas (probe accuracy per layer with controls) and how much they overlap.

    Attributes:
        personas: Built-in persona names (empty: all built-in personas).
        n_per_persona: Statements per persona.
        probes: ``logreg`` and/or ``extratrees``.
        framing: ``system`` (statement as system prompt), ``user`` or ``says``.
        folds: Cross-validation folds.
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
        """Probe every layer in one pass per batch; report the curve, the band and the overlap."""
        model, progress = ctx.model, ctx.progress
        from ..probes.localize import localize

        res = ctx.result
        with ctx.step("localize"):
            loc = localize(model, list(self.personas) or None, framing=self.framing,  # type: ignore[arg-type]
                           n_per_persona=self.n_per_persona, folds=self.folds, seed=self.seed,
                           probes=self.probes, progress=progress)
        best = next(s for s in loc.layers if s.layer == loc.best_layer)
        n = sum(loc.counts.values())
        res.metrics += [
            Metric(name="best_accuracy", value=best.accuracy, ci_low=best.accuracy_ci[0], ci_high=best.accuracy_ci[1],
                   n=n, description=f"Logistic probe accuracy at the best layer ({loc.best_layer}); "
                                    f"chance {best.chance:.2f}."),
            Metric(name="best_layer", value=loc.best_layer, description="Layer with the highest probe accuracy."),
            Metric(name="chance", value=best.chance, description="Share of the largest class."),
            Metric(name="control_accuracy_max", value=max(s.control_accuracy for s in loc.layers),
                   description="Shuffled-label control, maximum over layers (should sit near chance)."),
            Metric(name="band_start", value=loc.band_fraction[0], unit="fraction of depth",
                   description=loc.band_rule),
            Metric(name="band_end", value=loc.band_fraction[1], unit="fraction of depth"),
            Metric(name="silhouette_best", value=max(s.silhouette for s in loc.layers),
                   description="Best cosine silhouette over layers (> 0: personas form clusters)."),
        ]
        xs = [float(s.layer) for s in loc.layers]
        curves = [Series(label="logistic probe", x=xs, y=[s.accuracy for s in loc.layers],
                         lo=[s.accuracy_ci[0] for s in loc.layers], hi=[s.accuracy_ci[1] for s in loc.layers]),
                  Series(label="shuffled-label control", x=xs, y=[s.control_accuracy for s in loc.layers]),
                  Series(label="chance", x=xs, y=[s.chance for s in loc.layers])]
        if any(s.extratrees_accuracy is not None for s in loc.layers):
            curves.insert(1, Series(label="ExtraTrees", x=xs, y=[finite(s.extratrees_accuracy) for s in loc.layers]))
        res.plots += [
            Plot(title="Persona separability by layer", x_label="layer (block output)", y_label="accuracy",
                 series=curves, note=f"Localized band: layers {loc.band[0]}-{loc.band[1]}."),
            Plot(title="Cluster geometry by layer", x_label="layer", y_label="value",
                 series=[Series(label="silhouette (cosine)", x=xs, y=[finite(s.silhouette) for s in loc.layers]),
                         Series(label="Fisher between/within", x=xs, y=[finite(s.fisher) for s in loc.layers])]),
            Plot(title=f"Centroid cosine at layer {loc.overlap.layer} ({loc.overlap.reference})", kind="heatmap",
                 values=[[finite(v) for v in row] for row in loc.overlap.centroid_cosine],
                 rows=loc.overlap.personas, cols=loc.overlap.personas),
        ]
        ov = loc.overlap
        pairs = sorted(((ov.centroid_cosine[i][j], ov.confusion[i][j] + ov.confusion[j][i], ov.jaccard[i][j],
                         ov.personas[i], ov.personas[j]) for i in range(len(ov.personas))
                        for j in range(i + 1, len(ov.personas))), reverse=True)
        res.tables.append(Table(title=f"Most overlapping persona pairs at layer {ov.layer}",
                                columns=["persona A", "persona B", "centroid cosine", "probe confusion",
                                         "top-unit Jaccard"],
                                rows=[[a, b, round(c, 3), round(f, 3), round(jc, 3)]
                                      for c, f, jc, a, b in pairs[:8]]))
        margin = best.accuracy_ci[0] - max(best.chance, max(s.control_accuracy for s in loc.layers))
        if margin <= 0.05:
            res.findings.append(Finding(severity="medium", title="Personas are not separable above the controls",
                                        detail="The best layer's accuracy CI reaches the chance/control level: "
                                               "persona probes on this model measure noise.",
                                        metric="best_accuracy"))
        res.findings.append(Finding(
            severity="info", title=f"Personas separate best at layer {loc.best_layer} of {model.n_layers}",
            detail=f"accuracy {best.accuracy:.2f} (95% CI {best.accuracy_ci[0]:.2f}-{best.accuracy_ci[1]:.2f}), "
                   f"chance {best.chance:.2f}; band {loc.band[0]}-{loc.band[1]}. Read accuracy together with "
                   "silhouette: on topic-distinct statements a linear probe saturates early.",
            metric="best_accuracy"))
        res.data_hashes["personas"] = str(loc.provenance.get("data_hash", ""))
        res.notes.append(f"Framing {self.framing!r}, read at the last prompt token of resid_post; {n} statements.")
