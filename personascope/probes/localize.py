"""Localize persona representations by layer (after Cintas et al., AIES 2025).

`localize` builds prompts from persona statements, reads one activation per prompt at every
layer in one pass per batch, and hands them to `localize_activations`, which does all the
measuring (so it runs on saved or synthetic activations without a model): per-layer probe
accuracy against chance and a shuffled-label control, cluster measures, the layer band where
personas separate, a bootstrap band on the accuracy curve, layer-by-layer CKA, and an overlap
analysis between personas at the best layer.

Two controls qualify every curve. Personas with distinct topics are separable by their words
alone, so a bag-of-words probe on the same statements and folds (the *lexical baseline*) sets the
floor the band is measured from, and each layer reports its accuracy above it with a paired
bootstrap CI. A label-permutation null at the best layer says what accuracy no signal reaches.

Two contrasts: ``"personas"`` (which persona does a statement belong to) and ``"stance"``
(a persona's endorsed vs rejected statements, pooled over personas: the same topics on both
sides, so what separates them is the stance, not the subject).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from sklearn.ensemble import ExtraTreesClassifier
from threadpoolctl import threadpool_limits

from ..data import PersonaStatement, builtin_personas_dir, load_persona_statements
from ..errors import UsageError
from ..records import stable_hash
from ..stats import empirical_p, rng
from . import metrics as M
from .metrics import linear_probe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..backends.base import ModelAdapter
    from ..store import ActivationSet

Framing = Literal["system", "user", "says"]
Contrast = Literal["personas", "stance"]
PROBES = ("logreg", "extratrees")
BAND_RULE = (
    "contiguous layers around the best logistic-regression accuracy where "
    "accuracy >= floor + frac * (max - floor); floor = the bag-of-words probe's accuracy "
    "(chance when the texts are not known), so the band is where activations add most over words"
)
LEXICAL_PROBE = "TF-IDF unigrams (sublinear tf) + logistic regression (C=10), same folds as the activation probe"
#: Labels of the stance contrast.
ENDORSE, REJECT = "endorse", "reject"
# The user turn under a system-message persona; the same as the demo (the paper's framing).
USER_TURN = "What do you think?"


def extra_trees_probe(seed: int = 0, n_estimators: int = 100) -> ExtraTreesClassifier:
    """ExtraTrees classifier, the paper's per-layer persona classifier (single-threaded, seeded)."""
    # n_jobs=1: the problems are small and the machine is shared; parallel trees only add overhead.
    return ExtraTreesClassifier(n_estimators=n_estimators, n_jobs=1, random_state=seed)


class LayerScores(BaseModel):
    """Separability of the personas at one site."""

    layer: int
    site: str
    accuracy: float = Field(description="Logistic-regression probe, mean stratified-CV accuracy.")
    accuracy_folds: list[float]
    accuracy_ci: tuple[float, float] = Field(description="Percentile bootstrap CI over statements.")
    extratrees_accuracy: float | None = None
    control_accuracy: float = Field(description="Same probe on shuffled labels (one shuffle, same folds).")
    selectivity: float = Field(description="accuracy - control_accuracy.")
    chance: float = Field(description="Share of the largest class.")
    silhouette: float
    fisher: float
    centroid_distance: float = Field(description="Mean pairwise cosine distance of class centroids.")
    above_lexical: float | None = Field(
        default=None, description="Accuracy minus the bag-of-words probe's, mean over statements (None: no texts).")
    above_lexical_ci: tuple[float, float] | None = Field(
        default=None, description="Paired percentile bootstrap CI over statements of above_lexical.")


class Overlap(BaseModel):
    """Which personas share representation at one layer."""

    layer: int
    personas: list[str]
    confusion: list[list[float]] = Field(description="Row-normalized CV confusion (true x predicted).")
    centroid_cosine: list[list[float]] = Field(description="Cosine of centroid shifts from the reference.")
    reference: str = Field(description="What centroids and unit effects are measured against.")
    top_k: int
    top_units: dict[str, list[int]] = Field(description="Units with the largest |Cohen's d| per persona.")
    jaccard: list[list[float]] = Field(description="Pairwise Jaccard of the top-unit sets.")


