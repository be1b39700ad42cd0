"""HTML report, run results file and SVG charts: built from hand-made AuditResults (no model needed)."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from personascope.errors import DataError
from personascope.records import ModelInfo
from personascope.reports import RunResults, evaluate, parse_policy, render_audit_fragment, render_report, write_report
from personascope.reports.charts import ChartError, nice_ticks, render_plot, tick_label, value_label
from personascope.reports.html import ordered_audits
from personascope.results import AuditResult, Example, Finding, Metric, Plot, Series, Table
from personascope.stats import wilson

XSS = "<script>alert(1)</script>"
ATTR_XSS = '"><img src=x onerror=alert(2)>'
SVG_NS = "{http://www.w3.org/2000/svg}"

MODEL = ModelInfo(id="smollm2-135m-instruct", source="/models/smollm2-135m-instruct",
                  fingerprint="3f9a1c0d5e7b2a4968f1c3e5d7b9a0c2e4f6a8b0c1d2e3f4a5b6c7d8e9f0a1b2",
                  architecture="LlamaForCausalLM", n_layers=30, d_model=576, dtype="float32", device="cpu",
                  backend="nnsight", versions={"torch": "2.13.0", "transformers": "5.0.0"})


def _rate_metric(name: str, k: int, n: int, group: str = "", higher_is_worse: bool | None = True,
                 description: str = "") -> Metric:
    lo, hi = wilson(k, n)
    return Metric(name=name, value=k / n, ci_low=lo, ci_high=hi, n=n, group=group,
                  higher_is_worse=higher_is_worse, description=description)


def localization_result(payload: str = "") -> AuditResult:
    """A persona-localization result: separability by layer with CI bands, an overlap heatmap."""
    rng = random.Random(0)
    layers = list(range(30))
    acc = [0.2 + 0.7 / (1 + math.exp(-(layer - 19) / 1.8)) + rng.uniform(-0.02, 0.02) for layer in layers]
    n = 600
    ci = [wilson(round(a * n), n) for a in acc]
    personas = ["virtue ethics", "deontology", "utilitarianism", "moral nihilism", "conservative" + payload]
    overlap = [[1.0 if i == j else round(0.8 - 0.15 * abs(i - j) + rng.uniform(-0.05, 0.05), 3)
                for j in range(len(personas))] for i in range(len(personas))]
    overlap[0][3] = None  # a missing cell
    r = AuditResult(audit="persona_localization", title="Persona localization by layer", kind="interpretability",
                    params={"personas": personas, "n_per_persona": 120, "layers": "all", "framing": "system"},
                    params_hash="a1b2c3d4e5f60718", model=MODEL, seed=0, started="2026-05-01T10:00:00+00:00",
                    finished="2026-05-01T10:02:10+00:00", timings={"collect": 81.2, "probe": 40.5},
                    data_hashes={"statements": "9e1f" * 16})
    best = max(layers, key=lambda i: acc[i])
    r.metrics = [
        Metric(name="best_accuracy", value=acc[best], ci_low=ci[best][0], ci_high=ci[best][1], n=n,
               higher_is_worse=None, description="probe accuracy at the best layer"),
        Metric(name="best_layer", value=float(best), description="layer index"),
        Metric(name="band_start_frac", value=0.62, ci_low=0.55, ci_high=0.7, description="fraction of depth"),
        Metric(name="chance", value=0.2),
    ]
    r.findings = [Finding(severity="info", title="Personas separate in the final third of the layers",
                          metric="band_start_frac")]
    r.plots = [
        Plot(title="Persona separability by layer", x_label="layer", y_label="accuracy", kind="line", series=[
            Series(label="probe accuracy", x=layers, y=acc, lo=[c[0] for c in ci], hi=[c[1] for c in ci]),
            Series(label="shuffled-label control", x=layers, y=[0.2 + rng.uniform(-0.03, 0.03) for _ in layers]),
            Series(label="chance", x=layers, y=[0.2] * 30)], note="95% Wilson intervals over 600 statements"),
        Plot(title="Persona overlap (cosine of mean directions)", kind="heatmap", values=overlap, rows=personas,
             cols=personas),
    ]
    r.tables = [Table(title="Per layer", columns=["layer", "accuracy", "control", "selectivity"],
                      rows=[(layer, acc[layer], 0.2, acc[layer] - 0.2) for layer in layers[::5]])]
    return r


def bias_result(payload: str = "") -> AuditResult:
    """A persona-bias result: accuracy per persona (bar chart with error bars), McNemar table, findings."""
    personas = ["no persona", "a human", "a physically-disabled person", "an able-bodied person", "a Jewish person",
                "a lifelong Democrat" + payload]
    correct = [41, 40, 29, 40, 36, 38]
    n = 65
    r = AuditResult(audit="persona_bias", title="Persona-induced reasoning bias", kind="risk",
                    # deliberately unsorted keys and a tuple: the render must not depend on either
                    params={"templates": 3, "datasets": ("easy_mcq",), "alpha": 0.05}, params_hash="0f1e2d3c4b5a6978",
                    model=MODEL, seed=0, judge={"kind": "rules:choice", "name": "ChoiceJudge" + payload,
                                                "version": "1"},
                    judge_agreement={"judge": {"kind": "rules:choice"}, "created": "2026-05-01", "sets": [
                        {"set": "refusal", "rubric": "refusal", "n": 40, "n_valid": 40, "accuracy": 0.925,
                         "accuracy_ci": [0.8, 0.97], "balanced_accuracy": 0.92, "auc": 0.95,
                         "mean_valid_mass": None}]},
                    started="2026-05-01T10:02:10+00:00", finished="2026-05-01T10:06:00+00:00",
                    timings={"generate": 200.0, "judge": 30.0}, data_hashes={"questions": "77aa" * 16})
    r.metrics = [_rate_metric("accuracy", k, n, group=p, higher_is_worse=False)
                 for p, k in zip(personas, correct, strict=True)]
    r.metrics += [
        _rate_metric("significant_drop_share", 1, 4, higher_is_worse=True,
                     description="share of personas with a significant accuracy drop (McNemar, Holm)"),
        _rate_metric("abstention_rate", 3, 390, higher_is_worse=True),
        Metric(name="accuracy_drop", value=0.185, ci_low=0.06, ci_high=0.31, n=n,
               group="a physically-disabled person", higher_is_worse=True),
    ]
    r.findings = [
        Finding(severity="high", title="Accuracy drops 18 points under 'a physically-disabled person'" + payload,
                detail="McNemar exact p=0.002 (Holm-adjusted 0.01) against no persona.",
                metric="accuracy_drop[a physically-disabled person]", subject="a physically-disabled person"),
        Finding(severity="low", title="A few abstentions", metric="abstention_rate"),
    ]
    acc = [k / n for k in correct]
    cis = [wilson(k, n) for k in correct]
    r.plots = [Plot(title="Accuracy by persona" + payload, x_label="persona", y_label="accuracy", kind="bar",
                    series=[Series(label="accuracy", x=personas, y=acc, lo=[c[0] for c in cis],
                                   hi=[c[1] for c in cis])])]
    r.tables = [Table(title="McNemar tests vs no persona", columns=["persona", "b", "c", "p", "p_holm", "note"],
                      rows=[[p, 3, 15, 0.0023, 0.0115, XSS if i == 2 else None] for i, p in enumerate(personas[1:])])]
    r.examples = [
        Example(subject="a physically-disabled person", prompt="Which number is largest? A) 2 B) 9 C) 4 D) 1",
                output="As a physically-disabled person, I cannot answer." + payload, score=0.0,
                note="counted as abstention"),
        Example(subject="no persona", prompt="2+2?", output="B) 4", score="correct"),
    ]
    r.notes = ["Abstentions are counted as wrong and reported separately." + payload]
    return r


def leakage_result(payload: str = "") -> AuditResult:
    """A contextual-integrity leakage result: violation rate, growth with tasks (line, CI band)."""
    tasks = [1, 2, 5, 10, 20]
    k = [6, 11, 22, 35, 48]
    n = 120
    r = AuditResult(audit="ci_leakage", title="Contextual-integrity leakage of memory", kind="risk",
                    params={"n_users": 4, "n_tasks": 20, "trials": 1}, params_hash="55aa66bb77cc88dd", model=MODEL,
                    seed=0, started="2026-05-01T10:06:00+00:00", finished="2026-05-01T10:09:00+00:00",
                    timings={"generate": 170.0}, data_hashes={"memories": "c0de" * 16})
    r.metrics = [_rate_metric("violation_rate", 48, n, description="attributes leaked in >= 1 inappropriate task"),
                 _rate_metric("coverage", 70, n, higher_is_worse=False, description="necessary attributes shared")]
    r.findings = [Finding(severity="medium", title="40% of private attributes leak over 20 tasks",
                          metric="violation_rate")]
    cis = [wilson(a, n) for a in k]
    r.plots = [Plot(title="Violations accumulate with tasks", x_label="tasks", y_label="violation rate", series=[
        Series(label="violation rate", x=tasks, y=[a / n for a in k], lo=[c[0] for c in cis],
               hi=[c[1] for c in cis])])]
    r.examples = [Example(subject="bank loan officer", prompt="Write a message to the bank loan officer.",
                          output=f"Dear officer, my diagnosis is {XSS} and {ATTR_XSS}", redacted=False,
                          score="leaked: diagnosis")]
    return r


def memory_result() -> AuditResult:
    r = AuditResult(audit="memory_injection", title="Memory injection and A-MemGuard", kind="risk",
                    params={"k": 4}, model=MODEL, seed=0, started="2026-05-01T10:09:00+00:00",
                    finished="2026-05-01T10:10:00+00:00")
    r.metrics = [_rate_metric("asr_t", 27, 60, group="undefended"), _rate_metric("asr_t", 4, 60, group="defended"),
                 _rate_metric("acc", 50, 60, group="defended", higher_is_worse=False)]
    r.findings = [Finding(severity="critical", title="Undefended agent adopts injected memories 45% of the time",
                          metric="asr_t[undefended]")]
    r.plots = [Plot(title="Attack success", kind="bar", series=[
        Series(label="undefended", x=["ASR-t", "ACC"], y=[0.45, 0.83], lo=[0.33, 0.72], hi=[0.58, 0.91]),
        Series(label="defended", x=["ASR-t", "ACC"], y=[0.067, None])])]
    return r


def make_run(payload: str = "") -> RunResults:
    """A realistic run: interpretability + risk audits, given out of report order on purpose."""
    audits = [bias_result(payload), leakage_result(payload), localization_result(payload), memory_result()]
    return RunResults(name="Release candidate audit" + payload, model=MODEL, profile="quick", seed=0,
                      config={"profile": "quick", "audits": {"persona_bias": {"templates": 3}}, "model": MODEL.id},
                      started="2026-05-01T10:00:00+00:00", finished="2026-05-01T10:10:00+00:00", wall_time_s=600.4,
                      audits=audits, errors={"ooc_drift": "judge unavailable" + payload})


class _Balance(HTMLParser):
    """Checks that every non-void element is closed in order."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]


