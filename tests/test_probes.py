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


# ---------------------------------------------------------------- words, permutations, stance
TOPICS = {"a": "taxes market church", "b": "party dance friends", "c": "worry anxious fear", "d": "duty rule promise"}
FILLER = "i think that we should often say something about this and that every day".split()


def _texts(labels: list[str], topical: bool, seed: int = 0) -> list[str]:
    """Statements of random filler words; ``topical`` adds the persona's own topic words (a words-only signal)."""
    rng = np.random.default_rng(seed)
    out = []
    for lab in labels:
        words = list(rng.choice(FILLER, size=8))
        if topical and lab in TOPICS:
            words += TOPICS[lab].split()
        out.append(" ".join(rng.permutation(words)))
    return out


def test_lexical_baseline_explains_topic_words() -> None:
    # Plant: every persona has its own topic words, and the activations carry only a weak signal.
    rng = np.random.default_rng(3)
    labels = [p for p in "abcd" for _ in range(PER)]
    x = rng.normal(size=(len(labels), N_LAYERS, D))
    means = rng.normal(size=(4, D)) * 0.25
    for i in range(4):
        x[i * PER:(i + 1) * PER, 7:11] += means[i]
    r = localize_activations(_fake_set(x, labels), probes=("logreg",), n_boot=200, background=None,
                             texts=_texts(labels, topical=True), n_permutations=0)
    best = next(s for s in r.layers if s.layer == r.best_layer)
    assert r.lexical_accuracy is not None and r.lexical_accuracy > 0.95
    assert r.explained_by_words is True and best.above_lexical_ci is not None and best.above_lexical_ci[0] <= 0
    assert r.band_floor == pytest.approx(r.lexical_accuracy)
    assert r.band == (r.best_layer, r.best_layer)  # nothing rises above the words: no band to speak of
    assert r.null is None and "lexical_probe" in r.provenance["localize"]


def test_activations_beat_words_that_carry_no_label(planted_result: LocalizationResult) -> None:
    # Null for the words: filler statements say nothing about the persona; the activations do (layers 7-10).
    acts = _planted(["a", "b", "c", "d"], background=True)
    labels = list(acts.labels or [])
    r = localize_activations(acts, probes=("logreg",), n_boot=200, texts=_texts(labels, topical=False),
                             n_permutations=0)
    assert r.lexical_accuracy is not None and r.lexical_accuracy < 0.45
    assert r.explained_by_words is False
    for s in r.layers:
        assert s.above_lexical_ci is not None
        if s.layer in PLANTED:
            assert s.above_lexical_ci[0] > 0.3
    outside = [s for s in r.layers if s.layer not in PLANTED]
    assert sum(s.above_lexical_ci[0] <= 0 <= s.above_lexical_ci[1] for s in outside) >= len(outside) - 1
    assert 7 <= r.band[0] <= r.band[1] <= 10
    # Same curve as without texts: the baseline qualifies the probes, it does not change them.
    assert [s.accuracy for s in r.layers] == [s.accuracy for s in planted_result.layers]


def test_permutation_null_planted(planted_result: LocalizationResult) -> None:
    null = planted_result.null
    assert null is not None and null.layer == planted_result.best_layer and null.n_permutations == 20
    assert abs(null.mean - 0.25) < 0.05 and null.p95 < 0.4
    assert null.p_value == pytest.approx(1 / 21)  # no permutation reaches the planted accuracy
    assert null.p_adjusted < 1e-6


def test_permutation_null_on_noise_is_not_significant() -> None:
    # Plant nothing: the best of 12 noise layers must not look significant once the choice of layer counts.
    flagged_raw = flagged_adjusted = 0
    for k in range(5):
        rng = np.random.default_rng(50 + k)
        labels = [p for p in "abcd" for _ in range(30)]
        r = localize_activations(_fake_set(rng.normal(size=(120, N_LAYERS, D)), labels), probes=("logreg",),
                                 folds=3, n_boot=100, background=None, seed=k)
        assert r.null is not None and abs(r.null.mean - 0.25) < 0.05
        flagged_raw += r.null.p_value <= 0.05
        flagged_adjusted += r.null.p_adjusted <= 0.05
    assert flagged_adjusted <= 1
    assert flagged_raw >= flagged_adjusted


