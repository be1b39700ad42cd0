"""persona_localization audit: its controls (words, permutation null) pass on planted signal and fail when they must."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fake_activation_set

from personascope.audits.base import AuditContext
from personascope.audits.localization import LocalizationAudit, null_tolerance
from personascope.errors import UsageError
from personascope.probes.localize import LocalizationResult, localize_activations

N_LAYERS, D, PER = 8, 16, 30
PLANTED = range(4, 7)
TOPIC = {"a": "taxes market church", "b": "party dance friends", "c": "worry anxious fear"}
FILLER = "i think that we should often say something about this and that every day".split()


def _acts(strength: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = [p for p in "abc" for _ in range(PER)]
    x = rng.normal(size=(len(labels), N_LAYERS, D))
    means = rng.normal(size=(3, D)) * strength
    for i in range(3):
        x[i * PER:(i + 1) * PER, PLANTED.start:PLANTED.stop] += means[i]
    return fake_activation_set(x, labels), labels


def _texts(labels: list[str], topical: bool) -> list[str]:
    rng = np.random.default_rng(1)
    return [" ".join(rng.permutation(list(rng.choice(FILLER, 8)) + (TOPIC[lab].split() if topical else [])))
            for lab in labels]


def _controls(loc: LocalizationResult) -> AuditContext:
    audit = LocalizationAudit()
    ctx = AuditContext(model=None, judge=None, result=audit.new_result(None), progress=False, state={"loc": loc})
    audit.controls(ctx)
    return ctx


def _measure(acts, **kw) -> LocalizationResult:
    return localize_activations(acts, folds=3, probes=("logreg",), n_boot=200, background=None, **kw)


def test_controls_pass_when_activations_carry_more_than_words() -> None:
    acts, labels = _acts(2.0)
    ctx = _controls(_measure(acts, texts=_texts(labels, topical=False)))
    by = {c.name: c for c in ctx.result.controls}
    assert by["beats_lexical_baseline"].kind == "artifact" and by["beats_lexical_baseline"].passed
    assert by["beats_lexical_baseline"].observed > 0.3
    assert by["permutation_null_at_chance"].kind == "negative" and by["permutation_null_at_chance"].passed
    assert ctx.result.verdict != "inconclusive"


def test_artifact_control_fails_when_words_explain_the_band() -> None:
    # Plant the confound: the personas' words give them away; the activations carry a weak signal only.
    acts, labels = _acts(0.3)
    loc = _measure(acts, texts=_texts(labels, topical=True))
    assert loc.explained_by_words
    ctx = _controls(loc)
    by = {c.name: c for c in ctx.result.controls}
    assert not by["beats_lexical_baseline"].passed and by["beats_lexical_baseline"].observed <= 0
    assert by["permutation_null_at_chance"].passed
    assert ctx.result.verdict == "inconclusive"


def test_artifact_control_fails_without_texts() -> None:
    acts, _ = _acts(2.0)
    ctx = _controls(_measure(acts))
    assert not {c.name: c for c in ctx.result.controls}["beats_lexical_baseline"].passed


def test_negative_control_fails_when_the_shuffle_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Break the permutation (identity): the "null" then scores the real accuracy and must be caught.
    import personascope.probes.metrics as metrics

    class Identity:
        def permutation(self, x):
            return np.asarray(x).copy() if not isinstance(x, int) else np.arange(x)

    monkeypatch.setattr(metrics, "rng", lambda *a, **k: Identity())
    acts, labels = _acts(2.0)
    loc = _measure(acts, texts=_texts(labels, topical=False))
    assert loc.null is not None and loc.null.mean > 0.8
    ctx = _controls(loc)
    c = {c.name: c for c in ctx.result.controls}["permutation_null_at_chance"]
    assert not c.passed and c.observed == pytest.approx(loc.null.mean)
    assert ctx.result.verdict == "inconclusive"


def test_null_tolerance_is_a_few_standard_errors() -> None:
    acts, labels = _acts(2.0)
    loc = _measure(acts, texts=_texts(labels, topical=False))
    assert loc.null is not None
    tol = null_tolerance(loc.null, 90)
    sd = float(np.std(loc.null.values, ddof=1))
    assert tol == pytest.approx(max(2.33 * sd / np.sqrt(20), 1 / 90))
    assert tol < 0.05


def test_parameters() -> None:
    assert LocalizationAudit.from_params({"contrast": "stance"}).contrast == "stance"
    with pytest.raises(UsageError, match="contrast"):
        LocalizationAudit.from_params({"contrast": "topic"})
    with pytest.raises(UsageError, match="permutations"):
        LocalizationAudit.from_params({"permutations": 5})


def test_stance_audit_on_tiny_model(tiny_nn) -> None:
    audit = LocalizationAudit.from_params({"personas": ["liberal", "neurotic"], "n_per_persona": 4, "folds": 2,
                                           "probes": ["logreg"], "contrast": "stance", "permutations": 19})
    res = audit.run(tiny_nn, progress=False)
    m = res.metrics_by_key()
    assert m["chance"].value == 0.5 and m["best_accuracy"].n == 16
    assert {"lexical_accuracy", "above_lexical", "permutation_null_mean", "permutation_p_layers"} <= set(m)
    assert m["best_layer"].ci_low <= m["best_layer"].value <= m["best_layer"].ci_high
    assert {c.name for c in res.controls} == {"beats_lexical_baseline", "permutation_null_at_chance"}
    assert not any(p.kind == "heatmap" for p in res.plots)  # no persona overlap in the stance contrast
    assert any("Contrast 'stance'" in n for n in res.notes) and any("best layer is uncertain" in n for n in res.notes)