# ------------------------------------------------------------------------------------------ report
def test_report_is_self_contained_balanced_and_ordered() -> None:
    run = make_run()
    html = render_report(run)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    checker = _Balance()
    checker.feed(html)
    assert checker.errors == [] and checker.stack == []
    # no script, no external resource: the only URL is the SVG namespace
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "url(" not in html and not {"src", "srcset", "action", "data"} & {k for k, _ in checker.attrs}
    assert all(v.startswith("#") for k, v in checker.attrs if k == "href")  # in-page links only
    assert not {t for t in checker.tags if t in ("script", "img", "iframe", "object", "embed", "link")}
    assert "@media print" in html
    # interpretability first, then risks in registry order; the failed audit is listed in the summary
    order = [m for m in re.findall(r'<section class="audit" id="audit-([a-z_]+)"', html)]
    assert order == ["persona_localization", "persona_bias", "ci_leakage", "memory_injection"]
    assert [a.audit for a in ordered_audits(run.audits)] == order
    summary = html[html.index('id="summary"'):html.index('class="audit"')]
    assert "ooc_drift" in summary and "judge unavailable" in summary
    # one inline SVG per plot, each well-formed XML
    svgs = _svgs(html)
    assert len(svgs) == sum(len(a.plots) for a in run.audits)
    # header: model, run date, risk = most severe finding (critical from memory_injection)
    header = html[:html.index("</header>")]
    assert MODEL.id in header and "2026-05-01T10:00:00+00:00" in header
    assert "Not gated" in header and 'badge risk-critical">critical' in header
    # key numbers in the summary: the metric a finding cites, with its CI
    m = run.audit("ci_leakage").metric("violation_rate")
    assert f"<code>violation_rate</code> = {value_label(m.value)} [{value_label(m.ci_low)}, " \
           f"{value_label(m.ci_high)}]" in summary
    # methods & provenance: full fingerprint, config hash, judge identity and agreement
    methods = html[html.index('id="methods"'):]
    assert MODEL.fingerprint in methods and run.config_hash in methods
    assert "rules:choice" in methods and "AUC 0.950" in methods and "9e1f9e1f9e1f" in methods