class PermutationNull(BaseModel):
    """The probe's accuracy on permuted labels at the best layer: what no signal reaches."""

    layer: int
    n_permutations: int
    values: list[float] = Field(description="CV accuracy of each permutation (same folds as the real probe).")
    mean: float
    p95: float = Field(description="95th percentile of the null draws.")
    p_value: float = Field(description="Empirical p of the best accuracy: (1 + #{null >= best}) / (K + 1). The "
                                       "null is taken at the chosen layer, so this p ignores the choice of the "
                                       "best of L layers (on noise it is at its floor far too often).")
    p_adjusted: float = Field(description="The choice of layer accounted for: normal tail of the null at the best "
                                          "accuracy, times the number of layers (`metrics.selection_adjusted_p`).")


class LocalizationResult(BaseModel):
    """Where in depth personas become separable, with controls, uncertainty and overlap."""

    personas: list[str] = Field(description="The personas whose statements were probed.")
    counts: dict[str, int] = Field(description="Statements per class.")
    n_layers: int = Field(description="Depth of the model (for band fractions).")
    layers: list[LayerScores]
    best_layer: int = Field(description="Layer with the highest probe accuracy (first if tied).")
    band: tuple[int, int] = Field(description="First and last layer of the localized band (inclusive).")
    band_fraction: tuple[float, float] = Field(description="Band as fractions of depth: start/L, (end+1)/L.")
    band_rule: str = BAND_RULE
    band_frac: float = 0.9
    cka: list[list[float]] = Field(description="Linear CKA between the layers' representations.")
    overlap: Overlap
    provenance: dict[str, Any]
    contrast: Contrast = Field(default="personas", description="What the probes separate: personas, or a "
                                                               "persona's endorsed vs rejected statements.")
    classes: list[str] = Field(default_factory=list, description="The probe's classes (personas, or "
                                                                 "endorse/reject).")
    lexical_accuracy: float | None = Field(default=None, description="Bag-of-words probe on the same statements "
                                                                     "and folds (None: no texts given).")
    lexical_accuracy_ci: tuple[float, float] | None = None
    lexical_probe: str = ""
    band_floor: float | None = Field(default=None, description="What the band is measured from: "
                                                               "max(chance, lexical accuracy).")
    best_layer_set: list[int] = Field(default_factory=list, description=(
        "Layers whose accuracy CI overlaps the best layer's: the best layer's uncertainty."))
    explained_by_words: bool | None = Field(default=None, description=(
        "True when the best layer does not beat the bag-of-words probe (paired bootstrap CI of "
        "the difference reaches 0); None without texts."))
    null: PermutationNull | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the result."""
        return self.model_dump(mode="json")

    def plot_curve(self, **kw: Any) -> Figure:
        """Separability curve of this result (see `plots.separability_curve` for ``kw``)."""
        from .plots import separability_curve

        return separability_curve(self, **kw)

    def plot_overlap(self) -> Figure:
        """Overlap heatmaps at the best layer (see `plots.overlap_heatmaps`)."""
        from .plots import overlap_heatmaps

        return overlap_heatmaps(self)

    def plot_cka(self) -> Figure:
        """Layer-by-layer CKA heatmap (see `plots.cka_heatmap`)."""
        from .plots import cka_heatmap

        return cka_heatmap(self)

    def save_plots(self, out_dir: str | Path, **kw: Any) -> list[Path]:
        """Paths of the curve, overlap and CKA figures written to ``out_dir`` (see `plots.save_all`)."""
        from .plots import save_all

        return save_all(self, out_dir, **kw)

    def _repr_html_(self) -> str:
        what = "Stance (endorsed vs rejected) localization" if self.contrast == "stance" else "Persona localization"
        classes = self.classes or self.personas
        head = (
            f"<p><b>{what}</b> on {escape(str(self.provenance.get('model', {}).get('id', '?')))}: "
            f"best layer {self.best_layer} (indistinguishable: {layer_ranges(self.best_layer_set)}), "
            f"band {self.band[0]}-{self.band[1]} "
            f"({self.band_fraction[0]:.2f}-{self.band_fraction[1]:.2f} of depth). Classes: "
            + ", ".join(f"{escape(p)} ({self.counts.get(p, 0)})" for p in classes)
            + (f"; personas: {', '.join(escape(p) for p in self.personas)}" if self.contrast == "stance" else "")
            + ".</p>"
        )
        if self.lexical_accuracy is not None:
            head += (f"<p>Bag-of-words baseline {self.lexical_accuracy:.3f}"
                     + (" &mdash; <b>the band is explained by words</b>" if self.explained_by_words else "")
                     + ".</p>")
        if self.null is not None:
            head += (f"<p>Permutation null at layer {self.null.layer} ({self.null.n_permutations} draws): mean "
                     f"{self.null.mean:.3f}, 95th percentile {self.null.p95:.3f}; p = {self.null.p_value:.3f} "
                     f"({self.null.p_adjusted:.2g} over {len(self.layers)} layers).</p>")
        bold = ' style="font-weight:bold"'

        def above(r: LayerScores) -> str:
            if r.above_lexical is None or r.above_lexical_ci is None:
                return "<td></td>"
            return f"<td>{r.above_lexical:+.3f} ({r.above_lexical_ci[0]:+.3f} to {r.above_lexical_ci[1]:+.3f})</td>"

        rows = "".join(
            f"<tr{bold if self.band[0] <= r.layer <= self.band[1] else ''}>"
            f"<td>{r.layer}</td><td>{r.accuracy:.3f}</td>"
            f"<td>{r.accuracy_ci[0]:.3f}-{r.accuracy_ci[1]:.3f}</td>{above(r)}"
            f"<td>{'' if r.extratrees_accuracy is None else f'{r.extratrees_accuracy:.3f}'}</td>"
            f"<td>{r.control_accuracy:.3f}</td><td>{r.chance:.3f}</td><td>{r.silhouette:.3f}</td></tr>"
            for r in self.layers
        )
        return (
            head + "<table><tr><th>layer</th><th>logreg</th><th>95% CI</th><th>above words (95% CI)</th>"
            "<th>extratrees</th><th>control</th><th>chance</th><th>silhouette</th></tr>" + rows + "</table>"
        )


def layer_ranges(layers: Sequence[int]) -> str:
    """``"3-5, 9"``: runs of consecutive layers written as ranges."""
    runs: list[list[int]] = []
    for x in sorted(layers):
        if runs and x == runs[-1][-1] + 1:
            runs[-1].append(x)
        else:
            runs.append([x])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "-"


def _per_prompt(values: Sequence[str] | None, acts: ActivationSet, what: str) -> np.ndarray | None:
    """``values`` (one per prompt) spread to the rows of ``acts``; None stays None."""
    if values is None:
        return None
    n_prompts = len(acts.labels) if acts.labels is not None else len(acts)
    if len(values) != n_prompts:
        raise UsageError(f"{what} has {len(values)} entries for {n_prompts} prompts")
    return np.asarray(list(values), dtype=object)[acts.row_sample]


def localize_activations(
    acts: ActivationSet,
    *,
    folds: int = 5,
    seed: int = 0,
    probes: Sequence[str] = PROBES,
    background: str | None = "neutral",
    band_frac: float = 0.9,
    n_boot: int = 1000,
    top_k: int = 20,
    n_estimators: int = 100,
    silhouette_metric: str = "cosine",
    texts: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    contrast: Contrast = "personas",
    n_permutations: int = 20,
    params: dict[str, Any] | None = None,
) -> LocalizationResult:
    """Measure per-layer separability of labelled activations, against words and a permutation null.

    Args:
        acts: Activations with one label per row (`ActivationSet.row_labels`).
        folds: Stratified CV folds for every probe (the same folds for all of them).
        seed: Seed of folds, label shuffle, probes, bootstrap and permutations.
        probes: ``"logreg"`` (always run; the band and CI use it) and optionally ``"extratrees"``
            (the paper's classifier; about 10x the cost of the rest on a 576-wide model).
        background: Label of reference rows (e.g. neutral statements). They are left out of
            classification and serve as the reference for unit effects and centroid shifts. If
            None or absent, each persona is compared with the other personas.
        band_frac: ``frac`` of `metrics.localized_band`, applied to the logreg accuracy curve over
            the sites of ``acts`` in order (with a layer subset, "contiguous" means adjacent in it).
        n_boot: Bootstrap resamples for the accuracy CI.
        top_k: Units per persona in the overlap analysis.
        n_estimators: Trees of the ExtraTrees probe.
        silhouette_metric: ``"cosine"`` or ``"euclidean"``.
        texts: The statement of each prompt (``len(acts.labels)`` of them). With texts, a
            bag-of-words probe (`metrics.lexical_probe`) on the same folds gives the lexical
            baseline: the band is measured from it, and every layer reports its accuracy above it.
        groups: The persona of each prompt when the labels are not personas (the stance
            contrast): folds are stratified on persona x label and ``personas`` lists the groups.
        contrast: Recorded in the result (``"personas"`` or ``"stance"``); the labels decide.
        n_permutations: Label permutations of the probe at the best layer (0: no null).
        params: Extra method parameters to record in the provenance.

    Returns:
        A `LocalizationResult`.

    """
    unknown = set(probes) - set(PROBES)
    if unknown or "logreg" not in probes:
        raise UsageError(f"probes must include 'logreg' and be among {PROBES}; got {tuple(probes)}")
    if n_permutations < 0:
        raise UsageError(f"n_permutations must be >= 0, got {n_permutations}")
    labels = acts.row_labels
    if labels is None:
        raise UsageError("The activation set has no labels; collect it with labels=[persona per prompt]")
    labels = labels.astype(str)
    row_texts = _per_prompt(texts, acts, "texts")
    row_groups = _per_prompt(groups, acts, "groups")
    is_bg = labels == background if background is not None else np.zeros(len(labels), bool)
    y = labels[~is_bg]
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise UsageError(f"Need at least two classes to localize, got {classes}")
    group = row_groups[~is_bg].astype(str) if row_groups is not None else None
    personas = sorted(set(group.tolist())) if group is not None else classes
    # Stratify on persona x label in the stance contrast, so every fold holds every persona's both sides.
    strata = np.array([f"{g}\x1f{c}" for g, c in zip(group, y, strict=True)]) if group is not None else y
    X_all = acts.acts.float().numpy().astype(np.float64)
    X, X_bg = X_all[~is_bg], (X_all[is_bg] if is_bg.any() else None)
    counts = dict(Counter(y.tolist()))
    chance = max(counts.values()) / len(y)
    y_shuffled = rng(seed, "shuffled_labels").permutation(y)

    rows: list[dict[str, Any]] = []
    correct: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    # Small dense problems: multithreaded BLAS was measured 30-50x slower here than one thread.
    with threadpool_limits(limits=1):
        for j, site in enumerate(acts.sites):
            x = X[:, j]
            pred, fold = M.cv_predict(x, y, linear_probe(seed), folds, seed, strata)
            per_fold = [float((pred[fold == k] == y[fold == k]).mean()) for k in range(folds)]
            acc = float(np.mean(per_fold))
            ctl, _ = M.cv_accuracy(x, y_shuffled, linear_probe(seed), folds, seed, strata)
            et = (
                M.cv_accuracy(x, y, extra_trees_probe(seed, n_estimators), folds, seed, strata)[0]
                if "extratrees" in probes else None
            )
            correct.append(pred == y)
            preds.append(pred)
            rows.append({
                "layer": site.layer, "site": str(site), "accuracy": acc, "accuracy_folds": per_fold,
                "extratrees_accuracy": et, "control_accuracy": ctl, "selectivity": acc - ctl,
                "chance": chance, "silhouette": M.silhouette(x, y, silhouette_metric),
                "fisher": M.fisher_ratio(x, y), "centroid_distance": M.mean_centroid_distance(x, y),
            })
        correct_all = np.stack(correct)
        lo, hi = M.bootstrap_ci(correct_all, n_boot=n_boot, seed=seed)
        cka = M.cka_matrix(X)
        lexical_acc: float | None = None
        lexical_ci: tuple[float, float] | None = None
        if row_texts is not None:
            # Same seed and strata, so the same folds as every activation probe above.
            lex_pred, lex_fold = M.cv_predict(row_texts[~is_bg], y, M.lexical_probe(seed), folds, seed, strata)
            lex_correct = lex_pred == y
            lexical_acc = float(np.mean([lex_correct[lex_fold == k].mean() for k in range(folds)]))
            llo, lhi = M.bootstrap_ci(lex_correct, n_boot=n_boot, seed=seed)
            lexical_ci = (float(llo), float(lhi))
            diff, dlo, dhi = M.paired_diff_ci(correct_all, lex_correct, n_boot=n_boot, seed=seed)
            for r, d, a, b in zip(rows, diff, dlo, dhi, strict=True):
                r["above_lexical"], r["above_lexical_ci"] = float(d), (float(a), float(b))
        acc_curve = [r["accuracy"] for r in rows]
        best = int(np.argmax(acc_curve))
        null: PermutationNull | None = None
        if n_permutations:
            draws = M.permutation_null(X[:, best], y, lambda: linear_probe(seed), n_permutations, folds, seed, group)
            null = PermutationNull(
                layer=rows[best]["layer"], n_permutations=n_permutations, values=[float(v) for v in draws],
                mean=float(draws.mean()), p95=float(np.quantile(draws, 0.95)),
                p_value=empirical_p(acc_curve[best], draws, two_sided=False),
                p_adjusted=M.selection_adjusted_p(acc_curve[best], draws, len(rows), len(y), chance))

    for r, a, b in zip(rows, lo, hi, strict=True):
        r["accuracy_ci"] = (float(a), float(b))
    # The band is measured from what words alone reach, so a curve that words explain localizes nothing.
    floor = max(chance, lexical_acc) if lexical_acc is not None else chance
    start, end = M.localized_band(acc_curve, floor, band_frac)
    n_layers = int(acts.provenance.model.n_layers)
    band = (rows[start]["layer"], rows[end]["layer"])
    best_set = [rows[j]["layer"] for j in M.best_layer_set([r["accuracy_ci"] for r in rows], best)]
    explained = None if lexical_acc is None else bool(rows[best]["above_lexical_ci"][0] <= 0.0)

    xb = X[:, best]
    if X_bg is not None:
        ref_name, bg_best = f"background '{background}' ({len(X_bg)} rows)", X_bg[:, best]
        center = bg_best.mean(0)
    else:
        # No background: one-vs-rest unit effects, centroid shifts from the mean persona centroid.
        ref_name, bg_best = "the other personas (one-vs-rest); centroids centered on their mean", None
        center = np.stack([xb[y == p].mean(0) for p in classes]).mean(0)
    units = M.top_units(xb, y, classes, k=top_k, background=bg_best)
    overlap = Overlap(
        layer=rows[best]["layer"], personas=classes,
        confusion=M.normalized_confusion(y, preds[best], classes).tolist(),
        centroid_cosine=M.centroid_cosine_matrix(xb, y, classes, center=center).tolist(),
        reference=ref_name, top_k=top_k, top_units={str(k): v for k, v in units.items()},
        jaccard=M.jaccard_matrix(units, classes).tolist(),
    )
    prov = acts.provenance.model_dump(mode="json")
    prov["localize"] = {
        "folds": folds, "seed": seed, "probes": list(probes), "background": background,
        "band_frac": band_frac, "n_boot": n_boot, "top_k": top_k, "n_estimators": n_estimators,
        "silhouette_metric": silhouette_metric, "label_hash": stable_hash(labels.tolist()),
        "contrast": contrast, "n_permutations": n_permutations,
        "lexical_probe": LEXICAL_PROBE if row_texts is not None else None,
        **(params or {}),
    }
    return LocalizationResult(
        personas=personas, counts=counts, n_layers=n_layers,
        layers=[LayerScores(**r) for r in rows], best_layer=rows[best]["layer"], band=band,
        band_fraction=(band[0] / n_layers, (band[1] + 1) / n_layers), band_frac=band_frac,
        cka=cka.tolist(), overlap=overlap, provenance=prov, contrast=contrast, classes=classes,
        lexical_accuracy=lexical_acc, lexical_accuracy_ci=lexical_ci,
        lexical_probe=LEXICAL_PROBE if row_texts is not None else "", band_floor=floor,
        best_layer_set=best_set, explained_by_words=explained, null=null,
    )


def frame_prompt(model: Any, statement: str, framing: Framing) -> str:
    """Chat-formatted prompt that presents ``statement`` as the persona.

    ``"system"``: the statement is the system message, user turn "What do you think?" (the
    paper's framing, as in the demo); ``"user"``: the statement is the user turn;
    ``"says"``: system "You are a person who says: {statement}", same user turn.
    """
    if framing == "system":
        return model.format_chat(user=USER_TURN, system=statement)
    if framing == "user":
        return model.format_chat(user=statement)
    if framing == "says":
        return model.format_chat(user=USER_TURN, system=f"You are a person who says: {statement}")
    raise UsageError(f"framing must be 'system', 'user' or 'says', got {framing!r}")


def _sample(items: list[PersonaStatement], n: int, rng: np.random.Generator) -> list[PersonaStatement]:
    # Keep file order within the sample so prompts (and the cache key) are stable for a seed.
    idx = rng.permutation(len(items))[:n]
    return [items[i] for i in sorted(idx)]


def select_statements(
    personas: Sequence[str] | str | Path | None,
    *,
    source: str | Path | None = None,
    background: str | None = "neutral",
    n_per_persona: int = 60,
    seed: int = 0,
) -> list[PersonaStatement]:
    """Positive statements of each persona plus the background rows, sampled reproducibly.

    ``personas``: None (every persona in ``source``, default the built-in set, except the
    background), a list of names, or a path to a JSONL file or folder of them. ``background``:
    ``"negative"`` uses the same personas' negative statements (labelled ``"negative"``); any other
    name is a persona file, looked up in ``source`` and then in the built-in set; None adds none.
    """
    if isinstance(personas, str | Path):
        source, personas = personas, None
    src = Path(source) if source is not None else builtin_personas_dir()
    every = load_persona_statements(src, personas)
    names = sorted({s.persona for s in every} - ({background} if background else set()))
    if personas is not None and background in set(personas):
        raise UsageError(f"'{background}' is the background set; leave it out of personas or pass background=None")
    gen = rng(seed, "statements")
    chosen: list[PersonaStatement] = []
    for name in names:
        chosen += _sample([s for s in every if s.persona == name and s.positive], n_per_persona, gen)
    if background == "negative":
        neg = [PersonaStatement("negative", s.statement, False) for s in every if not s.positive]
        chosen += _sample(neg, n_per_persona, gen)
    elif background is not None:
        where = src if (src.is_dir() and (src / f"{background}.jsonl").exists()) else builtin_personas_dir()
        bg = [s for s in load_persona_statements(where, [background]) if s.positive]
        chosen += _sample(bg, n_per_persona, gen)
    return chosen


def select_stance_statements(
    personas: Sequence[str] | str | Path | None,
    *,
    source: str | Path | None = None,
    n_per_persona: int = 60,
    seed: int = 0,
) -> list[PersonaStatement]:
    """Per persona, as many endorsed as rejected statements (up to ``n_per_persona`` each), sampled reproducibly.

    The stance contrast: ``positive`` statements are those the persona would say
    (``answer_matching_behavior == " Yes"``), the others those it would reject. Both sides of a
    persona have the same size, ``min(n_per_persona, endorsed, rejected)``, so neither the persona
    nor its topic predicts the stance. ``personas`` as in `select_statements`; with None, personas
    without rejected statements (the neutral set) are left out, while a named one is an error.
    """
    if isinstance(personas, str | Path):
        source, personas = personas, None
    src = Path(source) if source is not None else builtin_personas_dir()
    every = load_persona_statements(src, personas)
    gen = rng(seed, "stance_statements")
    chosen: list[PersonaStatement] = []
    for name in sorted({s.persona for s in every}):
        pos = [s for s in every if s.persona == name and s.positive]
        neg = [s for s in every if s.persona == name and not s.positive]
        k = min(n_per_persona, len(pos), len(neg))
        if k == 0:
            if personas is None:
                continue
            raise UsageError(f"Persona {name!r} has no {'rejected' if pos else 'endorsed'} statements "
                             "(answer_matching_behavior ' No' / ' Yes'); the stance contrast needs both")
        chosen += _sample(pos, k, gen) + _sample(neg, k, gen)
    if not chosen:
        raise UsageError(f"No persona in {src} has both endorsed and rejected statements")
    return chosen


def localize(
    model: ModelAdapter,
    personas: Sequence[str] | str | Path | None = None,
    *,
    source: str | Path | None = None,
    framing: Framing = "system",
    contrast: Contrast = "personas",
    position: Literal["last", "prompt_mean"] = "last",
    n_per_persona: int = 60,
    folds: int = 5,
    seed: int = 0,
    probes: Sequence[str] = PROBES,
    background: str | None = "neutral",
    layers: Any = "all",
    batch_size: int | None = None,
    cache: bool | str | Path = True,
    progress: bool = False,
    **measure: Any,
) -> LocalizationResult:
    """Find the layers where personas (or a persona's stance) separate in ``model``'s residual stream.

    Args:
        model: A loaded `ModelAdapter`.
        personas: See `select_statements`.
        source: Folder or JSONL file of persona statements when ``personas`` is a list of names.
        framing: How a statement becomes a prompt (see `frame_prompt`).
        contrast: ``"personas"``: which persona a statement belongs to (positive statements);
            ``"stance"``: endorsed vs rejected statements of each persona, pooled over personas
            (see `select_stance_statements`; no background set).
        position: ``"last"`` prompt token (the paper) or ``"prompt_mean"``.
        n_per_persona: Positive statements per persona (and background rows), sampled with ``seed``;
            in the stance contrast, statements per side and persona (capped by the rejected ones).
        folds: Stratified CV folds.
        seed: Seed of sampling, folds, probes and bootstrap.
        probes: Probes to run (see `localize_activations`).
        background: Reference set (see `select_statements`); ignored by the stance contrast.
        layers: Layers to read ``resid_post`` at (``"all"`` or what `model.sites` accepts).
        batch_size: Prompts per forward pass.
        cache: Activation cache (see `personascope.store.collect`).
        progress: Show progress bars.
        **measure: Passed on to `localize_activations` (band_frac, n_boot, top_k, n_permutations, ...).

    Returns:
        A `LocalizationResult` with the bag-of-words baseline of the same statements.

    """
    from ..sites import Position
    from ..store import collect

    if contrast == "stance":
        chosen = select_stance_statements(personas, source=source, n_per_persona=n_per_persona, seed=seed)
        labels = [ENDORSE if s.positive else REJECT for s in chosen]
        groups: list[str] | None = [s.persona for s in chosen]
        background = None
    elif contrast == "personas":
        chosen = select_statements(personas, source=source, background=background,
                                   n_per_persona=n_per_persona, seed=seed)
        labels, groups = [s.persona for s in chosen], None
    else:
        raise UsageError(f"contrast must be 'personas' or 'stance', got {contrast!r}")
    prompts = [frame_prompt(model, s.statement, framing) for s in chosen]
    pos = Position(position)
    acts = collect(model, prompts, model.sites(layers), [pos], labels=labels, batch_size=batch_size,
                   cache=cache, progress=progress, method=f"localize:{framing}")[pos]
    params: dict[str, Any] = {
        "framing": framing, "position": position, "n_per_persona": n_per_persona,
        "statements_hash": stable_hash([[s.persona, s.statement, s.positive] for s in chosen]),
        "source": str(source if source is not None else (personas if isinstance(personas, str | Path)
                                                          else "builtin")),
    }
    if groups is not None:
        params["per_persona"] = dict(Counter(groups))
    return localize_activations(acts, folds=folds, seed=seed, probes=probes, background=background,
                                texts=[s.statement for s in chosen], groups=groups, contrast=contrast,
                                params=params, **measure)
