"""Figures of the probes stage: separability curves, overlap and CKA heatmaps, PCA scatters.

Every function builds a `matplotlib.figure.Figure` with the non-interactive Agg canvas (never
pyplot, so nothing opens a window or touches global figure state) and returns it; show it in a
notebook by leaving it as the cell's value, or write it with ``fig.savefig`` or `save_all`.

Text from the data (persona names, model ids) is drawn literally: dollar signs are escaped so a
name never turns into mathtext, and the SVG writer escapes ``&``, ``<`` and ``>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import UsageError

if TYPE_CHECKING:
    from ..store import ActivationSet
    from .localize import LocalizationResult

PLOT_NAMES = ("separability", "overlap", "cka")
#: Figures `save_all` writes only when the result has them (a bag-of-words baseline).
OPTIONAL_PLOT_NAMES = ("above_lexical",)


def _text(s: object) -> str:
    """The text of ``s`` with every ``$`` escaped, so matplotlib draws it literally."""
    return str(s).replace("$", r"\$")


def _figure(figsize: tuple[float, float]) -> Figure:
    """A new figure on an Agg canvas (no pyplot)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _root(ax: Axes) -> Figure:
    """The top-level figure that holds ``ax`` (through any subfigures)."""
    fig: Any = ax.figure
    while not isinstance(fig, Figure):
        fig = fig.figure
    return fig


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return _root(ax), ax
    fig = _figure(figsize)
    return fig, fig.add_subplot()


def _model_id(result: LocalizationResult) -> str:
    return str(result.provenance.get("model", {}).get("id", "?"))


def _depth_x(layers: Sequence[int], n_layers: int, relative: bool) -> tuple[np.ndarray, float]:
    """The x positions of ``layers`` and the width of one layer on that axis.

    Relative depth is ``(layer + 1) / n_layers``: the share of the model's blocks done after the
    layer, in (0, 1]; it matches the end of `LocalizationResult.band_fraction`.
    """
    x = np.asarray(layers, dtype=float)
    if relative:
        return (x + 1.0) / n_layers, 1.0 / n_layers
    return x, 1.0


def separability_curve(
    result: LocalizationResult,
    ax: Axes | None = None,
    relative_depth: bool = False,
    label: str | None = None,
) -> Figure:
    """Probe accuracy by layer, with its bootstrap CI, the controls and the localized band.

    Draws the logistic-regression accuracy with its 95% CI as a shaded band, the ExtraTrees
    accuracy when it was run, the shuffled-label control (dashed), chance (a horizontal line), the
    bag-of-words baseline (a dash-dot line, when measured) and the localized band (shaded behind
    everything).

    Args:
        result: A `LocalizationResult`.
        ax: Axes to draw into; a new figure when None.
        relative_depth: x is ``(layer + 1) / n_layers`` (fraction of depth) instead of the layer.
        label: Legend label of the logistic-regression curve (default ``"logistic regression"``).

    Returns:
        The figure holding the axes.

    """
    fig, ax = _axes(ax, (6.4, 4.0))
    rows = result.layers
    x, step = _depth_x([r.layer for r in rows], result.n_layers, relative_depth)
    (b0, b1), _ = _depth_x(list(result.band), result.n_layers, relative_depth)
    ax.axvspan(b0 - step / 2, b1 + step / 2, color="0.88", zorder=0,
               label=f"localized band ({result.band[0]}-{result.band[1]})")
    lo = np.array([r.accuracy_ci[0] for r in rows])
    hi = np.array([r.accuracy_ci[1] for r in rows])
    ax.fill_between(x, lo, hi, color="C0", alpha=0.25, linewidth=0, label="95% CI")
    ax.plot(x, [r.accuracy for r in rows], "o-", color="C0", markersize=3,
            label=_text(label) if label is not None else "logistic regression")
    if any(r.extratrees_accuracy is not None for r in rows):
        et = [np.nan if r.extratrees_accuracy is None else r.extratrees_accuracy for r in rows]
        ax.plot(x, et, "s-", color="C1", markersize=3, label="ExtraTrees")
    ax.plot(x, [r.control_accuracy for r in rows], "--", color="0.45", label="shuffled-label control")
    ax.axhline(rows[0].chance, color="k", linestyle=":", linewidth=1, label="chance")
    if result.lexical_accuracy is not None:
        ax.axhline(result.lexical_accuracy, color="C2", linestyle="-.", linewidth=1.2,
                   label=f"bag-of-words baseline ({result.lexical_accuracy:.2f})")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("relative depth ((layer + 1) / n_layers)" if relative_depth else "layer")
    ax.set_ylabel("probe accuracy (CV)")
    ax.set_title(_text(f"Persona separability: {_model_id(result)}"))
    ax.legend(loc="best", fontsize="small")
    return fig