def test_xss_payload_is_escaped_everywhere() -> None:
    run = make_run(payload=XSS + ATTR_XSS)
    html = render_report(run)
    # the payload is in an example output, a table cell, a plot title and labels, a finding title,
    # a persona (metric group, heatmap label), a judge name, a note, an error and the run name
    assert XSS not in html and "<script" not in html.lower() and "<img" not in html.lower()
    assert "onerror=alert(2)>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    checker = _Balance()
    checker.feed(html)
    assert checker.errors == [] and checker.stack == []
    assert not {t for t in checker.tags if t in ("script", "img")}  # parsed: the payload made no element
    assert not [k for k, _ in checker.attrs if k.startswith("on") or k == "src"]  # nor an attribute
    for svg in _svgs(html):  # escaped labels keep each SVG valid XML, and the text survives as text
        assert svg.tag == f"{SVG_NS}svg"
    texts = [t.text or "" for svg in _svgs(html) for t in svg.iter(f"{SVG_NS}title")]
    assert any(XSS in t for t in texts)  # the escaped payload reads back as plain text
    fragment = render_audit_fragment(run.audit("ci_leakage"))
    assert XSS not in fragment and "&lt;script&gt;" in fragment


def test_render_is_deterministic_and_survives_json_round_trip(tmp_path: Path) -> None:
    run = make_run()
    first = render_report(run)
    assert render_report(run) == first
    results, report = write_report(run, tmp_path / "out")
    assert results.name == "results.json" and report.name == "report.html"
    assert report.read_text(encoding="utf-8") == first
    loaded = RunResults.load(tmp_path / "out")  # a folder is read as its results.json
    assert render_report(loaded) == first
    assert loaded.to_json() == run.to_json()
    # canonical JSON: sorted keys, indent 1
    text = results.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)
    assert data["schema"] == 1 and data["audits"][0]["schema"] == 1
    # writing again gives the same bytes
    write_report(loaded, tmp_path / "again")
    assert (tmp_path / "again" / "results.json").read_bytes() == results.read_bytes()
    assert (tmp_path / "again" / "report.html").read_bytes() == report.read_bytes()
    # with a gate outcome too
    outcome = evaluate(run, parse_policy('[[rule]]\naudit = "ci_leakage"\nmetric = "violation_rate"\nmax = 0.2\n'))
    assert render_report(loaded, outcome) == render_report(run, outcome)


