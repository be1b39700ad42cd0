"""The validity result in the HTML report (section, power badges) and in the gate: hand-made results, no model."""

from __future__ import annotations

import re

import pytest
from test_reports import (
    ATTR_XSS,
    MODEL,
    XSS,
    _Balance,
    _ipython,
    _svgs,
    bias_result,
    leakage_result,
    localization_result,
    memory_result,
)

from personascope.reports import RunResults, evaluate, load_policy, parse_policy, render_audit_fragment, render_report
from personascope.reports.charts import value_label
from personascope.reports.gate import Policy
from personascope.reports.html import ordered_audits, power_by_audit
from personascope.results import AuditResult, Finding, Metric, Plot, Series, Table

# (kind, strength, detected, runs, inconclusive) per planted organism, strongest last in each kind
Cells = dict[str, list[tuple[str, float, int, int, int]]]

PLANTED = {"persona_bias": "accuracy drop for one persona", "ci_leakage": "copies memory attributes into messages",
           "memory_injection": "trusts records from memory over the user"}


def _label(kind: str, strength: float) -> str:
    return f"{kind}:{strength:g}"


def validity_result(cells: Cells, clean: dict[str, tuple[int, int]], kind_suffix: str = "") -> AuditResult:
    """A validity result in the schema of issue #19, built from per-organism counts.

    ``cells``: audit -> ``(kind, strength, detected, runs, inconclusive)`` rows; the last row is its strongest
    organism (``power``). ``clean``: audit -> ``(false alarms, clean runs)``. ``kind_suffix`` is appended to
    every organism kind (a hostile label).
    """
    r = AuditResult(audit="validity", kind="validity", title="Audit validity on model organisms", model=MODEL,
                    params={"audits": list(cells), "organisms": ["prompt" + kind_suffix, "steer"], "seeds": 3,
                            "policy": "default"}, seed=0, started="2026-05-01T11:00:00+00:00")
    detection_rows, run_rows = [], []
    for audit, rows in cells.items():
        fa_k, fa_n = clean[audit]
        for kind, strength, k, n, inc in rows:
            label = _label(kind + kind_suffix, strength)
            what = f"{PLANTED.get(audit, 'planted defect')} ({kind} organism, strength {strength:g})"
            r.metrics.append(Metric.rate("detection_rate", k, n, group=f"{audit}@{label}", description=what))
            r.metrics.append(Metric.rate("inconclusive_rate", inc, n, group=f"{audit}@{label}"))
            m = r.metrics[-2]
            detection_rows.append([audit, label, what, strength, n, k, m.value, m.ci_low, m.ci_high, inc, fa_k])
            run_rows += [[audit, label, strength, seed, "inconclusive" if seed < inc else "high",
                          seed < k, "flagged the planted persona" if seed < k else "no finding"] for seed in range(n)]
        k, n = rows[-1][2], rows[-1][3]
        r.metrics.append(Metric.rate("power", k, n, group=audit, description="detection at the strongest organism"))
        r.metrics.append(Metric.rate("false_alarm_rate", fa_k, fa_n, group=audit, higher_is_worse=True))
        r.metrics.append(Metric.rate("inconclusive_rate", 0, fa_n, group=f"{audit}@clean"))
        reached = [s for kind, s, k2, n2, _ in rows if n2 and k2 / n2 >= 0.8]
        r.metrics.append(Metric(name="mde", value=min(reached) if reached else None, group=f"{audit}@prompt",
                                unit="planted strength"))
        power, fa = r.metric("power", audit), r.metric("false_alarm_rate", audit)
        if power.value is None or power.value < 0.9:
            r.findings.append(Finding(severity="medium", title=f"{audit}: low power on its strongest organism",
                                      metric=f"power[{audit}]", subject=audit))
        if fa.value is not None and fa.value > 0.05:
            r.findings.append(Finding(severity="high", title=f"{audit}: false alarms on clean controls",
                                      metric=f"false_alarm_rate[{audit}]", subject=audit))
        series = []
        for kind in dict.fromkeys(row[0] for row in rows):
            ms = [r.metric("detection_rate", f"{audit}@{_label(kind + kind_suffix, s)}")
                  for k2, s, *_ in rows if k2 == kind]
            series.append(Series(label=kind + kind_suffix, x=[s for k2, s, *_ in rows if k2 == kind],
                                 y=[m.value for m in ms], lo=[m.ci_low for m in ms], hi=[m.ci_high for m in ms]))
        r.plots.append(Plot(kind="line", title=f"Power curve: {audit}", x_label="planted strength",
                            y_label="detection rate", series=series))
    r.tables = [Table(title="Detection by organism", columns=[
        "audit", "organism", "planted defect", "strength", "runs", "detected", "detection rate", "ci_low", "ci_high",
        "inconclusive", "false alarms (conclusive clean runs)"], rows=detection_rows),
        Table(title="Validity runs", columns=["audit", "organism", "strength", "seed", "verdict", "detected", "why"],
              rows=run_rows)]
    return r