def above_lexical_curve(result: LocalizationResult, ax: Axes | None = None) -> Figure:
    """Accuracy above the bag-of-words baseline by layer, with its paired bootstrap CI.

    Zero is "words alone"; the layers whose accuracy CI overlaps the best layer's are marked
    along the bottom (the best layer's uncertainty), the band is shaded behind.

    Args:
        result: A `LocalizationResult` measured with texts (``lexical_accuracy`` set).
        ax: Axes to draw into; a new figure when None.

    Returns:
        The figure holding the axes.

    """
    if result.lexical_accuracy is None:
        raise UsageError("This result has no bag-of-words baseline (localize_activations was given no texts)")
    fig, ax = _axes(ax, (6.4, 4.0))
    rows = result.layers
    x = np.array([r.layer for r in rows], dtype=float)
    y = np.array([np.nan if r.above_lexical is None else r.above_lexical for r in rows])
    lo = np.array([np.nan if r.above_lexical_ci is None else r.above_lexical_ci[0] for r in rows])
    hi = np.array([np.nan if r.above_lexical_ci is None else r.above_lexical_ci[1] for r in rows])
    ax.axvspan(result.band[0] - 0.5, result.band[1] + 0.5, color="0.88", zorder=0,
               label=f"localized band ({result.band[0]}-{result.band[1]})")
    ax.fill_between(x, lo, hi, color="C0", alpha=0.25, linewidth=0, label="paired 95% CI")
    ax.plot(x, y, "o-", color="C0", markersize=3, label="accuracy - bag-of-words accuracy")
    ax.axhline(0.0, color="C2", linestyle="-.", linewidth=1.2, label="words alone")
    cand = [r.layer for r in rows if r.layer in set(result.best_layer_set)]
    if cand:
        bottom = float(np.nanmin(lo)) if np.isfinite(lo).any() else -0.1
        ax.plot(cand, [bottom] * len(cand), "|", color="C3", markersize=10,
                label=f"within the best layer's CI (best {result.best_layer})")
    ax.set_xlabel("layer")
    ax.set_ylabel("accuracy above words (CV)")
    ax.set_title(_text(f"What activations add over words: {_model_id(result)}"))
    ax.legend(loc="best", fontsize="small")
    return fig


def compare_curves(results: Mapping[str, LocalizationResult], ax: Axes | None = None) -> Figure:
    """Several models' logistic-regression accuracy curves on one relative-depth axis.

    x is ``(layer + 1) / n_layers`` of each model, so models of different depth line up; each
    curve carries its bootstrap CI as a faint band and its localized band as a thick bar at the
    top of the plot.

    Args:
        results: Legend label (e.g. the model name) -> `LocalizationResult`.
        ax: Axes to draw into; a new figure when None.

    Returns:
        The figure holding the axes.

    """
    if not results:
        raise UsageError("compare_curves needs at least one result")
    fig, ax = _axes(ax, (6.4, 4.0))
    for i, (name, res) in enumerate(results.items()):
        color = f"C{i % 10}"
        x, step = _depth_x([r.layer for r in res.layers], res.n_layers, True)
        lo = [r.accuracy_ci[0] for r in res.layers]
        hi = [r.accuracy_ci[1] for r in res.layers]
        ax.fill_between(x, lo, hi, color=color, alpha=0.12, linewidth=0)
        ax.plot(x, [r.accuracy for r in res.layers], "o-", color=color, markersize=3, label=_text(name))
        (b0, b1), _ = _depth_x(list(res.band), res.n_layers, True)
        ax.hlines(1.0 - 0.012 * i, b0 - step / 2, b1 + step / 2, color=color, linewidth=3)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("relative depth ((layer + 1) / n_layers)")
    ax.set_ylabel("logistic-regression accuracy (CV)")
    ax.set_title("Persona separability by depth (bars: localized bands)")
    ax.legend(loc="best", fontsize="small")
    return fig