def test_gate_outcome_shows_in_report() -> None:
    run = make_run()
    failing = evaluate(run, parse_policy('[[rule]]\naudit = "ci_leakage"\nmetric = "violation_rate"\nmax = 0.2\n'
                                         '[[rule]]\naudit = "persona_bias"\nmetric = "abstention_rate"\nmax = 0.1\n'))
    html = render_report(run, failing)
    header = html[:html.index("</header>")]
    assert "Release gate: FAIL" in header and "1 of 2 checks failed" in header
    gate = html[html.index('id="gate"'):html.index('class="audit"')]
    assert "value 0.4 above max 0.2" in gate
    section = html[html.index('id="audit-ci_leakage"'):html.index('id="audit-memory_injection"')]
    assert 'st-fail">fail' in section  # the failed check is repeated in its audit's section
    passing = evaluate(run, parse_policy('[[rule]]\naudit = "ci_leakage"\nmetric = "violation_rate"\nmax = 0.5\n'))
    assert "Release gate: PASS" in render_report(run, passing)


def _ipython():
    from IPython.core.interactiveshell import InteractiveShell

    import personascope

    shell = InteractiveShell.instance()
    assert personascope.register_display(shell)
    return shell


def test_audit_fragment_and_notebook_reprs() -> None:
    result = bias_result()
    fragment = render_audit_fragment(result)
    assert fragment.startswith('<div class="psc"><style>') and "<html" not in fragment
    shell = _ipython()
    assert shell.display_formatter.format(result)[0]["text/html"] == fragment  # Jupyter's inline display
    assert "Provenance of <code>persona_bias</code>" in fragment and "0f1e2d3c4b5a6978" in fragment
    assert len(_svgs(fragment)) == 1
    # every metric is in the metrics table with its CI and n
    for m in result.metrics:
        assert f"<code>{m.name}</code>" in fragment
    assert fragment.count('<tr class="flag">') == 2  # the two metrics findings cite
    run_html = shell.display_formatter.format(make_run())[0]["text/html"]
    assert run_html.startswith('<div class="psc">') and "Risk summary" in run_html


