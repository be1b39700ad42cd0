"""Probe-stage figures on small synthetic activations (no model, Agg canvas only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_activation_set
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure

from personascope.errors import UsageError
from personascope.probes import plots
from personascope.probes.localize import LocalizationResult, localize_activations
from personascope.store import ActivationSet

N_LAYERS, D, PER = 8, 16, 20
PLANTED = range(4, 7)


_fake_set = fake_activation_set


def _planted(personas: list[str], n_layers: int = N_LAYERS, seed: int = 0) -> ActivationSet:
    """Gaussian noise plus a neutral background; persona means differ only in PLANTED layers."""
    rng = np.random.default_rng(seed)
    names = personas + ["neutral"]
    labels = [p for p in names for _ in range(PER)]
    x = rng.normal(size=(len(labels), n_layers, D))
    means = rng.normal(size=(len(personas), D)) * 2.0
    for i in range(len(personas)):
        x[i * PER:(i + 1) * PER, PLANTED.start:PLANTED.stop] += means[i]
    return _fake_set(x, labels)


def _localize(acts: ActivationSet, **kw: object) -> LocalizationResult:
    return localize_activations(acts, folds=3, n_boot=50, n_estimators=10, top_k=3, **kw)


@pytest.fixture(scope="module")
def acts() -> ActivationSet:
    return _planted(["a", "b", "c"])


@pytest.fixture(scope="module")
def result(acts: ActivationSet) -> LocalizationResult:
    return _localize(acts)


def test_no_pyplot_loaded(result: LocalizationResult, tmp_path: Path) -> None:
    # In a fresh interpreter: other tests in the session may have imported pyplot themselves.
    src = tmp_path / "result.json"
    src.write_text(result.model_dump_json())
    code = (
        "import sys, pathlib\n"
        "from personascope.probes.localize import LocalizationResult\n"
        f"r = LocalizationResult.model_validate_json(pathlib.Path({str(src)!r}).read_text())\n"
        f"r.save_plots({str(tmp_path / 'out')!r}, fmt='png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_separability_curve(result: LocalizationResult) -> None:
    fig = plots.separability_curve(result)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) >= 4  # logreg, ExtraTrees, control, chance
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the CI band
    assert any(ln.get_linestyle() == "--" for ln in lines)  # control
    assert any(np.allclose(ln.get_ydata(), result.layers[0].chance) for ln in lines)  # chance line
    assert list(lines[0].get_xdata()) == [r.layer for r in result.layers]
    assert len(ax.patches) >= 1  # the localized band
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ExtraTrees" in labels and "chance" in labels
    fig.canvas.draw()


def test_separability_curve_relative_and_logreg_only(acts: ActivationSet) -> None:
    res = _localize(acts, probes=("logreg",))
    fig = plots.separability_curve(res, relative_depth=True, label="my $probe$")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3  # logreg, control, chance: no ExtraTrees
    x = np.asarray(lines[0].get_xdata())
    assert np.allclose(x, (np.arange(N_LAYERS) + 1) / N_LAYERS)
    fig.canvas.draw()


def test_curve_into_existing_axes(result: LocalizationResult) -> None:
    fig = plots._figure((8, 4))
    axes = fig.subplots(1, 2)
    assert plots.separability_curve(result, ax=axes[1]) is fig
    assert len(axes[0].get_lines()) == 0 and len(axes[1].get_lines()) >= 3


def test_compare_curves_relative_depth(result: LocalizationResult) -> None:
    deeper = _localize(_planted(["a", "b"], n_layers=12, seed=1), probes=("logreg",))
    fig = plots.compare_curves({"small": result, "deep": deeper})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    curves = [ln for ln in ax.get_lines() if ln.get_label() in ("small", "deep")]
    assert len(curves) == 2
    for ln in curves:
        x = np.asarray(ln.get_xdata())
        assert np.all(x > 0) and np.all(x <= 1) and x[-1] == pytest.approx(1.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["small", "deep"]
    fig.canvas.draw()
    with pytest.raises(UsageError):
        plots.compare_curves({})


def test_overlap_heatmaps(result: LocalizationResult) -> None:
    fig = plots.overlap_heatmaps(result)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    n = len(result.personas)
    for ax in fig.axes:
        assert len(ax.images) == 1 and ax.images[0].get_array().shape == (n, n)
        assert [t.get_text() for t in ax.get_yticklabels()] == result.personas
        assert len(ax.texts) == n * n  # every value annotated
    conf = np.array(result.overlap.confusion)
    assert fig.axes[0].texts[0].get_text() == f"{conf[0, 0]:.2f}"
    fig.canvas.draw()


def test_cka_heatmap(result: LocalizationResult) -> None:
    fig = plots.cka_heatmap(result)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap + colorbar
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (N_LAYERS, N_LAYERS)
    assert len(ax.patches) == 1  # the band outline
    fig.canvas.draw()


def test_pca_scatter(acts: ActivationSet) -> None:
    fig = plots.pca_scatter(acts, layer=5)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 4  # a, b, c, neutral
    assert sum(len(s.get_offsets()) for s in scatters) == len(acts)
    assert ax.get_xlabel().startswith("PC1")
    fig3 = plots.pca_scatter(acts, layer=5, labels=["x"] * len(acts), n_components=3)
    assert fig3.axes[0].name == "3d" and fig3.axes[0].get_legend() is None
    fig3.canvas.draw()
    with pytest.raises(UsageError):
        plots.pca_scatter(acts, layer=5, n_components=4)
    with pytest.raises(UsageError):
        plots.pca_scatter(acts, layer=5, labels=["x"])


def test_save_all_and_methods(result: LocalizationResult, tmp_path: Path) -> None:
    paths = result.save_plots(tmp_path / "figs")
    assert [p.name for p in paths] == [f"{n}.{f}" for n in plots.PLOT_NAMES for f in ("png", "svg")]
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()
    # Same result, same SVG bytes (no date, fixed ids).
    again = plots.save_all(result, tmp_path / "again")
    assert [p.read_bytes() for p in again if p.suffix == ".svg"] == [
        p.read_bytes() for p in paths if p.suffix == ".svg"]
    assert len(result.plot_curve(relative_depth=True).axes) == 1
    assert len(result.plot_overlap().axes) == 3
    assert len(result.plot_cka().axes) == 2
    with pytest.raises(UsageError):
        plots.save_all(result, tmp_path / "bad", fmt="nope")


def test_svg_escapes_persona_names(tmp_path: Path) -> None:
    res = _localize(_planted(["<script>", "b&c", "$x^$"]), probes=("logreg",))
    paths = plots.save_all(res, tmp_path, fmt="svg")
    text = (tmp_path / "overlap.svg").read_text()
    assert [p.name for p in paths] == ["separability.svg", "overlap.svg", "cka.svg"]
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "b&amp;c" in text and "b&c" not in text
    assert "$x^$" in text  # drawn literally, not parsed as mathtext


@pytest.fixture(scope="module")
def worded(acts: ActivationSet) -> LocalizationResult:
    """The planted set with statements whose words say nothing about the persona (a lexical baseline near chance)."""
    rng = np.random.default_rng(0)
    vocab = "i we you think say often never about this that day work home".split()
    texts = [" ".join(rng.choice(vocab, size=8)) for _ in range(len(acts))]
    return _localize(acts, probes=("logreg",), texts=texts)


def test_curve_draws_the_lexical_baseline(result: LocalizationResult, worded: LocalizationResult) -> None:
    labels = [t.get_text() for t in plots.separability_curve(worded).axes[0].get_legend().get_texts()]
    assert any(t.startswith("bag-of-words baseline") for t in labels)
    assert not any("bag-of-words" in t for t in
                   [t.get_text() for t in plots.separability_curve(result).axes[0].get_legend().get_texts()])


def test_above_lexical_curve(result: LocalizationResult, worded: LocalizationResult, tmp_path: Path) -> None:
    fig = plots.above_lexical_curve(worded)
    ax = fig.axes[0]
    curve = next(ln for ln in ax.get_lines() if ln.get_label().startswith("accuracy - bag-of-words"))
    assert np.allclose(curve.get_ydata(), [r.above_lexical for r in worded.layers])
    assert any(np.allclose(ln.get_ydata(), 0.0) for ln in ax.get_lines())  # "words alone"
    marks = next(ln for ln in ax.get_lines() if ln.get_label().startswith("within the best layer's CI"))
    assert list(marks.get_xdata()) == worded.best_layer_set
    fig.canvas.draw()
    with pytest.raises(UsageError, match="bag-of-words"):
        plots.above_lexical_curve(result)
    names = [p.name for p in plots.save_all(worded, tmp_path, fmt="png")]
    assert names == [f"{n}.png" for n in (*plots.PLOT_NAMES, *plots.OPTIONAL_PLOT_NAMES)]
    assert "above words" in worded._repr_html_() and "Permutation null" in worded._repr_html_()