def _stance_set(stance_layers: range, seed: int = 0) -> tuple[ActivationSet, list[str], list[str]]:
    """Three personas, each with endorsed and rejected statements; persona identity is strong at every layer,
    the stance direction (shared by all personas) only in ``stance_layers``."""
    rng = np.random.default_rng(seed)
    per = 30
    groups = [p for p in "abc" for _ in range(2 * per)]
    labels = [lab for _ in "abc" for lab in ["endorse"] * per + ["reject"] * per]
    x = rng.normal(size=(len(labels), N_LAYERS, D))
    persona_means = rng.normal(size=(3, D)) * 3.0
    stance_dir = rng.normal(size=D) * 1.2
    for i, (g, lab) in enumerate(zip(groups, labels, strict=True)):
        x[i] += persona_means["abc".index(g)]
        if lab == "endorse":
            x[i, stance_layers.start:stance_layers.stop] += stance_dir
    return _fake_set(x, labels), labels, groups


def test_stance_contrast_planted() -> None:
    acts, labels, groups = _stance_set(PLANTED)
    r = localize_activations(acts, probes=("logreg",), n_boot=200, background=None, groups=groups, contrast="stance",
                             texts=_texts(groups, topical=True))  # topic words name the persona, not the stance
    assert r.contrast == "stance" and r.classes == ["endorse", "reject"] and r.personas == ["a", "b", "c"]
    assert r.counts == {"endorse": 90, "reject": 90}
    assert r.lexical_accuracy is not None and r.lexical_accuracy < 0.65
    assert r.best_layer in PLANTED and 6 <= r.band[0] <= r.band[1] <= 11
    assert r.explained_by_words is False and r.null is not None
    assert abs(r.null.mean - 0.5) < 0.05 and r.null.p_adjusted < 1e-6
    assert set(r.best_layer_set) <= set(range(6, 12))


def test_stance_contrast_null_and_within_persona_permutation() -> None:
    # Plant no stance: the persona is everywhere, the stance nowhere.
    acts, labels, groups = _stance_set(range(0, 0), seed=1)
    r = localize_activations(acts, probes=("logreg",), n_boot=200, background=None, groups=groups, contrast="stance")
    best = next(s for s in r.layers if s.layer == r.best_layer)
    assert r.null is not None and abs(r.null.mean - 0.5) < 0.05
    assert r.null.p_adjusted > 0.05 and best.accuracy_ci[0] < 0.6
    # Why labels are permuted within each persona: permuted across personas, some persona ends up with more
    # of one label, and a probe that recognizes the persona scores above chance on meaningless labels.
    from personascope.probes.metrics import linear_probe

    x = acts.acts[:, r.best_layer].numpy().astype(np.float64)
    y, g = np.array(labels), np.array(groups)
    across = M.permutation_null(x, y, lambda: linear_probe(0), 20, folds=5, seed=0, groups=None)
    within = M.permutation_null(x, y, lambda: linear_probe(0), 20, folds=5, seed=0, groups=g)
    assert across.mean() > within.mean() + 0.02
    assert abs(within.mean() - 0.5) < 0.04


def test_best_layer_set_plateau_and_peak() -> None:
    assert M.best_layer_set([(0.2, 0.3), (0.7, 0.9), (0.72, 0.92), (0.75, 0.95), (0.3, 0.5)], 3) == [1, 2, 3]
    assert M.best_layer_set([(0.2, 0.3), (0.5, 0.6), (0.9, 1.0), (0.4, 0.55)], 2) == [2]