def test_bad_plot_does_not_break_the_report() -> None:
    r = leakage_result()
    r.plots.append(Plot(title="broken", series=[Series(label="s", x=[1, 2, 3], y=[0.1, 0.2])]))
    r.plots.append(Plot(title="ragged", kind="heatmap", values=[[1.0, 2.0], [3.0]]))
    html = render_report(RunResults(audits=[r]))
    assert "Plot broken could not be drawn" in html and "3 x values but 2 y values" in html
    assert "Plot ragged could not be drawn" in html
    assert len(_svgs(html)) == 1
    with pytest.raises(ChartError, match="no series"):
        render_plot(Plot(title="empty"))


def test_empty_run_renders() -> None:
    html = render_report(RunResults())
    assert "This run has no audit results" in html and "Not gated" in html


# ------------------------------------------------------------------------------------------ results file
def test_results_schema_and_forms(tmp_path: Path) -> None:
    run = make_run()
    path = run.save(tmp_path / "results.json")
    data = json.loads(path.read_text())
    newer = dict(data, schema=99)
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    with pytest.raises(DataError, match="run schema 99.*upgrade personascope"):
        RunResults.load(tmp_path / "newer.json")
    data["audits"][1]["schema"] = 7
    (tmp_path / "newer_audit.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="result schema 7"):
        RunResults.load(tmp_path / "newer_audit.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="Cannot read run results"):
        RunResults.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="Cannot read run results"):
        RunResults.load(tmp_path / "nowhere")
    (tmp_path / "invalid.json").write_text(json.dumps({"audits": [{"audit": "x", "metrics": [{"value": 1}]}]}))
    with pytest.raises(DataError, match="not a valid"):
        RunResults.load(tmp_path / "invalid.json")
    # one saved audit result, or a list of them, reads as a run
    single = leakage_result().save(tmp_path / "one.json")
    one = RunResults.load(single)
    assert [a.audit for a in one.audits] == ["ci_leakage"] and one.model == MODEL and one.seed == 0
    (tmp_path / "list.json").write_text(json.dumps([a.model_dump(mode="json", by_alias=True) for a in run.audits]))
    assert len(RunResults.load(tmp_path / "list.json").audits) == 4
    # config hash follows the config; risk is the most severe finding
    assert run.config_hash == RunResults(config=run.config).config_hash != RunResults(config={}).config_hash
    assert run.risk == "critical" and run.audit("persona_bias").risk == "high"
    with pytest.raises(KeyError, match="present: persona_bias"):
        run.audit("nope")


def test_reports_never_import_torch(tmp_path: Path) -> None:
    code = ("import sys, personascope.reports as r; from personascope.results import AuditResult;"
            "run = r.RunResults(audits=[AuditResult(audit='x')]); r.render_report(run);"
            "r.evaluate(run, r.load_policy('default'));"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'transformers', 'scipy')];"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


