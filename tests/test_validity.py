"""The validity audit: detection rate on organisms, false alarms on clean controls, the command line.

Planted: a subject that obeys the bias organism's hidden deployment prompt (the scripted model of
test_bias_controls, which loses answers when a text is in its system prompt) is detected at every
planted strength, and its clean runs are not flagged. Null: a subject that ignores the hidden prompt
is never detected, and the audit says it has low power.
"""

from __future__ import annotations

import json

import pytest
from test_bias_controls import ScriptedModel

from personascope.audits.validity import ValidityAudit
from personascope.cli import main
from personascope.errors import UsageError
from personascope.organisms.recipes import _WRONG

BIAS = {"n_questions": 200, "personas": ["a woman", "a man", "an Asian person"], "human_controls": ["a human"],
        "assistant_controls": 14, "generation_questions": 0, "n_boot": 200, "n_examples": 0}


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path))


def _validity(**kw) -> ValidityAudit:
    params = {"audits": ["persona_bias"], "organisms": ["prompt"], "seeds": 2, "strengths": [0.5, 1.0],
              "audit_params": {"persona_bias": BIAS}, **kw}
    return ValidityAudit.from_params(params)


def test_an_organism_the_subject_obeys_is_detected_and_its_clean_runs_are_not(tiny_nn, fresh_cache) -> None:
    subject = ScriptedModel(tiny_nn, drops={_WRONG: 1.0}, tag="obeys")
    res = _validity().run(subject, judge=None, progress=False)
    assert res.kind == "validity" and res.verdict != "inconclusive"
    assert res.metric("detection_rate", "persona_bias@prompt:1").value == 1.0
    assert res.metric("detection_rate", "persona_bias@prompt:0.5").value == 1.0
    assert res.metric("detection_rate", "persona_bias@prompt:1").n == 2
    assert res.metric("false_alarm_rate", "persona_bias").value == 0.0
    assert res.metric("false_alarm_rate", "persona_bias").n == 2
    assert res.metric("power", "persona_bias").value == 1.0
    assert res.metric("mde", "persona_bias@prompt").value == 0.5
    assert res.metric("inconclusive_rate", "persona_bias@clean").value == 0.0
    assert not res.findings
    runs = next(t for t in res.tables if t.title == "Validity runs")
    assert len(runs.rows) == 6 and sum(r[5] for r in runs.rows) == 4
    flagged = [r[6] for r in runs.rows if r[5]]
    assert all("drop_vs_control_share" in why for why in flagged)
    assert [p.title for p in res.plots] == ["Power curve: persona_bias"]


def test_a_subject_that_ignores_the_organism_is_never_detected_and_marked_low_power(tiny_nn, fresh_cache) -> None:
    subject = ScriptedModel(tiny_nn, tag="deaf")
    res = _validity(strengths=[1.0]).run(subject, judge=None, progress=False)
    assert res.metric("detection_rate", "persona_bias@prompt:1").value == 0.0
    assert res.metric("power", "persona_bias").value == 0.0
    assert res.metric("mde", "persona_bias@prompt").value is None
    assert res.metric("false_alarm_rate", "persona_bias").value == 0.0
    assert [f.metric for f in res.findings] == ["power[persona_bias]"]


def test_every_run_pairs_the_audit_seed_across_organisms_and_controls() -> None:
    audit = _validity(seeds=3)
    plan = audit.plan()
    assert [(k, s) for _, k, s, _ in plan].count(("clean", 0.0)) == 3
    assert len(plan) == 3 * 2 + 3
    assert {seed for *_, seed in plan} == {0, 1, 2}


def test_bad_validity_parameters_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="audits with organisms"):
        ValidityAudit.from_params({"audits": ["persona_localization"]})
    with pytest.raises(UsageError, match="share of matching"):
        ValidityAudit.from_params({"strengths": [2.0]})
    with pytest.raises(UsageError, match="not validated"):
        ValidityAudit.from_params({"audits": ["persona_bias"], "audit_params": {"ci_leakage": {}}})
    with pytest.raises(UsageError, match="no_knob"):
        ValidityAudit.from_params({"audit_params": {"persona_bias": {"no_knob": 1}}}).validate()


def test_validate_command_runs_the_validity_audit_and_writes_results(tiny_model_dir, tmp_path, fresh_cache,
                                                                     capsys) -> None:
    out = tmp_path / "val"
    code = main(["validate", "memory", "--model", str(tiny_model_dir), "--judge", "none", "--organisms", "prompt",
                 "--seeds", "1", "--strengths", "1", "--param", "memory.n_tasks=3", "--param",
                 "memory.queries_per_task=1", "--param", "memory.poison_copies=[1]", "--param", "memory.rounds=2",
                 "--param", "memory.max_new_tokens=4", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())
    (val,) = data["audits"]
    assert val["audit"] == "validity" and val["params"]["audits"] == ["memory_injection"]
    keys = {(m["name"], m["group"]) for m in val["metrics"]}
    assert {("detection_rate", "memory_injection@prompt:1"), ("false_alarm_rate", "memory_injection"),
            ("power", "memory_injection")} <= keys
    assert "Validity" in (out / "report.html").read_text()
    assert main(["validate", "localization", "--organisms", "prompt", "--out", str(tmp_path / "x")]) == 2
    assert "audits with organisms" in capsys.readouterr().err


def _leakage_result(violation: float, coverage: float, control_ok: bool = True):
    from personascope.results import AuditResult, Control, Metric

    return AuditResult(audit="ci_leakage", metrics=[
        Metric.of("violation_rate", violation, (violation * 0.8, violation * 1.2)),
        Metric.of("coverage", coverage, (coverage * 0.8, coverage * 1.2))],
        controls=[Control(name="planted_leaks", kind="positive", passed=control_ok)])


def test_only_rules_on_the_defects_metric_count_as_a_detection() -> None:
    from personascope.audits.validity import _flagged
    from personascope.reports.gate import load_policy

    policy = load_policy("default")
    detect = ("violation_rate",)
    # A utility floor failing (coverage < 0.3) on a model that does not leak is not a detection.
    quiet = _flagged(_leakage_result(0.05, 0.01), policy, detect)
    assert not quiet["detected"] and "other: fail" in quiet["why"] and "coverage" in quiet["why"]
    assert _flagged(_leakage_result(0.05, 0.01), policy)["detected"]  # without `detect` every rule counts
    leaky = _flagged(_leakage_result(0.6, 0.5), policy, detect)
    assert leaky["detected"] and "violation_rate" in leaky["why"]
    # A failed own control makes the run inconclusive: neither a detection nor a false alarm.
    broken = _flagged(_leakage_result(0.6, 0.5, control_ok=False), policy, detect)
    assert not broken["detected"] and broken["inconclusive"] and broken["why"].startswith("inconclusive: planted_leaks")
