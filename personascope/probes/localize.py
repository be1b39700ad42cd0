"""Localize persona representations by layer (after Cintas et al., AIES 2025).

`localize` builds prompts from persona statements, reads one activation per prompt at every
layer in one pass per batch, and hands them to `localize_activations`, which does all the
measuring (so it runs on saved or synthetic activations without a model): per-layer probe
accuracy against chance and a shuffled-label control, cluster measures, the layer band where
personas separate, a bootstrap band on the accuracy curve, layer-by-layer CKA, and an overlap
analysis between personas at the best layer.
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
from ..stats import rng
from . import metrics as M
from .metrics import linear_probe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..backends.base import ModelAdapter
    from ..store import ActivationSet

Framing = Literal["system", "user", "says"]
PROBES = ("logreg", "extratrees")
BAND_RULE = (
    "contiguous layers around the best logistic-regression accuracy where "
    "accuracy >= chance + frac * (max - chance)"
)
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
    control_accuracy: float = Field(description="Same probe on shuffled labels.")
    selectivity: float = Field(description="accuracy - control_accuracy.")
    chance: float = Field(description="Share of the largest class.")
    silhouette: float
    fisher: float
    centroid_distance: float = Field(description="Mean pairwise cosine distance of class centroids.")


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


class LocalizationResult(BaseModel):
    """Where in depth personas become separable, with controls, uncertainty and overlap."""

    personas: list[str]
    counts: dict[str, int]
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
        head = (
            f"<p><b>Persona localization</b> on {escape(str(self.provenance.get('model', {}).get('id', '?')))}: "
            f"best layer {self.best_layer}, band {self.band[0]}-{self.band[1]} "
            f"({self.band_fraction[0]:.2f}-{self.band_fraction[1]:.2f} of depth). Personas: "
            + ", ".join(f"{escape(p)} ({self.counts.get(p, 0)})" for p in self.personas)
            + ".</p>"
        )
        bold = ' style="font-weight:bold"'
        rows = "".join(
            f"<tr{bold if self.band[0] <= r.layer <= self.band[1] else ''}>"
            f"<td>{r.layer}</td><td>{r.accuracy:.3f}</td>"
            f"<td>{r.accuracy_ci[0]:.3f}-{r.accuracy_ci[1]:.3f}</td>"
            f"<td>{'' if r.extratrees_accuracy is None else f'{r.extratrees_accuracy:.3f}'}</td>"
            f"<td>{r.control_accuracy:.3f}</td><td>{r.chance:.3f}</td><td>{r.silhouette:.3f}</td></tr>"
            for r in self.layers
        )
        return (
            head + "<table><tr><th>layer</th><th>logreg</th><th>95% CI</th><th>extratrees</th>"
            "<th>control</th><th>chance</th><th>silhouette</th></tr>" + rows + "</table>"
        )


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
    params: dict[str, Any] | None = None,
) -> LocalizationResult:
    """Measure per-layer persona separability of labelled activations.

    Args:
        acts: Activations with one label per row (`ActivationSet.row_labels`).
        folds: Stratified CV folds for every probe.
        seed: Seed of folds, label shuffle, probes and bootstrap.
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
        params: Extra method parameters to record in the provenance.

    Returns:
        A `LocalizationResult`.

    """
    unknown = set(probes) - set(PROBES)
    if unknown or "logreg" not in probes:
        raise UsageError(f"probes must include 'logreg' and be among {PROBES}; got {tuple(probes)}")
    labels = acts.row_labels
    if labels is None:
        raise UsageError("The activation set has no labels; collect it with labels=[persona per prompt]")
    labels = labels.astype(str)
    is_bg = labels == background if background is not None else np.zeros(len(labels), bool)
    y = labels[~is_bg]
    personas = sorted(set(y.tolist()))
    if len(personas) < 2:
        raise UsageError(f"Need at least two personas to localize, got {personas}")
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
            pred, fold = M.cv_predict(x, y, linear_probe(seed), folds, seed)
            per_fold = [float((pred[fold == k] == y[fold == k]).mean()) for k in range(folds)]
            acc = float(np.mean(per_fold))
            ctl, _ = M.cv_accuracy(x, y_shuffled, linear_probe(seed), folds, seed)
            et = (
                M.cv_accuracy(x, y, extra_trees_probe(seed, n_estimators), folds, seed)[0]
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
        lo, hi = M.bootstrap_ci(np.stack(correct), n_boot=n_boot, seed=seed)
        cka = M.cka_matrix(X)

    for r, a, b in zip(rows, lo, hi, strict=True):
        r["accuracy_ci"] = (float(a), float(b))
    acc_curve = [r["accuracy"] for r in rows]
    start, end = M.localized_band(acc_curve, chance, band_frac)
    best = int(np.argmax(acc_curve))
    n_layers = int(acts.provenance.model.n_layers)
    band = (rows[start]["layer"], rows[end]["layer"])

    xb = X[:, best]
    if X_bg is not None:
        ref_name, bg_best = f"background '{background}' ({len(X_bg)} rows)", X_bg[:, best]
        center = bg_best.mean(0)
    else:
        # No background: one-vs-rest unit effects, centroid shifts from the mean persona centroid.
        ref_name, bg_best = "the other personas (one-vs-rest); centroids centered on their mean", None
        center = np.stack([xb[y == p].mean(0) for p in personas]).mean(0)
    units = M.top_units(xb, y, personas, k=top_k, background=bg_best)
    overlap = Overlap(
        layer=rows[best]["layer"], personas=personas,
        confusion=M.normalized_confusion(y, preds[best], personas).tolist(),
        centroid_cosine=M.centroid_cosine_matrix(xb, y, personas, center=center).tolist(),
        reference=ref_name, top_k=top_k, top_units={str(k): v for k, v in units.items()},
        jaccard=M.jaccard_matrix(units, personas).tolist(),
    )
    prov = acts.provenance.model_dump(mode="json")
    prov["localize"] = {
        "folds": folds, "seed": seed, "probes": list(probes), "background": background,
        "band_frac": band_frac, "n_boot": n_boot, "top_k": top_k, "n_estimators": n_estimators,
        "silhouette_metric": silhouette_metric, "label_hash": stable_hash(labels.tolist()),
        **(params or {}),
    }
    return LocalizationResult(
        personas=personas, counts=counts, n_layers=n_layers,
        layers=[LayerScores(**r) for r in rows], best_layer=rows[best]["layer"], band=band,
        band_fraction=(band[0] / n_layers, (band[1] + 1) / n_layers), band_frac=band_frac,
        cka=cka.tolist(), overlap=overlap, provenance=prov,
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


def localize(
    model: ModelAdapter,
    personas: Sequence[str] | str | Path | None = None,
    *,
    source: str | Path | None = None,
    framing: Framing = "system",
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
    """Find the layers where personas separate in ``model``'s residual stream.

    Args:
        model: A loaded `ModelAdapter`.
        personas: See `select_statements`.
        source: Folder or JSONL file of persona statements when ``personas`` is a list of names.
        framing: How a statement becomes a prompt (see `frame_prompt`).
        position: ``"last"`` prompt token (the paper) or ``"prompt_mean"``.
        n_per_persona: Positive statements per persona (and background rows), sampled with ``seed``.
        folds: Stratified CV folds.
        seed: Seed of sampling, folds, probes and bootstrap.
        probes: Probes to run (see `localize_activations`).
        background: Reference set (see `select_statements`).
        layers: Layers to read ``resid_post`` at (``"all"`` or what `model.sites` accepts).
        batch_size: Prompts per forward pass.
        cache: Activation cache (see `personascope.store.collect`).
        progress: Show progress bars.
        **measure: Passed on to `localize_activations` (band_frac, n_boot, top_k, ...).

    Returns:
        A `LocalizationResult`.

    """
    from ..sites import Position
    from ..store import collect

    chosen = select_statements(personas, source=source, background=background,
                               n_per_persona=n_per_persona, seed=seed)
    prompts = [frame_prompt(model, s.statement, framing) for s in chosen]
    labels = [s.persona for s in chosen]
    pos = Position(position)
    acts = collect(model, prompts, model.sites(layers), [pos], labels=labels, batch_size=batch_size,
                   cache=cache, progress=progress, method=f"localize:{framing}")[pos]
    params = {
        "framing": framing, "position": position, "n_per_persona": n_per_persona,
        "statements_hash": stable_hash([[s.persona, s.statement] for s in chosen]),
        "source": str(source if source is not None else (personas if isinstance(personas, str | Path)
                                                          else "builtin")),
    }
    return localize_activations(acts, folds=folds, seed=seed, probes=probes, background=background,
                                params=params, **measure)