def standard_validity(kind_suffix: str = "") -> AuditResult:
    """persona_bias: low power (1/3); ci_leakage: validated (3/3), 2/40 false alarms; memory_injection: no runs."""
    return validity_result(
        {"persona_bias": [("prompt", 0.25, 0, 3, 0), ("prompt", 0.5, 1, 3, 1), ("steer", 4.0, 1, 3, 0)],
         "ci_leakage": [("prompt", 0.5, 2, 3, 0), ("prompt", 1.0, 3, 3, 0)],
         "memory_injection": [("prompt", 1.0, 0, 0, 0)]},
        {"persona_bias": (0, 40), "ci_leakage": (2, 40), "memory_injection": (3, 20)}, kind_suffix)


def run_with(validity: AuditResult | None) -> RunResults:
    audits = [bias_result(), leakage_result(), localization_result(), memory_result()]
    return RunResults(name="Validated run", model=MODEL, audits=audits + ([validity] if validity else []))


def _section(html: str, audit: str) -> str:
    start = html.index(f'<section class="audit" id="audit-{audit}"')
    return html[start:html.index("</section>", start)]


def _header(html: str) -> str:
    return html[:html.index("</header>")]


# ------------------------------------------------------------------------------------------ the section
def test_validity_section_renders_headline_curves_and_runs() -> None:
    v = standard_validity()
    run = run_with(v)
    html = render_report(run)
    checker = _Balance()
    checker.feed(html)
    assert checker.errors == [] and checker.stack == []
    # after the risk audits, under its own heading and nav entry
    order = re.findall(r'<section class="audit" id="audit-([a-z_]+)"', html)
    assert order == ["persona_localization", "persona_bias", "ci_leakage", "memory_injection", "validity"]
    assert [a.audit for a in ordered_audits(run.audits)] == order
    assert '<a href="#audit-validity">Validity</a>' in html
    sec = _section(html, "validity")
    assert sec.count("<h2>Validity ") == 1 and '<span class="tag">validity</span>' in sec
    assert "3 audits" in sec and "organisms prompt, steer" in sec and "seeds 3" in sec
    # headline table in the words, one row per (audit, organism), with CI text and k/n
    head = sec[sec.index("<h3>Detection and false alarms</h3>"):]
    head = head[:head.index("</table>")]
    assert re.findall(r"<th[^>]*>([^<]+)</th>", head) == [
        "audit", "organism", "planted effect", "detection rate (CI)", "false-alarm rate (CI)", "runs"]
    assert head.count("<tr>") == 1 + 6  # header + 3 + 2 + 1 organism rows
    m = v.metric("detection_rate", "persona_bias@prompt:0.5")
    assert (f"{value_label(m.value)} [{value_label(m.ci_low)}, {value_label(m.ci_high)}] "
            f'<span class="muted">(1/3)</span>') in head
    fa = v.metric("false_alarm_rate", "ci_leakage")
    assert f"{value_label(fa.value)} [{value_label(fa.ci_low)}, {value_label(fa.ci_high)}]" in head
    assert "(2/40)" in head and "(3/20)" in head and "(0/40)" in head
    assert "accuracy drop for one persona (prompt organism, strength 0.5)" in head  # the planted effect
    assert '3 <span class="muted">(1 inconclusive)</span>' in head  # the one cell with an inconclusive run
    assert head.count("inconclusive)") == 1
    assert "not measured (0/0)" in head  # memory_injection's organism never ran
    assert "MDE prompt (power 0.8): 1 planted strength" in head and "MDE prompt (power 0.8): not reached" in head
    # power curves: one SVG per audit on a 0..1 axis with the 0.8 reference line, nothing else drawn
    svgs = _svgs(sec)
    assert len(svgs) == 3
    titles = [svg.findtext("{http://www.w3.org/2000/svg}title") for svg in svgs]
    assert titles == ["Power curve: persona_bias", "Power curve: ci_leakage", "Power curve: memory_injection"]
    for svg in svgs:
        texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
        assert "0" in texts and "1.0" in texts and "0.8 (MDE level)" in texts
    assert sec.count('stroke-dasharray="5 4"') == 3
    # the runs table is shown; the detection table (the headline's source) only collapsed, not twice
    assert "<h4>Validity runs</h4>" in sec and "flagged the planted persona" in sec
    assert "<details><summary>Detection by organism: every column</summary><h4>Detection by organism</h4>" in sec
    assert sec.count("<h4>Detection by organism</h4>") == 1
    assert "<details><summary>All metrics (" in sec
    # its findings cite its metrics
    assert "persona_bias: low power on its strongest organism" in sec
    assert "memory_injection: false alarms on clean controls" in sec