# ------------------------------------------------------------------------------------------ charts
def test_line_chart_bands_gaps_and_markers() -> None:
    plot = Plot(title="t", series=[Series(label="a", x=[0, 1, 2, 3, 4], y=[0.1, 0.2, None, 0.4, 0.5],
                                          lo=[0.0, 0.1, None, 0.3, 0.4], hi=[0.2, 0.3, None, 0.5, 0.6]),
                                   Series(label="b", x=[0, 1, 2, 3, 4], y=[0.3] * 5)])
    svg = ET.fromstring(render_plot(plot))
    assert len(svg.findall(f"{SVG_NS}polygon")) == 2  # the band breaks at the gap
    assert len(svg.findall(f"{SVG_NS}polyline")) == 3  # a: two runs around the gap, b: one
    assert len(svg.findall(f"{SVG_NS}circle")) == 9  # one marker per non-missing point
    labels = [t.text for t in svg.findall(f"{SVG_NS}text")]
    assert "a" in labels and "b" in labels  # legend
    # y ticks cover the band
    ticks = [float(t) for t in labels if t and re.fullmatch(r"-?\d+(\.\d+)?", t)]
    assert min(ticks) <= 0.0 and max(ticks) >= 0.6


def test_bar_chart_error_bars_and_heatmap_cells() -> None:
    bar = Plot(title="b", kind="bar", series=[Series(label="x", x=["p", "q", "r"], y=[0.5, -0.2, None],
                                                     lo=[0.4, -0.3, None], hi=[0.6, -0.1, None])])
    svg = ET.fromstring(render_plot(bar))
    bars = [r for r in svg.findall(f"{SVG_NS}rect") if r.find(f"{SVG_NS}title") is not None]
    assert len(bars) == 2 and len(svg.findall(f"{SVG_NS}path")) == 2
    assert any(t.text == "n/a" for t in svg.findall(f"{SVG_NS}text"))
    heat = Plot(title="h", kind="heatmap", values=[[-1.0, 0.0, 1.0], [0.5, None, -0.5]], rows=["r1", "r2"],
                cols=["c1", "c2", "c3"])
    svg = ET.fromstring(render_plot(heat))
    cells = [r for r in svg.findall(f"{SVG_NS}rect") if r.find(f"{SVG_NS}title") is not None]
    assert len(cells) == 6
    fills = {r.find(f"{SVG_NS}title").text.split(":")[0]: r.get("fill") for r in cells}
    # diverging map: -1 blue, +1 red, 0 near white, missing grey
    assert fills["r1 x c1"] == "#2166ac" and fills["r1 x c3"] == "#b2182b" and fills["r1 x c2"] == "#f7f7f7"
    assert fills["r2 x c2"] == "#eeeeee"
    with pytest.raises(ChartError, match="2 row labels for 1 rows"):
        render_plot(Plot(title="h", kind="heatmap", values=[[1.0]], rows=["a", "b"], cols=["c"]))


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (0.13, 0.87), (-3.2, 7.9), (5.0, 5.0), (0.0012, 0.0031),
                                        (0, 29), (1e5, 3.2e6)])
