"""One self-contained HTML report of a run: risk summary, one section per audit, methods and provenance.

The report is a single file: inline CSS, plots as inline SVG (`personascope.reports.charts`), no
script and no external URL, readable on a laptop and printable. Every text that comes from a model,
a user, a data file or an audit is HTML-escaped. Rendering is deterministic: the run is first
normalised through its canonical JSON, so rendering a run in memory and rendering the
``results.json`` it was saved to give the same bytes, and no rendering-time clock is read.
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path
from typing import Any

from ..catalog import ORDER as _AUDIT_ORDER
from ..records import ModelInfo
from ..results import (
    RESULTS_FILE,
    SEVERITY_ORDER,
    AuditResult,
    Check,
    Finding,
    GateOutcome,
    JudgeRecord,
    Metric,
    Plot,
    RunResults,
    Table,
)
from .charts import render_plot, value_label

REPORT_FILE = "report.html"
RISK_LEVELS = ("none", "info", "low", "medium", "high", "critical")
#: Power (detection rate at the strongest planted organism) from which an audit counts as validated; the
#: issue's target for every risk audit. Below it (or unmeasured) its section is marked "low power".
VALIDATED_POWER = 0.9
#: The detection rate at which the validity audit reads off the minimum detectable effect (``mde``).
MDE_POWER = 0.8
#: The validity audit's table that the headline table of the Validity section already shows.
_DETECTION_TABLE = "Detection by organism"
_STATUS_ORDER = {"fail": 0, "warn": 1, "skip": 2, "pass": 3}

CSS = """
.psc{--fg:#1d2330;--muted:#5d6678;--line:#dde2ea;--panel:#f5f7fa;--accent:#0b5cad;
 color:var(--fg);background:#fff;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 max-width:1120px;margin:0 auto;padding:20px 28px 40px}
.psc *{box-sizing:border-box}
.psc h1{font-size:26px;margin:2px 0 6px;line-height:1.2}
.psc h2{font-size:20px;margin:34px 0 10px;padding-bottom:6px;border-bottom:2px solid var(--line)}
.psc h3{font-size:15px;margin:22px 0 8px;color:#2a3142}
.psc h4{font-size:13.5px;margin:14px 0 6px}
.psc code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--panel);
 padding:0 4px;border-radius:3px;overflow-wrap:anywhere}
.psc pre{font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--panel);
 border:1px solid var(--line);border-radius:4px;padding:8px 10px;margin:4px 0 10px;white-space:pre-wrap;
 overflow-wrap:anywhere;max-height:340px;overflow:auto}