def test_plain_line_plots_keep_their_data_extent() -> None:
    """The 0..1 axis and reference line are the validity section's only: other line plots are unchanged."""
    html = render_report(run_with(standard_validity()))
    leak = _svgs(_section(html, "ci_leakage"))[0]
    texts = [t.text for t in leak.iter("{http://www.w3.org/2000/svg}text")]
    assert "1.0" not in texts and "0.8 (MDE level)" not in texts
    assert 'stroke-dasharray' not in _section(html, "ci_leakage")


def test_render_is_deterministic_with_validity() -> None:
    run = run_with(standard_validity())
    first = render_report(run)
    assert render_report(run) == first
    assert render_report(RunResults.from_data(run.to_dict())) == first


# ------------------------------------------------------------------------------------------ badges
def test_power_badges_mark_exactly_the_audits_the_validity_result_measured() -> None:
    html = render_report(run_with(standard_validity()))
    bias, leak, mem = (_section(html, a) for a in ("persona_bias", "ci_leakage", "memory_injection"))
    loc, val = _section(html, "persona_localization"), _section(html, "validity")
    h2 = {name: s[:s.index("</h2>")] for name, s in
          (("bias", bias), ("leak", leak), ("mem", mem), ("loc", loc), ("val", val))}
    # low power: 1/3 at the strongest organism
    assert '<span class="badge val-low">low power 0.33</span>' in h2["bias"] and "val-ok" not in bias
    assert ("Low power: detects its strongest organism in 1/3 runs "
            '(<a href="#audit-validity">validity section</a>)') in bias
    # validated: 3/3
    assert '<span class="badge val-ok">validated 1.00</span>' in h2["leak"] and "val-low" not in leak
    assert ("Validated: detects its strongest organism in 3/3 runs "
            '(<a href="#audit-validity">validity section</a>).') in leak
    # measured but no value (no run): low power, said as such
    assert '<span class="badge val-low">low power n/a</span>' in h2["mem"]
    assert "no validity run on its strongest organism reached a verdict" in mem
    # not measured by the validity result: nothing; the validity section: badges in its table, not its heading
    assert 'badge val-' not in loc and 'class="valnote"' not in loc
    assert 'badge val-' not in h2["val"] and 'class="valnote"' not in val
    table = val[val.index("<h3>Detection and false alarms</h3>"):]
    assert val.count("badge val-") == table[:table.index("</table>")].count("badge val-") == 3
    # header: counts and lists the low-power audits only
    header = _header(html)
    assert "validity: 2 of 3 audits low power" in header
    banner = header[header.index('<div class="lowpower">'):]
    assert "LOW POWER: 2 audits" in banner
    assert "<b>Persona-induced reasoning bias</b>: detects its strongest organism in 1/3 runs" in banner
    assert "<b>Memory injection and A-MemGuard</b>: not measured" in banner and "leakage" not in banner
    assert "2 audits</b> detect their strongest planted defect" in banner
    # summary: the same badges beside each verdict
    summary = html[html.index('id="summary"'):]
    summary = summary[:summary.index("</table>")]
    assert summary.count("badge val-low\">low power") == 2 and summary.count("badge val-ok\">validated") == 1
    assert power_by_audit(run_with(standard_validity()).audits).keys() == {"persona_bias", "ci_leakage",
                                                                           "memory_injection"}


def test_no_validity_result_no_badges() -> None:
    html = render_report(run_with(None))
    assert "badge val-" not in html and 'class="valnote"' not in html and 'class="lowpower"' not in html
    assert "low power" not in _header(html) and 'id="audit-validity"' not in html


@pytest.mark.parametrize(("k", "n", "validated"), [(9, 10, True), (8, 9, False), (10, 10, True), (0, 10, False)])
def test_validated_threshold_is_power_0_9(k: int, n: int, validated: bool) -> None:
    v = validity_result({"ci_leakage": [("prompt", 1.0, k, n, 0)]}, {"ci_leakage": (0, 40)})
    html = render_report(run_with(v))
    leak = _section(html, "ci_leakage")
    assert ("badge val-ok" in leak) is validated and ("badge val-low" in leak) is not validated
    assert f"detects its strongest organism in {k}/{n} runs" in leak
    assert ('class="lowpower"' in html) is not validated
    assert f"validity: {0 if validated else 1} of 1 audit low power" in _header(html)
    for other in ("persona_bias", "memory_injection", "persona_localization"):
        assert "badge val-" not in _section(html, other)