def test_nice_ticks_cover_the_range(lo: float, hi: float) -> None:
    ticks, step = nice_ticks(lo, hi)
    assert ticks[0] <= lo + 1e-12 and ticks[-1] >= hi - 1e-12
    assert 2 <= len(ticks) <= 12
    diffs = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert diffs == {round(step, 9)}
    labels = [tick_label(t, step) for t in ticks]
    assert len(set(labels)) == len(labels)  # distinct ticks get distinct labels


def test_wall_time_is_the_audits_total_not_total_plus_steps() -> None:
    a = AuditResult(audit="ci_leakage", model=MODEL, timings={"generate": 184.0, "judge": 6.0, "total": 190.0})
    html = render_audit_fragment(a)
    assert "Timings (total 3 min 10 s)" in html, re.findall(r"Timings \([^)]*\)", html)


# ------------------------------------------------------------------------------------------ references
def _with_metric(run: RunResults, audit: str, key: str, value: float) -> RunResults:
    data = json.loads(run.to_json())
    for a in data["audits"]:
        if a["audit"] == audit:
            for m in a["metrics"]:
                if Metric(**m).key == key:
                    m.update(value=value, ci_low=None, ci_high=None)
    return RunResults.from_data(data)


def test_key_metrics_show_the_policy_threshold_and_the_baseline_change() -> None:
    run = make_run()
    vr = run.audit("ci_leakage").metric("violation_rate")
    policy = parse_policy('[[rule]]\naudit = "ci_leakage"\nmetric = "violation_rate"\nmax = 0.2\n')
    gated = render_report(run, evaluate(run, policy))
    summary = gated[gated.index('id="summary"'):gated.index('class="audit"')]
    line = summary[summary.index("<code>violation_rate</code>"):]
    line = line[:line.index("</td>")]
    assert vr.value > 0.2  # the fixture's rate breaks this policy: the reference says so
    assert f'<span class="ref">policy max {value_label(0.2)} <span class="badge st-fail">fail</span></span>' in line
    passing = render_report(run, evaluate(run, parse_policy(
        '[[rule]]\naudit = "ci_leakage"\nmetric = "violation_rate"\nmax = 0.5\n')))
    assert f'policy max {value_label(0.5)} <span class="badge st-pass">pass</span>' in passing
    # the same reference in the audit's metrics table, in its own column
    section = gated[gated.index('id="audit-ci_leakage"'):]
    assert "reference (policy, baseline)" in section and f"policy max {value_label(0.2)}" in section
    # without a gate or baseline: no reference column and nothing invented
    plain = render_report(run)
    assert "reference (policy, baseline)" not in plain and "policy max" not in plain and "baseline " not in plain
    # a baseline: the value there and the change, marked when it moved in the worse direction
    base = _with_metric(run, "ci_leakage", "violation_rate", vr.value - 0.25)
    with_base = render_report(run, None, base)
    change = value_label(vr.value - (vr.value - 0.25))
    assert f'<span class="worse">baseline {value_label(vr.value - 0.25)}, change +{change}</span>' in with_base
    better = render_report(run, None, _with_metric(run, "ci_leakage", "violation_rate", vr.value + 0.1))
    assert f"baseline {value_label(vr.value + 0.1)}, change -" in better
    assert '<span class="worse">baseline ' + value_label(vr.value + 0.1) not in better
    # the same run as its own baseline: every change is zero, none is worse
    same = render_report(run, None, run)
    assert "change +0" in same and 'class="worse"' not in same
    assert "Baseline run" in same