def _heatmap(
    ax: Axes,
    mat: np.ndarray,
    ticks: Sequence[str],
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    annotate: bool,
    fmt: str = "{:.2f}",
    xrotation: float = 45,
) -> Any:
    """``mat`` as an image on ``ax`` with tick labels and (optionally) the values written in."""
    im = ax.imshow(mat, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    n = len(ticks)
    labels = [_text(t) for t in ticks]
    ax.set_xticks(range(n), labels, rotation=xrotation, ha="right" if xrotation else "center", rotation_mode="anchor")
    ax.set_yticks(range(n), labels)
    if annotate:
        cm = colormaps[cmap]
        size = "small" if n <= 8 else "x-small"
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                v = mat[i, j]
                if not np.isfinite(v):
                    continue
                r, g, b, _ = cm((v - vmin) / (vmax - vmin) if vmax > vmin else 0.5)
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=size,
                        color="white" if dark else "black")
    return im


def overlap_heatmaps(result: LocalizationResult) -> Figure:
    """The overlap analysis at the best layer as three annotated heatmaps.

    Panels: the row-normalized CV confusion (true x predicted), the cosine between the personas'
    centroid shifts from the reference, and the Jaccard overlap of their top units.

    Args:
        result: A `LocalizationResult`.

    Returns:
        A figure with three axes, one per panel.

    """
    ov = result.overlap
    n = len(ov.personas)
    side = max(3.6, 0.45 * n + 2.0)
    fig = _figure((3 * side, side + 0.6))
    axes = fig.subplots(1, 3)
    annotate = n <= 20
    _heatmap(axes[0], np.array(ov.confusion, dtype=float), ov.personas, cmap="Blues", vmin=0, vmax=1,
             annotate=annotate)
    axes[0].set(title="CV confusion (row-normalized)", xlabel="predicted", ylabel="true")
    _heatmap(axes[1], np.array(ov.centroid_cosine, dtype=float), ov.personas, cmap="RdBu_r", vmin=-1,
             vmax=1, annotate=annotate)
    axes[1].set_title("Cosine of centroid shifts")
    _heatmap(axes[2], np.array(ov.jaccard, dtype=float), ov.personas, cmap="Greens", vmin=0, vmax=1,
             annotate=annotate)
    axes[2].set_title(f"Jaccard of top-{ov.top_k} units")
    fig.suptitle(_text(f"Persona overlap at layer {ov.layer}: {_model_id(result)}"))
    return fig


def cka_heatmap(result: LocalizationResult) -> Figure:
    """Linear CKA between the layers' representations, with the localized band outlined.

    Args:
        result: A `LocalizationResult`.

    Returns:
        A figure with the heatmap axes and its colorbar axes.

    """
    mat = np.array(result.cka, dtype=float)
    layers = [r.layer for r in result.layers]
    n = len(layers)
    side = max(4.0, min(0.3 * n + 2.5, 10.0))
    fig = _figure((side + 1.0, side))
    ax = fig.add_subplot()
    im = _heatmap(ax, mat, [str(layer) for layer in layers], cmap="viridis", vmin=0, vmax=1,
                  annotate=n <= 12, xrotation=0)
    if n > 24:  # Keep every k-th tick readable.
        k = int(np.ceil(n / 24))
        ax.set_xticks(range(0, n, k), [str(layers[i]) for i in range(0, n, k)], rotation=0, ha="center")
        ax.set_yticks(range(0, n, k), [str(layers[i]) for i in range(0, n, k)])
    if result.band[0] in layers and result.band[1] in layers:
        i0, i1 = layers.index(result.band[0]), layers.index(result.band[1])
        a, w = i0 - 0.5, i1 - i0 + 1
        ax.add_patch(Rectangle((a, a), w, w, fill=False, edgecolor="red", linewidth=1.5, label="localized band"))
    ax.set(xlabel="layer", ylabel="layer")
    ax.set_title(_text(f"Linear CKA between layers: {_model_id(result)}"))
    fig.colorbar(im, ax=ax, shrink=0.8, label="CKA")
    return fig