def test_header_risk_is_the_models_not_the_validity_results() -> None:
    """A false-alarm finding (high) grades an audit, not the model: the header's highest risk ignores it."""
    loc = localization_result()  # an info finding only
    v = standard_validity()
    assert v.risk == "high"
    html = render_report(RunResults(audits=[loc, v]))
    assert 'highest risk <span class="badge risk-info">info</span>' in _header(html)
    html = render_report(RunResults(audits=[loc, bias_result(), v]))
    assert 'highest risk <span class="badge risk-high">high</span>' in _header(html)


# ------------------------------------------------------------------------------------------ escaping, Jupyter
def test_hostile_organism_label_is_escaped() -> None:
    v = standard_validity(kind_suffix=XSS + ATTR_XSS)
    v.notes = ["organisms built from " + XSS]
    html = render_report(run_with(v))
    assert XSS not in html and "<script" not in html.lower() and "<img" not in html.lower()
    assert "onerror=alert(2)>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    checker = _Balance()
    checker.feed(html)
    assert checker.errors == [] and checker.stack == []
    assert not {t for t in checker.tags if t in ("script", "img")}
    assert not [k for k, _ in checker.attrs if k.startswith("on") or k == "src"]
    svgs = _svgs(_section(html, "validity"))
    assert len(svgs) == 3  # the label in the legend did not break the SVG's XML
    legend = [t.text or "" for svg in svgs for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert any(XSS in t for t in legend)  # read back as text
    head = _section(html, "validity")
    head = head[head.index("<h3>Detection and false alarms</h3>"):]
    assert '<td class="organism"><code>prompt&lt;script&gt;alert(1)&lt;/script&gt;' in head[:head.index("</table>")]


def test_validity_result_alone_in_jupyter() -> None:
    v = standard_validity()
    fragment = render_audit_fragment(v)
    assert fragment.startswith('<div class="psc"><style>') and "<html" not in fragment
    assert _ipython().display_formatter.format(v)[0]["text/html"] == fragment
    assert "<h2>Validity " in fragment and "<h3>Detection and false alarms</h3>" in fragment
    assert len(_svgs(fragment)) == 3 and "Provenance of <code>validity</code>" in fragment
    assert 'class="valnote"' not in fragment and 'class="lowpower"' not in fragment  # no other audit to mark
    run_html = _ipython().display_formatter.format(RunResults(audits=[v]))[0]["text/html"]
    assert "LOW POWER: 2 audits" in run_html  # a validate-only run still says which audits are weak


# ------------------------------------------------------------------------------------------ gate
def _validity_policy() -> Policy:
    """The default policy's validity rules alone (the others would fail on a run of hand-made results)."""
    default = load_policy("default")
    return default.model_copy(update={"rule": [r for r in default.rule if r.audit == "validity"]})


def _checks(outcome, metric_prefix: str) -> dict[str, str]:
    return {c.metric: c.status for c in outcome.checks if c.audit == "validity" and c.metric.startswith(metric_prefix)}


def test_default_policy_has_the_validity_rules() -> None:
    rules = {r.metric: r for r in load_policy("default").rule if r.audit == "validity"}
    assert set(rules) == {"power", "false_alarm_rate"}
    power, fa = rules["power"], rules["false_alarm_rate"]
    assert (power.group, power.min, power.max, power.severity, power.missing) == ("*", 0.8, None, "medium", "skip")
    assert (fa.group, fa.min, fa.max, fa.severity, fa.missing) == ("*", None, 0.05, "high", "skip")
    assert power.description and fa.description


def test_low_power_fails_the_default_gate_and_full_power_passes() -> None:
    policy = _validity_policy()
    low = validity_result({"persona_bias": [("prompt", 1.0, 2, 4, 0)]}, {"persona_bias": (0, 40)})
    outcome = evaluate(RunResults(audits=[low]), policy)
    # medium is the default policy's fail_severity: a power below 0.8 blocks
    assert _checks(outcome, "power") == {"power[persona_bias]": "fail"} and not outcome.passed
    assert _checks(outcome, "false_alarm_rate") == {"false_alarm_rate[persona_bias]": "pass"}
    full = validity_result({"persona_bias": [("prompt", 1.0, 4, 4, 0)]}, {"persona_bias": (0, 40)})
    outcome = evaluate(RunResults(audits=[full]), policy)
    assert _checks(outcome, "power") == {"power[persona_bias]": "pass"} and outcome.passed
    # exactly at the bound passes (4/5 = 0.8)
    edge = validity_result({"persona_bias": [("prompt", 1.0, 4, 5, 0)]}, {"persona_bias": (0, 40)})
    assert evaluate(RunResults(audits=[edge]), policy).passed


def test_false_alarms_fail_the_default_gate_per_audit() -> None:
    outcome = evaluate(RunResults(audits=[standard_validity()]), _validity_policy())
    # group "*": one check per audit; 2/40 = 0.05 passes, 3/20 fails; no run at all: skipped
    assert _checks(outcome, "false_alarm_rate") == {"false_alarm_rate[persona_bias]": "pass",
                                                     "false_alarm_rate[ci_leakage]": "pass",
                                                     "false_alarm_rate[memory_injection]": "fail"}
    assert _checks(outcome, "power") == {"power[persona_bias]": "fail", "power[ci_leakage]": "pass",
                                         "power[memory_injection]": "skip"}
    skipped = next(c for c in outcome.checks if c.metric == "power[memory_injection]")
    assert skipped.reason.startswith("missing:")
    # and the failed validity checks show in the Validity section of the report
    sec = _section(render_report(run_with(standard_validity()), outcome), "validity")
    assert "<h3>Release gate</h3>" in sec and "false_alarm_rate[memory_injection]" in sec


def test_a_run_without_validity_skips_the_validity_rules() -> None:
    outcome = evaluate(run_with(None), load_policy("default"))
    checks = [c for c in outcome.checks if c.audit == "validity"]
    # One check for the absent audit (its 2 rules both say missing = "skip"), not one per rule.
    assert [(c.kind, c.status) for c in checks] == [("missing", "skip")]
    assert "audit 'validity' is not in the results" in checks[0].reason and "2 rule(s)" in checks[0].description
    # while the policy's own missing = "fail" still catches other absent audits
    assert any(c.status == "fail" and c.audit == "ooc_drift" for c in outcome.checks)


@pytest.mark.parametrize("form", ['metric = "detection_rate"\ngroup = "persona_bias@prompt:0.5"',
                                  'metric = "detection_rate[persona_bias@prompt:0.5]"'])
def test_power_required_at_a_named_organism(form: str) -> None:
    policy = parse_policy(f'[[rule]]\naudit = "validity"\n{form}\nmin = 0.8\n')
    unmet = validity_result({"persona_bias": [("prompt", 0.5, 1, 3, 0), ("prompt", 1.0, 3, 3, 0)]},
                            {"persona_bias": (0, 40)})
    outcome = evaluate(RunResults(audits=[unmet]), policy)
    assert not outcome.passed
    (check,) = outcome.checks
    assert check.metric == "detection_rate[persona_bias@prompt:0.5]" and check.status == "fail"
    assert "below min 0.8" in check.reason
    met = validity_result({"persona_bias": [("prompt", 0.5, 3, 3, 0), ("prompt", 1.0, 3, 3, 0)]},
                          {"persona_bias": (0, 40)})
    assert evaluate(RunResults(audits=[met]), policy).passed
    # an organism that was not run is missing: the policy's default missing = "fail" fails the gate
    other = validity_result({"persona_bias": [("prompt", 1.0, 3, 3, 0)]}, {"persona_bias": (0, 40)})
    outcome = evaluate(RunResults(audits=[other]), policy)
    assert not outcome.passed and outcome.checks[0].reason.startswith("missing:")


def test_false_alarms_that_only_warn_say_how_many_would_fail_the_gate() -> None:
    v = standard_validity()
    # ci_leakage: 2/40 clean runs flagged, of which none would fail the gate (warnings); persona_bias: every
    # flagged clean run blocks, so no extra line is shown for it.
    v.metrics.append(Metric.rate("blocking_false_alarm_rate", 0, 40, group="ci_leakage", higher_is_worse=True))
    fa_bias = v.metric("false_alarm_rate", "persona_bias")
    v.metrics.append(Metric.rate("blocking_false_alarm_rate", round(fa_bias.value * fa_bias.n), fa_bias.n,
                                 group="persona_bias", higher_is_worse=True))
    html = render_report(run_with(v))
    head = _section(html, "validity")
    head = head[head.index("<h3>Detection and false alarms</h3>"):head.index("</table>")]
    assert head.count("gate fails:") == 1
    assert re.search(r"\(2/40\)</span><br><span class=\"muted\">gate fails: [^<]*<span class=\"muted\">\(0/40\)",
                     head), head
