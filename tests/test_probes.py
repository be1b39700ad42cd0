"""Probes stage: metrics on hand-made data and localization on planted synthetic activations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, fake_activation_set

from personascope.probes import metrics as M
from personascope.probes.localize import LocalizationResult, localize_activations
from personascope.store import ActivationSet

N_LAYERS, D, PER = 12, 32, 40
PLANTED = range(7, 11)


_fake_set = fake_activation_set


def _planted(personas: list[str], background: bool = False, seed: int = 0) -> ActivationSet:
    """Gaussian noise; persona means differ only in layers 7-10."""
    rng = np.random.default_rng(seed)
    names = personas + (["neutral"] if background else [])
    labels = [p for p in names for _ in range(PER)]
    x = rng.normal(size=(len(labels), N_LAYERS, D))
    means = rng.normal(size=(len(personas), D)) * 1.5
    for i in range(len(personas)):
        rows = slice(i * PER, (i + 1) * PER)
        for layer in PLANTED:
            x[rows, layer] += means[i]
    return _fake_set(x, labels)


@pytest.fixture(scope="module")
def planted_result() -> LocalizationResult:
    acts = _planted(["a", "b", "c", "d"], background=True)
    return localize_activations(acts, n_boot=200, n_estimators=20, top_k=4)


def test_planted_band(planted_result: LocalizationResult) -> None:
    r = planted_result
    assert r.personas == ["a", "b", "c", "d"]
    assert r.counts == {p: PER for p in "abcd"}
    assert abs(r.band[0] - 7) <= 1 and abs(r.band[1] - 10) <= 1
    assert r.best_layer in PLANTED
    assert r.band_fraction == (r.band[0] / N_LAYERS, (r.band[1] + 1) / N_LAYERS)
    for s in r.layers:
        assert s.chance == pytest.approx(0.25)
        assert s.control_accuracy < 0.45
        lo, hi = s.accuracy_ci
        assert lo <= hi
        if s.layer in PLANTED:
            assert s.accuracy > 0.9 and s.extratrees_accuracy > 0.8
            assert s.silhouette > 0.05 and s.selectivity > 0.5
        else:
            assert s.accuracy < 0.45
    assert r.overlap.layer == r.best_layer
    conf = np.array(r.overlap.confusion)
    assert np.allclose(conf.sum(1), 1.0) and np.diag(conf).min() > 0.8
    assert "neutral" in r.overlap.reference
    cka = np.array(r.cka)
    assert cka.shape == (N_LAYERS, N_LAYERS) and np.allclose(np.diag(cka), 1.0)


def test_result_json_roundtrip_and_html(planted_result: LocalizationResult) -> None:
    again = LocalizationResult.model_validate_json(planted_result.model_dump_json())
    assert again == planted_result
    d = planted_result.to_dict()
    assert d["provenance"]["localize"]["seed"] == 0 and d["provenance"]["model"]["id"] == "fake"
    html = planted_result._repr_html_()
    assert "<table>" in html and "<td>7</td>" in html


def test_repr_html_escapes_persona_names() -> None:
    acts = _planted(["<script>alert(1)</script>", "b&c"])
    html = localize_activations(acts, probes=("logreg",), n_boot=50, background=None)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "b&amp;c" in html


def test_localize_rejects_bad_probes() -> None:
    with pytest.raises(ValueError, match="logreg"):
        localize_activations(_planted(["a", "b"]), probes=("extratrees",))


def test_linear_cka_invariances() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert M.linear_cka(x, x) == pytest.approx(1.0)
    assert M.linear_cka(x, x @ q) == pytest.approx(1.0)
    assert M.linear_cka(x, 3.7 * x + 2.0) == pytest.approx(1.0)
    assert M.linear_cka(x, rng.normal(size=(50, 8))) < 0.5
    mat = M.cka_matrix(np.stack([x, x @ q, rng.normal(size=(50, 8))], 1))
    assert mat.shape == (3, 3) and mat[0, 1] == pytest.approx(1.0) and mat[0, 2] < 0.5
    assert np.allclose(mat, mat.T)


def test_localized_band_rule() -> None:
    # chance 0.25, max 0.95 -> threshold 0.25 + 0.9 * 0.7 = 0.88
    curve = [0.25, 0.3, 0.5, 0.9, 0.95, 0.89, 0.6, 0.92]
    assert M.localized_band(curve, 0.25) == (3, 5)  # 0.92 is high but not contiguous
    assert M.localized_band(curve, 0.25, frac=0.0) == (0, 7)  # ">=": chance itself counts
    assert M.localized_band([0.2, 0.25, 0.2], 0.25) == (1, 1)  # nothing above chance
    assert M.localized_band([1.0, 1.0, 0.3], 0.25) == (0, 1)


def test_bootstrap_ci_brackets_accuracy() -> None:
    correct = np.r_[np.ones(80), np.zeros(20)]
    lo, hi = M.bootstrap_ci(correct, n_boot=500, seed=0)
    assert lo < 0.8 < hi and hi - lo < 0.25
    lo2, hi2 = M.bootstrap_ci(np.stack([correct, np.ones(100)]), n_boot=200)
    assert lo2.shape == (2,) and lo2[1] == hi2[1] == 1.0


def test_cv_accuracy_and_cluster_metrics() -> None:
    from personascope.probes.metrics import linear_probe

    rng = np.random.default_rng(0)
    y = np.repeat(["p", "q"], 30)
    x = rng.normal(size=(60, 5)) + np.where(y == "p", 3.0, -3.0)[:, None]
    mean, per_fold = M.cv_accuracy(x, y, linear_probe(), folds=5, seed=0)
    assert mean > 0.95 and len(per_fold) == 5
    assert M.silhouette(x, y, "euclidean") > 0.5 and M.fisher_ratio(x, y) > 1
    assert M.mean_centroid_distance(x, y) > 1.5  # opposite centroids: cosine distance near 2
    with pytest.raises(ValueError, match="folds"):
        M.cv_accuracy(x[[0, 1, 2, 30, 31, 32]], y[[0, 1, 2, 30, 31, 32]], linear_probe(), folds=5)
    with pytest.raises(ValueError, match="two classes"):
        M.cv_accuracy(x[:8], y[:8], linear_probe(), folds=2)


def test_top_unit_jaccard() -> None:
    rng = np.random.default_rng(0)
    n = 60
    bg = rng.normal(size=(n, D))
    shifts = {"a": (range(0, 4), 2.0), "b": (range(0, 4), -2.0), "c": (range(10, 14), 2.0),
              "d": (range(20, 24), 2.0)}
    xs, ys = [], []
    for name, (units, s) in shifts.items():
        x = rng.normal(size=(n, D))
        x[:, list(units)] += s
        xs.append(x)
        ys += [name] * n
    x, y = np.concatenate(xs), np.array(ys)
    classes = list(shifts)
    top = M.top_units(x, y, classes, k=4, background=bg)
    assert set(top["a"]) == set(range(4)) and set(top["c"]) == set(range(10, 14))
    jac = M.jaccard_matrix(top, classes)
    assert jac[0, 1] == 1.0 and jac[0, 2] == 0.0 and jac[2, 3] == 0.0
    # a and b move the same units in opposite directions: centroid shifts point opposite ways.
    cos = M.centroid_cosine_matrix(x, y, classes, center=bg.mean(0))
    assert cos[0, 1] < -0.8 and abs(cos[0, 2]) < 0.3


@pytest.mark.slow
def test_localize_smol(smol_nn) -> None:
    from personascope.probes.localize import localize

    src = SHARED_DATA / "anthropic-persona"
    if not src.is_dir():
        pytest.skip("shared anthropic-persona data not present")
    names = ["politically-conservative", "politically-liberal", "subscribes-to-utilitarianism",
             "subscribes-to-Islam"]
    r = localize(smol_nn, names, source=src, n_per_persona=40, probes=("logreg",), n_boot=200, top_k=10)
    best = next(s for s in r.layers if s.layer == r.best_layer)
    assert best.accuracy > best.chance + 0.2
    assert best.accuracy > best.control_accuracy
    assert r.n_layers == smol_nn.n_layers and len(r.layers) == smol_nn.n_layers
    assert r.provenance["localize"]["framing"] == "system"
    assert 0.0 <= r.band_fraction[0] < r.band_fraction[1] <= 1.0


def test_select_statements_and_framing() -> None:
    from personascope.errors import UsageError
    from personascope.probes.localize import frame_prompt, select_statements

    chosen = select_statements(["utilitarian", "liberal"], n_per_persona=5, seed=1)
    got = {p: sum(s.persona == p for s in chosen) for p in ("utilitarian", "liberal", "neutral")}
    assert got == {"utilitarian": 5, "liberal": 5, "neutral": 5}
    assert all(s.positive for s in chosen)
    assert chosen == select_statements(["utilitarian", "liberal"], n_per_persona=5, seed=1)
    neg = select_statements(["utilitarian"], n_per_persona=3, background="negative")
    assert sum(s.persona == "negative" and not s.positive for s in neg) == 3
    every = select_statements(None, n_per_persona=2, background="neutral")
    assert sum(s.persona == "neutral" for s in every) == 2 and len({s.persona for s in every}) == 9
    with pytest.raises(UsageError, match="background"):
        select_statements(["neutral", "liberal"])

    class Fake:
        def format_chat(self, user=None, system=None):
            return f"S={system}|U={user}"

    assert frame_prompt(Fake(), "I lie.", "system") == "S=I lie.|U=What do you think?"
    assert frame_prompt(Fake(), "I lie.", "user") == "S=None|U=I lie."
    assert frame_prompt(Fake(), "I lie.", "says") == "S=You are a person who says: I lie.|U=What do you think?"
    with pytest.raises(UsageError, match="framing"):
        frame_prompt(Fake(), "x", "bogus")