def pca_scatter(
    acts: ActivationSet,
    layer: int,
    labels: Sequence[str] | np.ndarray | None = None,
    n_components: int = 2,
) -> Figure:
    """PCA of the activations at one layer, one colour per persona label.

    Args:
        acts: Activations (any number of rows per label).
        layer: Layer whose ``resid_post`` (or a `Site`) is projected; must be in ``acts``.
        labels: One label per row; default ``acts.row_labels`` (no colouring when those are None).
        n_components: 2 (a plane) or 3 (a 3-D scatter).

    Returns:
        A figure with one axes.

    """
    from sklearn.decomposition import PCA

    if n_components not in (2, 3):
        raise UsageError(f"n_components must be 2 or 3, got {n_components}")
    x = acts.acts[:, acts.site_index(layer)].float().numpy().astype(np.float64)
    if labels is None:
        labels = acts.row_labels
    lab = np.full(len(x), "all", dtype=object) if labels is None else np.asarray(labels, dtype=object)
    if len(lab) != len(x):
        raise UsageError(f"labels has {len(lab)} entries for {len(x)} rows")
    if len(x) < n_components:
        raise UsageError(f"PCA with {n_components} components needs at least that many rows, got {len(x)}")
    pca = PCA(n_components=n_components, random_state=0)
    z = pca.fit_transform(x)
    var = pca.explained_variance_ratio_
    fig = _figure((6.4, 5.0))
    ax: Any = fig.add_subplot(projection="3d" if n_components == 3 else None)  # 2D or 3D axes
    names = sorted({str(v) for v in lab})
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    lab_str = lab.astype(str)
    for i, name in enumerate(names):
        sel = lab_str == name
        ax.scatter(*(z[sel, c] for c in range(n_components)), s=12, alpha=0.75,
                   color=cmap(i % cmap.N), label=_text(name))
    ax.set_xlabel(f"PC1 ({var[0]:.0%})")
    ax.set_ylabel(f"PC2 ({var[1]:.0%})")
    if n_components == 3:
        ax.set_zlabel(f"PC3 ({var[2]:.0%})")
    ax.set_title(_text(f"PCA at layer {acts.sites[acts.site_index(layer)]}: {acts.provenance.model.id}"))
    if len(names) > 1:
        ax.legend(loc="best", fontsize="small", markerscale=1.5)
    return fig


def save_all(
    result: LocalizationResult,
    out_dir: str | Path,
    fmt: str | Sequence[str] = ("png", "svg"),
    dpi: int = 150,
) -> list[Path]:
    """Write the separability curve, the overlap heatmaps, the CKA heatmap (and the above-words curve) to ``out_dir``.

    Files are ``separability.<fmt>``, ``overlap.<fmt>`` and ``cka.<fmt>`` for each format, and
    ``above_lexical.<fmt>`` when the result has a bag-of-words baseline; SVGs carry no date and
    fixed element ids, so the same result writes the same file.

    Args:
        result: A `LocalizationResult`.
        out_dir: Folder to write into (created if missing).
        fmt: One format or several (anything matplotlib's Agg canvas writes: png, svg, pdf, ...).
        dpi: Resolution of raster formats.

    Returns:
        The paths written, figure by figure.

    """
    fmts = [fmt] if isinstance(fmt, str) else list(fmt)
    supported = FigureCanvasAgg.get_supported_filetypes()
    bad = [f for f in fmts if f.lower() not in supported]
    if bad or not fmts:
        raise UsageError(f"Unsupported figure format(s) {bad or fmts}; choose from {sorted(supported)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "separability": separability_curve(result),
        "overlap": overlap_heatmaps(result),
        "cka": cka_heatmap(result),
    }
    if result.lexical_accuracy is not None:
        figures["above_lexical"] = above_lexical_curve(result)
    written: list[Path] = []
    with rc_context({"svg.hashsalt": "personascope"}):
        for name, fig in figures.items():
            for f in fmts:
                path = out / f"{name}.{f.lower()}"
                meta = {"Date": None} if f.lower() == "svg" else None
                fig.savefig(path, format=f.lower(), dpi=dpi, metadata=meta)
                written.append(path)
    return written