def test_paired_diff_ci_and_selection_adjusted_p() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random(300) < 0.8).astype(float)
    same = M.paired_diff_ci(a, a, n_boot=200)
    assert same[0] == 0 and same[1] == 0 and same[2] == 0
    b = a.copy()
    b[rng.choice(300, 60, replace=False)] = 0  # b is a with some items knocked out: a is better
    d, lo, hi = M.paired_diff_ci(np.stack([a, b]), b, n_boot=500)
    assert d[0] > 0 and lo[0] > 0 and d[1] == lo[1] == hi[1] == 0
    null = rng.normal(0.25, 0.03, size=20)
    assert M.selection_adjusted_p(0.9, null, 30, 200, 0.25) < 1e-10
    assert M.selection_adjusted_p(0.25, null, 30, 200, 0.25) == 1.0
    assert np.isnan(M.selection_adjusted_p(0.5, null[:1], 30, 200, 0.25))


def test_cv_folds_follow_strata_only() -> None:
    from personascope.probes.metrics import linear_probe

    rng = np.random.default_rng(0)
    y = np.repeat(["p", "q"], 20)
    x = rng.normal(size=(40, 4))
    _, f1 = M.cv_predict(x, y, linear_probe(), 4, seed=3)
    _, f2 = M.cv_predict(x, rng.permutation(y), linear_probe(), 4, seed=3, strata=y)
    _, f3 = M.cv_predict(np.array([f"w{i}" for i in range(40)], dtype=object), y, M.lexical_probe(), 4, seed=3)
    assert (f1 == f2).all() and (f1 == f3).all()
    with pytest.raises(ValueError, match="strata"):
        M.cv_predict(x, y, linear_probe(), 4, strata=y[:5])


def test_select_stance_statements_builtin() -> None:
    from personascope.errors import UsageError
    from personascope.probes.localize import select_stance_statements

    chosen = select_stance_statements(["utilitarian", "liberal"], n_per_persona=60, seed=2)
    for p in ("utilitarian", "liberal"):
        pos = [s for s in chosen if s.persona == p and s.positive]
        neg = [s for s in chosen if s.persona == p and not s.positive]
        assert len(pos) == len(neg) == 24  # capped by the 24 rejected statements of the built-in set
    assert chosen == select_stance_statements(["utilitarian", "liberal"], n_per_persona=60, seed=2)
    every = select_stance_statements(None, n_per_persona=5)
    assert "neutral" not in {s.persona for s in every} and len(every) == 8 * 10  # neutral has no rejected side
    with pytest.raises(UsageError, match="rejected"):
        select_stance_statements(["neutral"], n_per_persona=5)


def test_words_explain_the_anthropic_persona_sets() -> None:
    """The reviewer's saturation, on the real data: topic-distinct personas are separable by words alone."""
    from personascope.probes.localize import select_stance_statements, select_statements

    src = SHARED_DATA / "anthropic-persona"
    if not src.is_dir():
        pytest.skip("shared anthropic-persona data not present")
    names = ["politically-conservative", "subscribes-to-Islam", "extraversion", "subscribes-to-utilitarianism"]
    chosen = select_statements(names, source=src, background=None, n_per_persona=30, seed=0)
    y = np.array([s.persona for s in chosen])
    acc, _ = M.cv_accuracy([s.statement for s in chosen], y, M.lexical_probe(), 3, 0)
    assert acc > 0.9  # chance 0.25: the words alone nearly saturate, as the activation probes did at layer 0
    st = select_stance_statements(names, source=src, n_per_persona=30, seed=0)
    assert sum(s.positive for s in st) == sum(not s.positive for s in st) == 120
    ys = np.array(["endorse" if s.positive else "reject" for s in st])
    stance_acc, _ = M.cv_accuracy([s.statement for s in st], ys, M.lexical_probe(), 3, 0)
    assert 0.5 < stance_acc < acc  # the stance is harder for words than the topic