.psc .eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:11.5px;color:var(--muted);font-weight:600}
.psc header.top{border-bottom:1px solid var(--line);padding-bottom:14px}
.psc .meta{color:var(--muted);font-size:13px}
.psc .meta span+span:before{content:"\\00b7";color:#aab;margin-right:.45em}
.psc .verdict{display:inline-block;margin-top:12px;padding:8px 14px;border-radius:6px;
 font-weight:600;border:1px solid var(--line);background:var(--panel)}
.psc .verdict-pass{background:#e7f5ea;border-color:#a9d8b3;color:#17602b}
.psc .inconclusive{margin-top:10px;padding:8px 14px;border-radius:6px;border:1px solid #e0c36b;
 background:#fff8e1;color:#6b4e00}
.psc .risk-inconclusive{background:#fff8e1;color:#6b4e00;border-color:#e0c36b}
.psc .lowpower{margin-top:10px;padding:8px 14px;border-radius:6px;border:1px solid #f5d79d;
 background:#fff3dc;color:#6b4100}
.psc .val-low{background:#fff3dc;color:#8a5300;border-color:#e0a84a}
.psc .val-ok{background:#e7f5ea;color:#17602b;border-color:#a9d8b3}
.psc td.organism{white-space:nowrap;max-width:none}
.psc p.valnote{margin:-4px 0 8px;font-size:13px}.psc p.valnote a{color:var(--accent)}
.psc .verdict-fail{background:#fdecec;border-color:#f0b2b2;color:#8f1a1a}
.psc nav.toc{margin:14px 0 0;font-size:13px;color:var(--muted)}
.psc nav.toc a{color:var(--accent);text-decoration:none;margin-right:14px;white-space:nowrap}
.psc .badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:11px;font-weight:700;
 text-transform:uppercase;letter-spacing:.04em;line-height:1.6;vertical-align:middle;border:1px solid transparent;
 white-space:nowrap}
.psc .risk-none{background:#e7f5ea;color:#17602b;border-color:#bfe3c7}
.psc .risk-info{background:#e8f1fb;color:#0b4f94;border-color:#c3dbf3}
.psc .risk-low{background:#f3f7e3;color:#4d6112;border-color:#dbe6b4}
.psc .risk-medium{background:#fff3dc;color:#8a5300;border-color:#f5d79d}
.psc .risk-high{background:#fde7e1;color:#a3290b;border-color:#f4bba9}
.psc .risk-critical{background:#a4161a;color:#fff;border-color:#a4161a}
.psc .st-pass{background:#e7f5ea;color:#17602b}.psc .st-fail{background:#fdecec;color:#8f1a1a}
.psc .st-warn{background:#fff3dc;color:#8a5300}.psc .st-skip,.psc .st-error{background:#eef0f4;color:#4a5263}
.psc .st-error{background:#fdecec;color:#8f1a1a}
.psc .tag{display:inline-block;font-size:11px;color:var(--muted);border:1px solid var(--line);border-radius:3px;
 padding:0 5px;margin-left:6px;vertical-align:middle}
.psc table{border-collapse:collapse;width:100%;font-size:13px;margin:4px 0 10px}
.psc th,.psc td{text-align:left;vertical-align:top;padding:5px 9px;border-bottom:1px solid var(--line)}
.psc td{max-width:46ch;overflow-wrap:anywhere}
.psc th{background:var(--panel);font-weight:600;color:#2a3142;white-space:nowrap}
.psc td.num,.psc th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.psc td.muted,.psc .muted{color:var(--muted)}
.psc tr.flag td:first-child{box-shadow:inset 3px 0 0 #d9480f}
.psc .scroll{max-height:440px;overflow:auto;border:1px solid var(--line);border-radius:4px;margin:4px 0 12px}
.psc .scroll table{margin:0}
.psc .scroll thead th{position:sticky;top:0;z-index:1;box-shadow:0 1px 0 var(--line)}
.psc table.kv{width:auto;min-width:50%}.psc table.kv th{width:14em;background:none;color:var(--muted)}
.psc ul.findings{list-style:none;padding:0;margin:6px 0}
.psc ul.findings li{padding:7px 10px;border:1px solid var(--line);border-left-width:4px;border-radius:4px;margin:6px 0}
.psc ul.findings li.sev-critical,.psc ul.findings li.sev-high{border-left-color:#c0391b}
.psc ul.findings li.sev-medium{border-left-color:#e08a00}.psc ul.findings li.sev-low{border-left-color:#8aa626}
.psc ul.findings li.sev-info{border-left-color:#3b82c4}
.psc .detail{color:#333;margin-top:2px}.psc .ref{font-size:12px;color:var(--muted)}.psc .worse{color:#b42318}
.psc figure{margin:10px 0 18px}.psc figcaption{font-size:12.5px;color:var(--muted);margin-top:2px}
.psc svg.chart{display:block}
.psc details{margin:8px 0;border:1px solid var(--line);border-radius:4px;padding:6px 10px}
.psc details>summary{cursor:pointer;font-weight:600;color:#2a3142}
.psc details[open]>summary{margin-bottom:6px}
.psc .example{border-top:1px dashed var(--line);padding:8px 0}
.psc .example:first-of-type{border-top:none}
.psc .label{font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);font-weight:600}
.psc .warnbox{background:#fff3dc;border:1px solid #f5d79d;border-radius:4px;padding:6px 10px;color:#6b4100}
.psc section.audit{margin-top:12px}
.psc .sub{color:var(--muted);font-size:13px;margin:-4px 0 8px}
.psc footer{margin-top:36px;padding-top:10px;border-top:1px solid var(--line);color:var(--muted);font-size:12px}
@media print{
 .psc{max-width:none;padding:0;font-size:10.5pt}
 .psc nav.toc{display:none}
 .psc section.audit,.psc section#methods{break-before:page}
 .psc .scroll,.psc pre{max-height:none;overflow:visible}
 .psc .scroll thead th{position:static}
 .psc figure,.psc tr,.psc .example,.psc ul.findings li{break-inside:avoid}
 .psc details{border:none;padding:0}
 .psc .badge,.psc .verdict,.psc th{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 .psc a{color:inherit;text-decoration:none}
}
@media print{.psc details::details-content{content-visibility:visible;display:block}}
""".strip()


# ------------------------------------------------------------------------------------------ small pieces
def _e(text: Any) -> str:
    """HTML-escape anything (quotes too: the text may land in an attribute)."""
    return escape("" if text is None else str(text), quote=True)


def _num(v: float | None) -> str:
    return '<span class="muted">&mdash;</span>' if v is None else _e(value_label(v))


def _ci(m: Metric) -> str:
    if m.ci_low is None and m.ci_high is None:
        return '<span class="muted">&mdash;</span>'
    return f"[{_num(m.ci_low)}, {_num(m.ci_high)}]"


def _metric_inline(m: Metric, ref: str = "") -> str:
    """``key = value [lo, hi] unit``, for the summary and findings; ``ref`` (HTML) is its reference."""
    ci = f" {_ci(m)}" if m.ci_low is not None or m.ci_high is not None else ""
    unit = f" {_e(m.unit)}" if m.unit else ""
    return f"<code>{_e(m.key)}</code> = {_num(m.value)}{ci}{unit}" + (f' <span class="ref">{ref}</span>' if ref else "")


#: (audit, metric key) -> the metric's references as HTML: the policy's thresholds, the baseline's value.
Refs = dict[tuple[str, str], str]


def metric_references(run: RunResults, gate: GateOutcome | None, baseline: RunResults | None = None) -> Refs:
    """What each metric is read against: the policy's threshold checks (with their status) and the baseline.

    A threshold reads ``max 0.2 FAIL`` (``checked 0.31`` when the rule reads a CI end, not the value);
    a baseline reads ``baseline 0.30, change +0.10`` for every metric the baseline run also has,
    gated or not, so that a reader sees what moved.
    """
    parts: dict[tuple[str, str], list[str]] = {}
    for c in gate.checks if gate is not None else []:
        if c.kind != "threshold" or c.threshold is None:
            continue
        a = run.audit_or_none(c.audit)
        m = a.metrics_by_key().get(c.metric) if a is not None else None
        checked = (f" checked {_e(value_label(c.observed))}" if c.observed is not None and m is not None
                   and m.value is not None and abs(c.observed - m.value) > 1e-12 else "")
        bound = "min" if c.op == ">=" else "max"
        parts.setdefault((c.audit, c.metric), []).append(
            f"policy {bound} {_e(value_label(c.threshold))}{checked} {_status_badge(c.status)}")
    if baseline is not None:
        for a in run.audits:
            old = baseline.audit_or_none(a.audit)
            if old is None:
                continue
            before = old.metrics_by_key()
            for m in a.metrics:
                b = before.get(m.key)
                if b is None or b.value is None or m.value is None:
                    continue
                change = m.value - b.value
                worse = (m.higher_is_worse is True and change > 0) or (m.higher_is_worse is False and change < 0)
                sign = "+" if change >= 0 else ""
                text = f"baseline {_e(value_label(b.value))}, change {sign}{_e(value_label(change))}"
                parts.setdefault((a.audit, m.key), []).append(f'<span class="worse">{text}</span>' if worse else text)
    return {k: " &middot; ".join(v) for k, v in parts.items()}


def badge(level: str) -> str:
    """A coloured risk badge (``none`` .. ``critical``)."""
    cls = level if level in (*RISK_LEVELS, "inconclusive") else "none"
    return f'<span class="badge risk-{cls}">{_e(level)}</span>'


def _status_badge(status: str) -> str:
    return f'<span class="badge st-{_e(status)}">{_e(status)}</span>'


def _cell(v: Any) -> str:
    """A table cell: numbers right-aligned with a fixed format, other values escaped."""
    if v is None:
        return '<td class="muted">&mdash;</td>'
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, int):
        return f'<td class="num">{v}</td>'
    if isinstance(v, float):
        return f'<td class="num">{_e(value_label(v))}</td>'
    if isinstance(v, list | dict):
        return f"<td><code>{_e(json.dumps(v, sort_keys=True, ensure_ascii=False))}</code></td>"
    return f"<td>{_e(v)}</td>"


def _kv(rows: list[tuple[str, str]]) -> str:
    """A two-column key/value table; values are already-escaped HTML."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _json_pre(obj: Any) -> str:
    return f"<pre>{_e(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False))}</pre>"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "&mdash;"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _slug(name: str, used: set[str]) -> str:
    base = "audit-" + (re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "x")
    slug, k = base, 2
    while slug in used:
        slug, k = f"{base}-{k}", k + 1
    used.add(slug)
    return slug


_KIND_ORDER = {"interpretability": 0, "risk": 1, "validity": 2}


def ordered_audits(audits: list[AuditResult]) -> list[AuditResult]:
    """Interpretability audits, then risk audits, then validity, each in registry order (unknown audits last)."""
    return [a for _, a in sorted(enumerate(audits), key=lambda ia: (
        _KIND_ORDER.get(ia[1].kind, 1), _AUDIT_ORDER.get(ia[1].audit, len(_AUDIT_ORDER)), ia[0]))]


def _canonical_run(run: RunResults) -> RunResults:
    """``run`` read back from its canonical JSON: dict order, tuples and int/float as in the saved file."""
    return RunResults.from_data(json.loads(run.to_json()), "run")


def _canonical_audit(result: AuditResult) -> AuditResult:
    return AuditResult.from_dict(json.loads(result.to_json()), "audit result")


def _canonical_gate(gate: GateOutcome | None) -> GateOutcome | None:
    return None if gate is None else GateOutcome.model_validate_json(gate.model_dump_json())


# ------------------------------------------------------------------------------------------ audit section
def key_metrics(a: AuditResult, limit: int = 3) -> list[Metric]:
    """The numbers behind an audit's risk: metrics its findings cite (most severe first), else its first few."""
    by_key = a.metrics_by_key()
    out: list[Metric] = []
    for f in sorted(a.findings, key=lambda f: -SEVERITY_ORDER[f.severity]):
        m = by_key.get(f.metric or "")
        if m is not None and m not in out:
            out.append(m)
    if not out:
        out = [m for m in a.metrics if m.value is not None]
    return out[:limit]


def _findings_html(a: AuditResult, refs: Refs | None = None) -> str:
    if not a.findings:
        return '<p class="muted">No findings.</p>'
    by_key = a.metrics_by_key()
    items = []
    for f in sorted(a.findings, key=lambda f: -SEVERITY_ORDER[f.severity]):  # stable: keeps audit order in a level
        items.append(_finding_item(f, by_key, (refs or {}).get((a.audit, f.metric or ""), "")))
    return f'<ul class="findings">{"".join(items)}</ul>'


def _finding_item(f: Finding, by_key: dict[str, Metric], ref: str = "") -> str:
    refs = []
    if f.metric:
        m = by_key.get(f.metric)
        refs.append(_metric_inline(m, ref) if m is not None else f"<code>{_e(f.metric)}</code>")
    if f.subject:
        refs.append(f"subject: {_e(f.subject)}")
    detail = f'<div class="detail">{_e(f.detail)}</div>' if f.detail else ""
    ref = f'<div class="ref">{" &middot; ".join(refs)}</div>' if refs else ""
    return f'<li class="sev-{_e(f.severity)}">{badge(f.severity)} <b>{_e(f.title)}</b>{detail}{ref}</li>'


def _metrics_html(a: AuditResult, refs: Refs | None = None) -> str:
    if not a.metrics:
        return '<p class="muted">No metrics.</p>'
    cited = {f.metric for f in a.findings if f.metric}
    mine = {k: v for (audit, k), v in (refs or {}).items() if audit == a.audit}
    rows = []
    for m in a.metrics:
        direction = {True: "higher is worse", False: "lower is worse", None: ""}[m.higher_is_worse]
        unit = f" {_e(m.unit)}" if m.unit else ""
        flag = ' class="flag"' if m.key in cited else ""
        ref = f"<td>{mine.get(m.key, '')}</td>" if mine else ""
        rows.append(
            f"<tr{flag}><td><code>{_e(m.name)}</code></td>"
            f"<td>{_e(m.group)}</td><td class=\"num\">{_num(m.value)}{unit}</td><td class=\"num\">{_ci(m)}</td>"
            f"{ref}"
            f'<td class="num">{"" if m.n is None else m.n}</td><td class="muted">{direction}</td>'
            f"<td>{_e(m.description)}</td></tr>")
    head = ('<thead><tr><th>metric</th><th>group</th><th class="num">value</th><th class="num">95% CI</th>'
            + ("<th>reference (policy, baseline)</th>" if mine else "")
            + '<th class="num">n</th><th>direction</th><th>description</th></tr></thead>')
    return f'<div class="scroll"><table>{head}<tbody>{"".join(rows)}</tbody></table></div>'


def _plot_html(plot: Plot, **kw: Any) -> str:
    """A figure: the plot's SVG (``kw`` go to `render_plot`) or a note saying why it could not be drawn."""
    try:
        svg = render_plot(plot, **kw)
    except Exception as exc:  # one bad plot must not cost the whole report
        svg = f'<div class="warnbox">Plot {_e(plot.title)!s} could not be drawn: {_e(exc)}</div>'
    note = f"<figcaption>{_e(plot.note)}</figcaption>" if plot.note else ""
    return f"<figure>{svg}{note}</figure>"


def _table_html(t: Table) -> str:
    numeric = [all(v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                   for v in (row[k] for row in t.rows if k < len(row))) for k in range(len(t.columns))]
    head = "".join(('<th class="num">' if num else "<th>") + f"{_e(c)}</th>"
                   for c, num in zip(t.columns, numeric, strict=True))
    body = "".join(f"<tr>{''.join(_cell(v) for v in row)}</tr>" for row in t.rows)
    note = f'<p class="muted">{_e(t.note)}</p>' if t.note else ""
    return (f'<h4>{_e(t.title)}</h4><div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{note}")


def _examples_html(a: AuditResult) -> str:
    if not a.examples and not a.samples_file:
        return ""
    href = _e(a.samples_file or "")
    items = []
    if a.samples_file:
        items.append(f'<p class="muted">Every scored item ({a.n_samples}): <a href="{href}">{href}</a> (JSON lines: '
                     "prompt, output, score, judge, redaction flag; private values redacted as here).</p>")
    for x in a.examples:
        head = []
        if x.subject:
            head.append(f"<b>{_e(x.subject)}</b>")
        if x.score is not None:
            score = _e(value_label(x.score)) if isinstance(x.score, float) else _e(x.score)
            head.append(f"score <code>{score}</code>")
        if x.redacted:
            head.append('<span class="tag">redacted</span>')
        if x.sample is not None and a.samples_file:
            head.append(f'record <a href="{href}" title="{_e(x.sample)}"><code>{_e(x.sample)}</code></a>')
        parts = [f'<div>{" &middot; ".join(head)}</div>' if head else ""]
        if x.prompt:
            parts.append(f'<div class="label">Prompt</div><pre>{_e(x.prompt)}</pre>')
        parts.append(f'<div class="label">Model output</div><pre>{_e(x.output)}</pre>')
        if x.note:
            parts.append(f'<div class="muted">{_e(x.note)}</div>')
        items.append(f'<div class="example">{"".join(parts)}</div>')
    return (f"<details><summary>Examples ({len(a.examples)} of {a.n_samples or len(a.examples)} scored items) "
            "&mdash; model text, shown as written</summary>"
            f'{"".join(items)}</details>')


def _judge_html(judge: JudgeRecord | None) -> str:
    if judge is None or (judge.identity is None and not judge.rules):
        return '<span class="muted">none</span>'
    parts = []
    for ident in ([judge.identity] if judge.identity else []) + list(judge.rules):
        text = f"<code>{_e(ident.kind)}</code>" + (f" {_e(ident.name)}" if ident.name else "")
        if ident.model_fingerprint:
            text += f' <span class="muted">model {_e(str(ident.model_fingerprint)[:12])}</span>'
        parts.append(text)
    uses = f' <span class="muted">({_e("; ".join(judge.uses))})</span>' if judge.uses else ""
    return ", ".join(parts) + uses


def _agreement_html(agreement: dict[str, Any] | None) -> str:
    """Judge agreement: per labelled set accuracy/AUC (judge_check format), else the raw numbers."""
    if not agreement:
        return '<span class="muted">not measured</span>'
    sets = agreement.get("sets")
    if isinstance(sets, list) and all(isinstance(s, dict) for s in sets):
        parts = []
        for s in sets:
            acc, auc = s.get("accuracy"), s.get("auc")
            weak = (auc is None or (isinstance(auc, int | float) and auc < 0.75))
            ci = s.get("accuracy_ci")
            ci_txt = (f" [{_e(value_label(ci[0]))}, {_e(value_label(ci[1]))}]"
                      if isinstance(ci, list) and len(ci) == 2 and all(isinstance(c, int | float) for c in ci) else "")
            acc_txt = _e(value_label(acc)) if isinstance(acc, int | float) else "n/a"
            auc_txt = _e(value_label(auc)) if isinstance(auc, int | float) else "n/a"
            parts.append(f"{_e(s.get('set', '?'))}: accuracy {acc_txt}{ci_txt}, AUC {auc_txt}, "
                         f"n={_e(s.get('n_valid', s.get('n', '?')))}"
                         + (' <span class="badge risk-medium">weak</span>' if weak else ""))
        return "<br>".join(parts)
    scalars = [(k, v) for k, v in sorted(agreement.items()) if isinstance(v, str | int | float | bool) or v is None]
    text = ", ".join(f"{_e(k)}={_e(value_label(v)) if isinstance(v, float) else _e(v)}" for k, v in scalars)
    rest = len(agreement) - len(scalars)
    return text + (f' <span class="muted">(+{rest} more in provenance)</span>' if rest else "")


def _audit_provenance(a: AuditResult) -> str:
    """Parameters, judge, data hashes, timings and versions of one audit (a collapsible block)."""
    model = a.model
    rows = [("audit", f"<code>{_e(a.audit)}</code> ({_e(a.kind)})"),
            ("model", f"<code>{_e(model.short)}</code>" if model else '<span class="muted">none</span>'),
            ("parameters hash", f"<code>{_e(a.params_hash)}</code>" if a.params_hash else "&mdash;"),
            ("seed", _e(a.seed) if a.seed is not None else "&mdash;"),
            ("judge", _judge_html(a.judge)),
            ("judge agreement", _agreement_html(a.judge_agreement)),
            ("started", _e(a.started)), ("finished", _e(a.finished) if a.finished else "&mdash;"),
            ("versions", ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(a.versions.items())) or "&mdash;")]
    hashes = "".join(f"<tr><td><code>{_e(k)}</code></td><td><code>{_e(v)}</code></td></tr>"
                     for k, v in sorted(a.data_hashes.items()))
    timings = "".join(f'<tr><td>{_e(k)}</td><td class="num">{_e(f"{v:.3f}")}</td></tr>'
                      for k, v in sorted(a.timings.items()))
    parts = [_kv(rows)]
    if hashes:
        parts.append(f"<h4>Data hashes</h4><table><thead><tr><th>data</th><th>sha256</th></tr></thead>"
                     f"<tbody>{hashes}</tbody></table>")
    if timings:
        # "total" is the audit's whole wall time, not one more step to add up.
        total = a.timings.get("total", sum(a.timings.values()))
        parts.append(f'<h4>Timings (total {_duration(total)})</h4><table><thead><tr><th>step</th>'
                     f'<th class="num">seconds</th></tr></thead><tbody>{timings}</tbody></table>')
    parts.append(f"<h4>Parameters</h4>{_json_pre(a.params)}")
    if a.judge and (a.judge.identity or a.judge.rules or a.judge.details):
        parts.append(f"<h4>Judge identity</h4>{_json_pre(a.judge.model_dump(mode='json'))}")
    if a.judge_agreement:
        parts.append(f"<h4>Judge agreement</h4>{_json_pre(a.judge_agreement)}")
    return (f"<details><summary>Provenance of <code>{_e(a.audit)}</code>: parameters, judge, data, timings"
            f"</summary>{''.join(parts)}</details>")


def _gate_checks_table(checks: list[Check]) -> str:
    rows = []
    for c in sorted(checks, key=lambda c: _STATUS_ORDER[c.status]):
        threshold = "" if c.threshold is None else f"{_e(c.op)} {_e(value_label(c.threshold))}"
        rows.append(f"<tr><td>{_status_badge(c.status)}</td><td><code>{_e(c.audit)}</code></td><td>{_e(c.rule)}</td>"
                    f'<td class="num">{_num(c.observed)}</td><td class="num">{threshold}</td>'
                    f"<td>{_e(c.reason)}</td></tr>")
    head = ('<thead><tr><th>status</th><th>audit</th><th>check</th><th class="num">observed</th>'
            '<th class="num">threshold</th><th>reason</th></tr></thead>')
    return f'<div class="scroll"><table>{head}<tbody>{"".join(rows)}</tbody></table></div>'


def _controls_html(a: AuditResult) -> str:
    """The audit's own controls: what each must show, what it showed, pass or fail."""
    rows = "".join(
        f"<tr><td>{_status_badge('pass' if c.passed else 'fail')}</td><td><code>{_e(c.name)}</code></td>"
        f"<td>{_e(c.kind)}</td>{_cell(c.observed)}<td>{_e(c.expected)}</td><td>{_e(c.detail)}</td></tr>"
        for c in a.controls)
    head = ('<thead><tr><th>status</th><th>control</th><th>kind</th><th class="num">observed</th>'
            "<th>must be</th><th>what was measured</th></tr></thead>")
    return f'<div class="scroll"><table>{head}<tbody>{rows}</tbody></table></div>'


def _inconclusive_html(audits: list[AuditResult]) -> str:
    """The banner under the verdict: audits whose controls failed cannot be read as "no risk"."""
    bad = [a for a in audits if not a.conclusive]
    if not bad:
        return ""
    items = "".join(f"<li><b>{_e(a.title or a.audit)}</b>: "
                    + "; ".join(f"{_e(c.kind)} control <code>{_e(c.name)}</code> failed"
                                + (f" ({_e(c.expected)})" if c.expected else "") for c in a.failed_controls)
                    + "</li>" for a in bad)
    return (f'<div class="inconclusive"><b>INCONCLUSIVE: {len(bad)} audit{"s" if len(bad) != 1 else ""}</b> '
            f"failed a control, so a low risk there is not an all-clear.<ul>{items}</ul></div>")


# ------------------------------------------------------------------------------------------ validity
def power_by_audit(audits: list[AuditResult]) -> dict[str, Metric]:
    """``power[<audit>]`` of the run's validity result: audit name -> metric (the first validity result wins).

    Power is the detection rate at the audit's strongest planted organism (docs/validity.md). An audit
    the validity result did not measure is absent: its section gets no validity badge.
    """
    out: dict[str, Metric] = {}
    for a in audits:
        if a.kind == "validity":
            for m in a.metrics:
                if m.name == "power" and m.group:
                    out.setdefault(m.group, m)
    return out


def low_power(m: Metric) -> bool:
    """Whether a ``power`` metric is below `VALIDATED_POWER`, or unmeasured (None): not a validated audit."""
    return m.value is None or m.value < VALIDATED_POWER - 1e-9


def _k_of_n(m: Metric) -> str:
    """``k/n`` of a rate made by `Metric.rate` (``0/0`` when nothing was measured)."""
    n = m.n or 0
    return f"{round(m.value * n) if m.value is not None else 0}/{n}"


def _power_badge(m: Metric) -> str:
    """``low power 0.33`` or ``validated 1.00``: the badge beside an audit's verdict."""
    rate = f"{m.value:.2f}" if m.value is not None else "n/a"
    if low_power(m):
        return f'<span class="badge val-low">low power {rate}</span>'
    return f'<span class="badge val-ok">validated {rate}</span>'


def _power_note(m: Metric, validity_anchor: str) -> str:
    """The line under an audit's heading: how often it caught its strongest planted defect."""
    link = f'<a href="#{_e(validity_anchor)}">validity section</a>' if validity_anchor else "validity section"
    if m.value is None:
        text = f"Low power: no validity run on its strongest organism reached a verdict ({link})"
    else:
        head = "Low power" if low_power(m) else "Validated"
        text = f"{head}: detects its strongest organism in {_e(_k_of_n(m))} runs ({link})"
    text += "; a low risk here is weak evidence of no defect." if low_power(m) else "."
    return f'<p class="valnote">{text}</p>'


def _low_power_html(audits: list[AuditResult], power: dict[str, Metric], validity_anchor: str) -> str:
    """The banner under the verdict: audits that miss their own planted defects too often."""
    low = [(name, m) for name, m in power.items() if low_power(m)]
    if not low:
        return ""
    titles = {a.audit: a.title or a.audit for a in audits if a.kind != "validity"}
    link = f'<a href="#{_e(validity_anchor)}">validity section</a>' if validity_anchor else "validity section"
    items = "".join(f"<li><b>{_e(titles.get(name, name))}</b>: "
                    + (f"detects its strongest organism in {_e(_k_of_n(m))} runs" if m.value is not None
                       else "not measured: no validity run on its strongest organism reached a verdict")
                    + "</li>" for name, m in low)
    verb = "detects its" if len(low) == 1 else "detect their"
    return (f'<div class="lowpower"><b>LOW POWER: {len(low)} audit{"s" if len(low) != 1 else ""}</b> {verb} '
            f"strongest planted defect in fewer than {VALIDATED_POWER:.0%} of runs on model organisms"
            f"{', or was not measured' if any(m.value is None for _, m in low) else ''} ({link}): a low risk "
            f"there may miss a real defect.<ul>{items}</ul></div>")


def _rate_text(m: Metric | None) -> str:
    """``value [lo, hi] (k/n)`` of a rate metric; a dash when absent, ``not measured`` without runs."""
    if m is None:
        return '<span class="muted">&mdash;</span>'
    if m.value is None:
        return f'<span class="muted">not measured ({_e(_k_of_n(m))})</span>'
    return f'{_num(m.value)} {_ci(m)} <span class="muted">({_e(_k_of_n(m))})</span>'


def _inconclusive_runs(m: Metric | None) -> str:
    """`` (k inconclusive)`` from an ``inconclusive_rate`` metric; empty when none was."""
    if m is None or not m.value or not m.n:
        return ""
    return f' <span class="muted">({round(m.value * m.n)} inconclusive)</span>'


def _validity_headline(a: AuditResult) -> str:
    """The headline table (audit | organism | planted effect | detection | false alarms | runs) from metrics."""
    first: dict[tuple[str, str], Metric] = {}
    for m in a.metrics:
        first.setdefault((m.name, m.group), m)
    organisms: dict[str, list[tuple[str, Metric]]] = {}
    for m in a.metrics:
        if m.name in ("detection_rate", "power", "false_alarm_rate", "mde") and m.group:
            audit, _, organism = m.group.partition("@")
            organisms.setdefault(audit, [])
            if m.name == "detection_rate" and first[(m.name, m.group)] is m:
                organisms[audit].append((organism, m))
    if not organisms:
        return ""
    rows = []
    for audit, cells in organisms.items():
        power = first.get(("power", audit))
        # One minimum detectable strength per organism kind (``mde[audit@kind]``; ``mde[audit]`` also read).
        mdes = [(g.partition("@")[2], m) for (n, g), m in first.items()
                if n == "mde" and (g == audit or g.startswith(f"{audit}@"))]
        span = f' rowspan="{len(cells)}"' if len(cells) > 1 else ""
        audit_td = f"<td{span}><code>{_e(audit)}</code>"
        if power is not None:
            audit_td += f"<br>{_power_badge(power)}"
        for kind, mde in mdes:
            reach = (f"{_num(mde.value)}{f' {_e(mde.unit)}' if mde.unit else ''}" if mde.value is not None
                     else "not reached")
            audit_td += (f'<br><span class="muted">MDE{f" {_e(kind)}" if kind else ""} (power {MDE_POWER:g}): '
                         f"{reach}</span>")
        audit_td += "</td>"
        fa = first.get(("false_alarm_rate", audit))
        blocking = first.get(("blocking_false_alarm_rate", audit))
        # Beside the rate, how many of those false alarms would fail the gate (the rest are warnings).
        blocks = (f'<br><span class="muted">gate fails: {_rate_text(blocking)}</span>'
                  if blocking is not None and fa is not None and blocking.value != fa.value else "")
        fa_td = (f'<td class="num"{span}>{_rate_text(fa)}{blocks}'
                 f'{_inconclusive_runs(first.get(("inconclusive_rate", f"{audit}@clean")))}</td>')
        if not cells:
            rows.append(f'<tr>{audit_td}<td class="muted">&mdash;</td><td class="muted">&mdash;</td>'
                        f'<td class="muted">&mdash;</td>{fa_td}<td class="muted">&mdash;</td></tr>')
            continue
        for i, (organism, m) in enumerate(cells):
            runs = (f'{"" if m.n is None else m.n}'
                    f'{_inconclusive_runs(first.get(("inconclusive_rate", f"{audit}@{organism}")))}')
            rows.append(f"<tr>{audit_td if i == 0 else ''}<td class=\"organism\"><code>{_e(organism)}</code></td>"
                        f"<td>{_e(m.description)}</td><td class=\"num\">{_rate_text(m)}</td>"
                        f'{fa_td if i == 0 else ""}<td class="num">{runs}</td></tr>')
    head = ('<thead><tr><th>audit</th><th>organism</th><th>planted effect</th><th class="num">detection rate (CI)</th>'
            '<th class="num">false-alarm rate (CI)</th><th class="num">runs</th></tr></thead>')
    legend = (f'<p class="muted">Detection rate: share of runs on a model organism (kind:strength) in which the '
              f"audit flagged its planted defect; false-alarm rate: share of the conclusive runs on clean controls it "
              f"flagged (inconclusive clean runs are counted beside it, never as 0 false alarms); "
              f"95% Wilson intervals, (flagged/runs). Power = detection rate at the strongest organism: "
              f"validated at {VALIDATED_POWER:g} or more. MDE: the smallest planted strength detected in at least "
              f"{MDE_POWER:.0%} of runs.</p>")
    return (f'<h3>Detection and false alarms</h3><div class="scroll"><table>{head}<tbody>{"".join(rows)}'
            f"</tbody></table></div>{legend}")


def _validity_section(a: AuditResult, anchor: str, gate: GateOutcome | None, with_provenance: bool) -> str:
    """The Validity section: each audit's detection rate on model organisms and false alarms on clean controls."""
    sub = [f"<code>{_e(a.audit)}</code>"]
    if a.title:
        sub.append(_e(a.title))
    audits, kinds, seeds = a.params.get("audits"), a.params.get("organisms"), a.params.get("seeds")
    if isinstance(audits, list | tuple):
        sub.append(f"{len(audits)} audit{'s' if len(audits) != 1 else ''}")
    if isinstance(kinds, list | tuple) and kinds:
        sub.append("organisms " + ", ".join(_e(k) for k in kinds))
    if seeds is not None:
        sub.append(f"seeds {_e(seeds)}")
    if a.model is not None:
        sub.append(f"model <code>{_e(a.model.short)}</code>")
    if a.timings:
        sub.append(f"wall time {_duration(sum(a.timings.values()))}")
    parts = [f'<section class="audit" id="{_e(anchor)}">',
             f"<h2>Validity {badge(a.risk)}" + ("" if a.conclusive else f" {badge('inconclusive')}")
             + '<span class="tag">validity</span></h2>', f'<p class="sub">{" &middot; ".join(sub)}</p>']
    if not a.conclusive:
        parts.append(_inconclusive_html([a]))
    if gate is not None:
        bad = [c for c in gate.for_audit(a.audit) if c.status != "pass"]
        if bad:
            parts.append(f"<h3>Release gate</h3>{_gate_checks_table(bad)}")
    headline = _validity_headline(a)
    parts.append(headline)
    parts.append(f"<h3>Findings</h3>{_findings_html(a)}")
    if a.controls:
        parts.append(f"<h3>Controls</h3>{_controls_html(a)}")
    if a.plots:
        parts.append("<h3>Power curves</h3>" + "".join(
            _plot_html(p, y_range=(0.0, 1.0), ref_y=MDE_POWER, ref_label=f"{MDE_POWER:g} (MDE level)")
            if p.kind == "line" else _plot_html(p) for p in a.plots))
    tables = []
    for t in a.tables:
        if headline and t.title == _DETECTION_TABLE:  # the headline shows it; every column stays one click away
            tables.append(f"<details><summary>{_e(t.title)}: every column</summary>{_table_html(t)}</details>")
        else:
            tables.append(_table_html(t))
    if tables:
        parts.append("<h3>Tables</h3>" + "".join(tables))
    parts.append(f"<details><summary>All metrics ({len(a.metrics)})</summary>{_metrics_html(a)}</details>")
    return "".join(parts) + _section_end(a, with_provenance)


def _section_end(a: AuditResult, with_provenance: bool) -> str:
    """The end every audit section shares: examples, notes, provenance, the closing tag."""
    parts = [_examples_html(a)]
    if a.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in a.notes) + "</ul>")
    if with_provenance:
        parts.append(_audit_provenance(a))
    return "".join(parts) + "</section>"


# ------------------------------------------------------------------------------------- one audit, any kind
def _audit_section(a: AuditResult, anchor: str, gate: GateOutcome | None, with_provenance: bool,
                   power: Metric | None = None, validity_anchor: str = "", refs: Refs | None = None) -> str:
    """One audit's section; ``power`` (the validity result's ``power[<audit>]``) adds its validity badge.

    ``refs`` (`metric_references`) puts each metric's policy threshold and baseline value beside it.
    """
    if a.kind == "validity":
        return _validity_section(a, anchor, gate, with_provenance)
    kind = "interpretability" if a.kind == "interpretability" else "risk audit"
    sub = [f"<code>{_e(a.audit)}</code>"]
    if a.model is not None:
        sub.append(f"model <code>{_e(a.model.short)}</code>")
    if a.seed is not None:
        sub.append(f"seed {_e(a.seed)}")
    if a.timings:
        sub.append(f"wall time {_duration(sum(a.timings.values()))}")
    parts = [f'<section class="audit" id="{_e(anchor)}">',
             f'<h2>{_e(a.title or a.audit)} {badge(a.risk)}'
             + ("" if a.conclusive else f" {badge('inconclusive')}")
             + ("" if power is None else f" {_power_badge(power)}") + f'<span class="tag">{_e(kind)}</span></h2>',
             f'<p class="sub">{" &middot; ".join(sub)}</p>']
    if power is not None:
        parts.append(_power_note(power, validity_anchor))
    if not a.conclusive:
        parts.append(_inconclusive_html([a]))
    if gate is not None:
        checks = gate.for_audit(a.audit)
        bad = [c for c in checks if c.status != "pass"]
        if bad:
            parts.append(f"<h3>Release gate</h3>{_gate_checks_table(bad)}")
    parts.append(f"<h3>Findings</h3>{_findings_html(a, refs)}")
    if a.controls:
        parts.append(f"<h3>Controls</h3>{_controls_html(a)}")
    parts.append(f"<h3>Metrics</h3>{_metrics_html(a, refs)}")
    if a.plots:
        parts.append("<h3>Figures</h3>" + "".join(_plot_html(p) for p in a.plots))
    if a.tables:
        parts.append("<h3>Tables</h3>" + "".join(_table_html(t) for t in a.tables))
    return "".join(parts) + _section_end(a, with_provenance)


# ------------------------------------------------------------------------------------------ report
def _findings_count(a: AuditResult) -> str:
    if not a.findings:
        return '<span class="muted">none</span>'
    counts = {s: sum(f.severity == s for f in a.findings) for s in reversed(list(SEVERITY_ORDER))}
    return ", ".join(f"{n} {_e(s)}" for s, n in counts.items() if n)


def _gate_cell(gate: GateOutcome, audit: str) -> str:
    checks = gate.for_audit(audit)
    if not checks:
        return '<span class="muted">no rule</span>'
    c = {s: sum(x.status == s for x in checks) for s in ("pass", "fail", "warn", "skip")}
    status = "fail" if c["fail"] else "warn" if c["warn"] else "pass" if c["pass"] else "skip"
    extra = ", ".join(f"{n} {s}" for s, n in c.items() if n and s != "pass")
    return (f"{_status_badge(status)} {c['pass']}/{len(checks)} passed"
            + (f' <span class="muted">({_e(extra)})</span>' if extra else ""))


def _summary_section(run: RunResults, audits: list[AuditResult], anchors: dict[int, str],
                     gate: GateOutcome | None, power: dict[str, Metric], refs: Refs | None = None) -> str:
    rows = []
    refs = refs or {}
    for a in audits:
        keys = ("<br>".join(_metric_inline(m, refs.get((a.audit, m.key), "")) for m in key_metrics(a))
                or '<span class="muted">&mdash;</span>')
        gate_td = f"<td>{_gate_cell(gate, a.audit)}</td>" if gate is not None else ""
        pw = power.get(a.audit) if a.kind != "validity" else None
        rows.append(f'<tr><td><a href="#{_e(anchors[id(a)])}">{_e(a.title or a.audit)}</a><br>'
                    f'<span class="muted">{_e(a.kind)}</span></td><td>{badge(a.risk)}'
                    + ("" if a.conclusive else f"<br>{badge('inconclusive')}")
                    + ("" if pw is None else f"<br>{_power_badge(pw)}") + f"</td><td>{keys}</td>"
                    f"<td>{_findings_count(a)}</td>{gate_td}</tr>")
    for name, err in sorted(run.errors.items()):
        gate_td = f"<td>{_gate_cell(gate, name)}</td>" if gate is not None else ""
        rows.append(f"<tr><td><code>{_e(name)}</code></td><td>{_status_badge('error')}</td>"
                    f'<td colspan="2">did not finish: {_e(err)}</td>{gate_td}</tr>')
    if not rows:
        return ('<section id="summary"><h2>Risk summary</h2><p class="muted">This run has no audit results.</p>'
                "</section>")
    gate_th = "<th>gate</th>" if gate is not None else ""
    head = f"<thead><tr><th>audit</th><th>risk</th><th>key numbers (95% CI)</th><th>findings</th>{gate_th}</tr></thead>"
    legend = ('<p class="muted">Risk = the most severe finding of the audit. Levels: '
              + " ".join(badge(level) for level in RISK_LEVELS)
              + ('. Validity (the audit\'s power on model organisms): <span class="badge val-ok">validated</span> '
                 f"detects its strongest planted defect in at least {VALIDATED_POWER:.0%} of runs, "
                 '<span class="badge val-low">low power</span> in fewer' if power else "") + ".</p>")
    return (f'<section id="summary"><h2>Risk summary</h2><table>{head}<tbody>{"".join(rows)}</tbody></table>'
            f"{legend}</section>")


def _gate_section(gate: GateOutcome) -> str:
    c = gate.counts()
    head = (f"<p>Policy <code>{_e(gate.policy)}</code> (hash <code>{_e(gate.policy_hash)}</code>)"
            + (f", baseline <code>{_e(gate.baseline)}</code>" if gate.baseline else "")
            + f": {c['pass']} passed, {c['fail']} failed, {c['warn']} warnings, {c['skip']} skipped.</p>")
    bad = [x for x in gate.checks if x.status != "pass"]
    body = _gate_checks_table(bad) if bad else '<p class="muted">Every check passed.</p>'
    every = (f"<details><summary>All {len(gate.checks)} checks</summary>{_gate_checks_table(gate.checks)}</details>"
             if gate.checks else "")
    return f'<section id="gate"><h2>Release gate</h2>{head}{body}{every}</section>'


def _model_rows(model: ModelInfo | None) -> list[tuple[str, str]]:
    if model is None:
        return [("model", '<span class="muted">not recorded</span>')]
    return [("id", f"<code>{_e(model.id)}</code>"), ("source", f"<code>{_e(model.source)}</code>"),
            ("fingerprint", f"<code>{_e(model.fingerprint)}</code> ({_e(model.fingerprint_method)})"),
            ("architecture", _e(model.architecture) or "&mdash;"),
            ("layers / width", f"{model.n_layers} layers, d_model {model.d_model}"),
            ("dtype / device", f"{_e(model.dtype)} on {_e(model.device)}"), ("backend", _e(model.backend)),
            ("versions", ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(model.versions.items())) or "&mdash;")]


def _methods_section(run: RunResults, audits: list[AuditResult]) -> str:
    model = run.model_info
    run_rows = [("name", _e(run.name) or "&mdash;"), ("profile", _e(run.profile) or "&mdash;"),
                ("seed", _e(run.seed) if run.seed is not None else "&mdash;"),
                ("config hash", f"<code>{_e(run.config_hash)}</code>"),
                ("started", _e(run.started) or "&mdash;"), ("finished", _e(run.finished) or "&mdash;"),
                ("wall time", _duration(run.wall_time_s)),
                ("versions", ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(run.versions.items())) or "&mdash;"),
                ("results schema", _e(run.schema_))]
    warn = []
    if model is not None:
        for a in audits:
            if a.model is not None and a.model.fingerprint != model.fingerprint:
                warn.append(f'<p class="warnbox">Audit <code>{_e(a.audit)}</code> ran on a different model: '
                            f"<code>{_e(a.model.short)}</code>, not <code>{_e(model.short)}</code>.</p>")
    rows = []
    for a in audits:
        n_hash = len(a.data_hashes)
        hashes = (", ".join(f"<code>{_e(v[:12])}</code>" for _, v in sorted(a.data_hashes.items())[:2])
                  + (f" +{n_hash - 2}" if n_hash > 2 else "")) if n_hash else '<span class="muted">&mdash;</span>'
        rows.append(f"<tr><td><code>{_e(a.audit)}</code></td><td><code>{_e(a.params_hash) or '&mdash;'}</code></td>"
                    f"<td class=\"num\">{_e(a.seed) if a.seed is not None else '&mdash;'}</td>"
                    f"<td>{_judge_html(a.judge)}</td><td>{_agreement_html(a.judge_agreement)}</td><td>{hashes}</td>"
                    f'<td class="num">{_duration(sum(a.timings.values())) if a.timings else "&mdash;"}</td></tr>')
    audit_table = ""
    if rows:
        audit_table = ('<h3>Audits</h3><div class="scroll"><table><thead><tr><th>audit</th><th>params hash</th>'
                       '<th class="num">seed</th><th>judge</th><th>judge agreement</th><th>data hashes</th>'
                       f'<th class="num">time</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
                       + "".join(_audit_provenance(a) for a in audits))
    errors = ""
    if run.errors:
        errors = "<h3>Audits that did not finish</h3><ul>" + "".join(
            f"<li><code>{_e(k)}</code>: {_e(v)}</li>" for k, v in sorted(run.errors.items())) + "</ul>"
    return (f'<section id="methods"><h2>Methods &amp; provenance</h2><h3>Model</h3>{_kv(_model_rows(model))}'
            f"{''.join(warn)}<h3>Run</h3>{_kv(run_rows)}"
            f"<details><summary>Run configuration</summary>{_json_pre(run.config)}</details>"
            f"{audit_table}{errors}</section>")


def _model_risk(audits: list[AuditResult]) -> str:
    """The highest risk over the audits of the model; a validity finding grades an audit, not the model."""
    levels = [a.risk for a in audits if a.kind != "validity" and a.risk != "none"]
    return max(levels, key=SEVERITY_ORDER.__getitem__) if levels else "none"


def _header(run: RunResults, gate: GateOutcome | None, power: dict[str, Metric], validity_anchor: str) -> str:
    model = run.model_info
    title = run.name or (f"Audit of {model.id}" if model is not None else "Audit report")
    meta = []
    if model is not None:
        meta.append(f"<span>model <code>{_e(model.id)}</code> <code>{_e(model.fingerprint[:12])}</code></span>")
    if run.started:
        meta.append(f"<span>run {_e(run.started)}</span>")
    if run.profile:
        meta.append(f"<span>profile {_e(run.profile)}</span>")
    meta.append(f"<span>{len(run.audits)} audit{'s' if len(run.audits) != 1 else ''}</span>")
    if power:
        n_low = sum(low_power(m) for m in power.values())
        meta.append(f"<span>validity: {n_low} of {len(power)} audit{'s' if len(power) != 1 else ''} low power</span>")
    risk = _model_risk(run.audits)
    if gate is not None:
        c = gate.counts()
        verdict = "PASS" if gate.passed else "FAIL"
        detail = (f"{c['fail']} of {len(gate.checks)} checks failed" if c["fail"]
                  else f"all {c['pass']} checks passed" if not c["warn"] and not c["skip"]
                  else f"{c['pass']} passed, {c['warn']} warnings, {c['skip']} skipped")
        box = (f'<div class="verdict verdict-{verdict.lower()}">Release gate: {verdict} &mdash; {_e(detail)} '
               f'(policy <code>{_e(gate.policy)}</code>) &middot; highest risk {badge(risk)}</div>')
    else:
        box = f'<div class="verdict">Not gated &middot; highest risk {badge(risk)}</div>'
    return (f'<header class="top"><div class="eyebrow">personascope audit report</div><h1>{_e(title)}</h1>'
            f'<div class="meta">{" ".join(meta)}</div>{box}{_inconclusive_html(run.audits)}'
            f"{_low_power_html(run.audits, power, validity_anchor)}</header>")


def _body(run: RunResults, gate: GateOutcome | None, baseline: RunResults | None = None) -> str:
    audits = ordered_audits(run.audits)
    refs = metric_references(run, gate, baseline)
    used: set[str] = set()
    anchors = {id(a): _slug(a.audit, used) for a in audits}
    power = power_by_audit(audits)
    validity_anchor = next((anchors[id(a)] for a in audits if a.kind == "validity"), "")
    nav = ['<a href="#summary">Risk summary</a>']
    if gate is not None:
        nav.append('<a href="#gate">Release gate</a>')
    nav += [f'<a href="#{_e(anchors[id(a)])}">{"Validity" if a.kind == "validity" else _e(a.title or a.audit)}</a>'
            for a in audits]
    nav.append('<a href="#methods">Methods &amp; provenance</a>')
    sections = "".join(_audit_section(a, anchors[id(a)], gate, False,
                                      power.get(a.audit) if a.kind != "validity" else None, validity_anchor, refs)
                       for a in audits)
    version = run.versions.get("personascope", "")
    footer = (f"<footer>Written by personascope {_e(version)} from the run's results "
              f"(config hash <code>{_e(run.config_hash)}</code>). All model and user text is shown escaped, "
              f"as written; examples may contain offensive or private-looking text produced by the model.</footer>")
    return (f'{_header(run, gate, power, validity_anchor)}<nav class="toc">{" ".join(nav)}</nav>'
            f"{_baseline_note(baseline)}{_summary_section(run, audits, anchors, gate, power, refs)}"
            f"{_gate_section(gate) if gate is not None else ''}{sections}{_methods_section(run, audits)}{footer}")


def _baseline_note(baseline: RunResults | None) -> str:
    if baseline is None:
        return ""
    model = baseline.model_info
    what = f"model <code>{_e(model.id)}</code> <code>{_e(model.fingerprint[:12])}</code>, " if model else ""
    return (f'<p class="muted">Baseline: each metric the baseline run also has shows its value there and the change '
            f"(red: in the worse direction). Baseline run {_e(baseline.name)} ({what}started "
            f"{_e(baseline.started)}).</p>")


def render_report(run: RunResults, gate: GateOutcome | None = None, baseline: RunResults | None = None) -> str:
    """The self-contained HTML report of ``run`` (and of its gate outcome, when given) as one string.

    Beside each key metric stand its references: the policy's threshold (with ``gate``) and the
    baseline run's value and the change (with ``baseline``). Same run (in memory or read back from
    ``results.json``), same bytes: nothing here reads the clock.
    """
    run, gate = _canonical_run(run), _canonical_gate(gate)
    baseline = _canonical_run(baseline) if baseline is not None else None
    model = run.model_info
    title = run.name or f"personascope report{f': {model.id}' if model is not None else ''}"
    return ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>\n{CSS}\nbody{{margin:0;background:#fff}}\n</style>\n</head>\n"
            f'<body>\n<div class="psc">\n{_body(run, gate, baseline)}\n</div>\n</body>\n</html>\n')


def render_run_fragment(run: RunResults, gate: GateOutcome | None = None, baseline: RunResults | None = None) -> str:
    """The report as an embeddable ``<div>`` with its scoped style (for Jupyter)."""
    run, gate = _canonical_run(run), _canonical_gate(gate)
    baseline = _canonical_run(baseline) if baseline is not None else None
    return f'<div class="psc"><style>{CSS}</style>{_body(run, gate, baseline)}</div>'


def render_audit_fragment(result: AuditResult) -> str:
    """One audit's section as an embeddable ``<div>`` with its scoped style (``AuditResult._repr_html_``)."""
    result = _canonical_audit(result)
    return (f'<div class="psc"><style>{CSS}</style>'
            f"{_audit_section(result, _slug(result.audit, set()), None, with_provenance=True)}</div>")


def write_report(run: RunResults, out_dir: str | Path, gate: GateOutcome | None = None,
                 baseline: RunResults | None = None) -> tuple[Path, Path]:
    """Write ``results.json`` and ``report.html`` into ``out_dir`` (``baseline``: shown beside each metric)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = run.save(out / RESULTS_FILE)
    report = out / REPORT_FILE
    tmp = report.with_name(report.name + ".tmp")
    tmp.write_text(render_report(run, gate, baseline), encoding="utf-8")
    tmp.replace(report)
    return results, report


__all__ = ["CSS", "MDE_POWER", "REPORT_FILE", "VALIDATED_POWER", "badge", "key_metrics", "low_power", "ordered_audits",
           "power_by_audit", "render_audit_fragment", "render_report", "render_run_fragment", "write_report"]
