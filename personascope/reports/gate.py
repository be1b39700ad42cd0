"""The release gate: check a run's results against a TOML policy, for CI.

A policy holds thresholds on metrics, limits on findings and a tolerance for regressions against a
previous run's results::

    [policy]
    name = "release"
    missing = "fail"          # a rule whose audit or metric is not in the results fails ("skip": ignored)

    [[rule]]
    audit = "ci_leakage"
    metric = "violation_rate"  # or "asr_t[defended]": name[group]
    max = 0.2
    use = "ci_low"            # value | ci_low | ci_high: which number is compared

    [[rule]]
    audit = "*"               # every audit in the results
    max_findings = 0
    min_severity = "high"     # count findings at least this severe

    [baseline]
    tolerance = 0.05          # a metric may get worse than the baseline run by at most this much

`evaluate` turns a run and a policy into a `GateOutcome` (one `Check` per rule and metric);
`gate_main` is the CLI: exit code 0 when every blocking check passes, 1 when one fails, 2 on a
usage or data error (bad policy, unreadable results). Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import catalog
from ..errors import DataError, PersonascopeError, UsageError
from ..records import stable_hash
from ..results import SEVERITY_ORDER, AuditResult, Check, GateOutcome, Metric, RunResults, Severity, format_number

USE = ("value", "ci_low", "ci_high")
MISSING = ("fail", "skip")
SEVERITIES = tuple(SEVERITY_ORDER)
BUILTIN_DIR = "policies"

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


# ------------------------------------------------------------------------------------------ policy
class Rule(BaseModel):
    """One policy rule: a threshold on a metric (``min``/``max``) or a limit on findings (``max_findings``).

    Attributes:
        audit: Audit name, or ``"*"`` for every audit in the results (findings rules).
        metric: Metric name, or ``name[group]``; ``group`` may also be given on its own.
        group: Metric group; ``"*"`` checks the metric in every group it has.
        min, max: Bounds on the compared number (either or both).
        use: Which number is compared: the point estimate or an end of its confidence interval.
        max_findings: Most findings at or above ``min_severity`` allowed.
        min_severity: Severity from which findings count.
        severity: How serious a failure of this rule is (below the policy's ``fail_severity``: a warning).
        description: Why the rule exists (shown with a failure).
        missing: Per-rule override of the policy's ``missing``.
        name: Short label for the rule (default: built from the rule).
    """

    model_config = ConfigDict(extra="forbid", strict=True)  # TOML types as written: max = "0.2" is an error

    audit: str
    metric: str | None = None
    group: str | None = None
    min: float | None = None
    max: float | None = None
    use: Literal["value", "ci_low", "ci_high"] = "value"
    max_findings: int | None = Field(None, ge=0)
    min_severity: Severity = "high"
    severity: Severity = "high"
    description: str = ""
    missing: Literal["fail", "skip"] | None = None
    name: str = ""


class BaselinePolicy(BaseModel):
    """How a run is compared with a previous run's results (only metrics that say which way is worse).

    Attributes:
        tolerance: Largest allowed worsening (absolute, or a fraction of the baseline when ``relative``).
        relative: Read ``tolerance`` as a fraction of the baseline value's magnitude.
        use_ci: Count only a worsening that remains after taking both confidence intervals into account
            (current CI end nearest the baseline vs baseline CI end nearest the current value).
        audits: Audits to compare (default: all present in both runs).
        metrics: Metric keys to compare (``key`` or ``audit.key``; default: all with a direction).
        tolerances: Per-metric tolerance overrides, keyed ``audit.key`` or ``key``.
        missing: What a baseline metric absent from the current run does (default: skip).
        severity: Severity of a regression (below the policy's ``fail_severity``: a warning).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    tolerance: float = Field(0.05, ge=0)
    relative: bool = False
    use_ci: bool = False
    audits: list[str] | None = None
    metrics: list[str] | None = None
    tolerances: dict[str, float] = Field(default_factory=dict)
    missing: Literal["fail", "skip"] = "skip"
    severity: Severity = "high"


class PolicyMeta(BaseModel):
    """The ``[policy]`` table: name, what missing results do, and which failures block."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = ""
    description: str = ""
    missing: Literal["fail", "skip"] = "fail"
    fail_severity: Severity = "info"
    #: What an audit with a failed control (INCONCLUSIVE: a positive control missed, no power, a judge
    #: artifact) does: block the release, or only warn. Never pass silently.
    inconclusive: Literal["fail", "warn"] = "fail"
    #: Per-audit overrides of ``inconclusive`` (e.g. interpretability audits that only warn).
    inconclusive_audits: dict[str, Literal["fail", "warn"]] = Field(default_factory=dict)


class Policy(BaseModel):
    """A parsed gate policy (``[policy]``, ``[[rule]]`` and ``[baseline]`` tables)."""

    model_config = ConfigDict(extra="forbid")

    policy: PolicyMeta = Field(default_factory=PolicyMeta)
    rule: list[Rule] = Field(default_factory=list)
    baseline: BaselinePolicy = Field(default_factory=BaselinePolicy)
    source: str = ""

    @property
    def name(self) -> str:
        """The policy's name, or its file name."""
        return self.policy.name or Path(self.source).stem or "policy"

    @property
    def hash(self) -> str:
        """Hash of the policy's content (not its file name)."""
        return stable_hash(self.model_dump(mode="json", exclude={"source"}))[:16]


_TABLE_KEYS: dict[str, type[BaseModel]] = {"policy": PolicyMeta, "rule": Rule, "baseline": BaselinePolicy}


def builtin_policies() -> list[str]:
    """Names of the policies shipped with personascope (``personascope/data/policies/*.toml``)."""
    folder = resources.files("personascope") / "data" / BUILTIN_DIR
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def policy_path(name_or_path: str | Path) -> Path:
    """The file of a policy given as a path or as the name of a built-in policy (``default``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == "" and str(name_or_path) in builtin_policies():
        return Path(str(resources.files("personascope") / "data" / BUILTIN_DIR / f"{name_or_path}.toml"))
    raise UsageError(f"Policy {str(name_or_path)!r} is not a file nor a built-in policy; built-in: "
                     f"{', '.join(builtin_policies())}")


def load_policy(name_or_path: str | Path) -> Policy:
    """Read and validate a TOML policy; `UsageError` naming the bad key and the allowed keys."""
    path = policy_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot read policy {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"Cannot read policy {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Parse TOML policy text (see the module docstring); `UsageError` on any unknown key or bad value."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML: {exc}") from exc
    _check_keys(data, set(_TABLE_KEYS), source, "top level")
    for table, model in _TABLE_KEYS.items():
        if table not in data:
            continue
        entries = data[table]
        if table == "rule":
            if not isinstance(entries, list):
                raise UsageError(f"{source}: rules are written [[rule]] (an array of tables), not [rule]")
        elif not isinstance(entries, dict):
            raise UsageError(f"{source}: '{table}' must be a table [{table}]")
        for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            where = f"rule {i + 1}" if table == "rule" else f"[{table}]"
            if not isinstance(entry, dict):
                raise UsageError(f"{source}: {where} must be a table")
            _check_keys(entry, set(model.model_fields), source, where)
            try:
                model.model_validate(entry)
            except Exception as exc:
                raise UsageError(f"{source}: {where}: {_pydantic_message(exc, model)}") from exc
    policy = Policy.model_validate({**data, "source": source})
    if not policy.rule and "baseline" not in data:
        raise UsageError(f"{source}: the policy checks nothing; add a [[rule]] table (or a [baseline] table "
                         f"for --baseline), e.g. from the built-in 'default' policy")
    for audit in policy.policy.inconclusive_audits:
        _check_audit(audit, f"{source}: [policy] inconclusive_audits")
    for i, rule in enumerate(policy.rule):
        _check_rule(rule, f"{source}: rule {i + 1}")
        _check_names(rule, f"{source}: rule {i + 1}")
    _check_baseline_names(policy.baseline, f"{source}: [baseline]")
    return policy


def _closest(name: str, known: list[str]) -> str:
    """``; did you mean 'x'?`` for the known name closest to ``name`` (empty when none is close)."""
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _check_audit(audit: str, where: str) -> None:
    if audit != "*" and audit not in catalog.BY_NAME:
        known = list(catalog.BY_NAME)
        raise UsageError(f"{where}: unknown audit {audit!r}{_closest(audit, known)} (audits: {', '.join(known)})")


def _check_metric(audit: str | None, metric: str, where: str) -> None:
    """A metric name (before ``[group]``) must be one the audit declares (any audit's, when ``audit`` is None)."""
    name = _split_key(metric)[0]
    entries = [catalog.BY_NAME[audit]] if audit is not None else list(catalog.CATALOG)
    known = sorted({m for e in entries for m in e.metrics})
    if name not in known:
        owner = f"audit {audit!r}" if audit is not None else "any audit"
        raise UsageError(f"{where}: {owner} has no metric {name!r}{_closest(name, known)} "
                         f"(metrics: {', '.join(known)})")


def _check_names(rule: Rule, where: str) -> None:
    """Audit and metric names must exist whatever ``missing`` says: a typo must never disable a rule."""
    _check_audit(rule.audit, where)
    if rule.metric is not None and rule.audit != "*":
        _check_metric(rule.audit, rule.metric, where)


def _check_baseline_names(bp: BaselinePolicy, where: str) -> None:
    for audit in bp.audits or []:
        _check_audit(audit, f"{where} audits")
    for key in [*(bp.metrics or []), *bp.tolerances]:
        # "audit.key" or "key"; a metric name has no dot, so the first dot splits off an audit.
        audit, dot, metric = key.partition(".")
        if dot and audit in catalog.BY_NAME:
            _check_metric(audit, metric, f"{where} {key!r}")
        else:
            _check_metric(None, key, f"{where} {key!r}")


def _check_keys(entry: dict[str, Any], allowed: set[str], source: str, where: str) -> None:
    bad = sorted(set(entry) - allowed)
    if bad:
        raise UsageError(f"{source}: {where} has unknown key(s) {', '.join(repr(b) for b in bad)}; allowed keys: "
                         f"{', '.join(sorted(allowed))}")


def _pydantic_message(exc: Exception, model: type[BaseModel]) -> str:
    """One line per bad value: the key, what was given, what is allowed."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for err in errors():
        key = ".".join(str(p) for p in err.get("loc", ())) or "?"
        hint = ""
        if err.get("type", "").endswith(("float_type", "int_type", "bool_type")) and isinstance(err.get("input"), str):
            hint = ": write numbers and booleans without quotes"
        lines.append(f"key {key!r}: {err.get('msg', 'invalid')} (got {err.get('input')!r}{hint})")
    return "; ".join(lines)


def _check_rule(rule: Rule, where: str) -> None:
    threshold = rule.min is not None or rule.max is not None
    if rule.max_findings is not None:
        if rule.metric is not None or threshold:
            raise UsageError(f"{where}: a rule has either max_findings or metric with min/max, not both; "
                             f"split it into two [[rule]] tables")
        return
    if rule.metric is None:
        raise UsageError(f"{where} (audit {rule.audit!r}): needs 'metric' with 'min' and/or 'max', "
                         f"or 'max_findings'")
    if not threshold:
        raise UsageError(f"{where} (audit {rule.audit!r}, metric {rule.metric!r}): needs 'min' and/or 'max'")
    if rule.audit == "*":
        raise UsageError(f"{where}: audit '*' is only allowed with max_findings; name the audit of metric "
                         f"{rule.metric!r}")
    if rule.min is not None and rule.max is not None and rule.min > rule.max:
        raise UsageError(f"{where}: min {rule.min} is greater than max {rule.max}")
    if "[" in rule.metric and rule.group is not None:
        raise UsageError(f"{where}: metric {rule.metric!r} already names a group; drop 'group' or write the "
                         f"metric name alone")


# ------------------------------------------------------------------------------------------ outcome
_TOL = 1e-9


def _value(m: Metric, use: str) -> float | None:
    v = getattr(m, use)
    return float(v) if v is not None and math.isfinite(v) else None


def _status(ok: bool, severity: str, policy: Policy) -> Literal["pass", "fail", "warn"]:
    if ok:
        return "pass"
    blocking = SEVERITY_ORDER[severity] >= SEVERITY_ORDER[policy.policy.fail_severity]
    return "fail" if blocking else "warn"


def _missing(rule_label: str, kind: Literal["threshold", "findings", "baseline"], audit: str, metric: str,
             how: str, reason: str, severity: str, description: str = "",
             threshold: float | None = None, op: str = "") -> Check:
    skip = how == "skip"
    return Check(rule=rule_label, kind=kind, audit=audit, metric=metric, observed=None, threshold=threshold,
                 op=op, passed=skip, status="skip" if skip else "fail", reason=f"missing: {reason}",
                 severity=severity, description=description)


def _split_key(metric: str) -> tuple[str, str | None]:
    if metric.endswith("]") and "[" in metric:
        name, group = metric[:-1].split("[", 1)
        return name, group
    return metric, None


def _rule_checks(rule: Rule, run: RunResults, policy: Policy) -> list[Check]:
    how = rule.missing or policy.policy.missing
    by_name = {a.audit: a for a in run.audits}
    present = ", ".join(by_name) or "none"
    if rule.max_findings is not None:
        targets = list(by_name.values()) if rule.audit == "*" else [by_name.get(rule.audit)]
        flabel = rule.name or f"findings>={rule.min_severity} <= {rule.max_findings}"
        if rule.audit != "*" and targets[0] is None:
            why = run.errors.get(rule.audit)
            reason = f"audit {rule.audit!r} failed: {why}" if why else f"no audit {rule.audit!r} in results " \
                                                                        f"(present: {present})"
            return [_missing(flabel, "findings", rule.audit, "findings", how, reason, rule.severity,
                             rule.description, float(rule.max_findings), "<=")]
        out = []
        for a in targets:
            assert a is not None
            bad = [f for f in a.findings if SEVERITY_ORDER[f.severity] >= SEVERITY_ORDER[rule.min_severity]]
            ok = len(bad) <= rule.max_findings
            reason = "" if ok else f"{len(bad)} finding(s) at or above {rule.min_severity}: " + "; ".join(
                f"[{f.severity}] {f.title}" for f in bad[:3]) + (" ..." if len(bad) > 3 else "")
            out.append(Check(rule=flabel, kind="findings", audit=a.audit, metric="findings", observed=float(len(bad)),
                             threshold=float(rule.max_findings), op="<=", passed=ok,
                             status=_status(ok, rule.severity, policy), reason=reason, severity=rule.severity,
                             description=rule.description))
        return out

    assert rule.metric is not None
    name, group = _split_key(rule.metric)
    if group is None:
        group = rule.group if rule.group is not None else ""
    bounds: list[tuple[str, float]] = [(op, t) for op, t in ((">=", rule.min), ("<=", rule.max)) if t is not None]
    key = f"{name}[{group}]" if group else name

    def label(op: str, t: float, metric_key: str) -> str:
        base = rule.name or f"{metric_key}: {rule.use} {op} {format_number(t)}"
        return base if not rule.name or len(bounds) == 1 else f"{base} ({'min' if op == '>=' else 'max'})"

    audit = by_name.get(rule.audit)
    if audit is None:
        why = run.errors.get(rule.audit)
        reason = f"audit {rule.audit!r} failed: {why}" if why else f"no audit {rule.audit!r} in results " \
                                                                    f"(present: {present})"
        return [_missing(label(op, t, key), "threshold", rule.audit, key, how, reason, rule.severity,
                         rule.description, t, op) for op, t in bounds]
    if group == "*":
        metrics = [m for m in audit.metrics if m.name == name]
    else:
        metrics = [m for m in audit.metrics if m.name == name and m.group == group]
    if not metrics:
        known = ", ".join(sorted({m.key for m in audit.metrics})) or "none"
        return [_missing(label(op, t, key), "threshold", rule.audit, key, how,
                         f"no metric {key!r} in audit {rule.audit!r} (present: {known})", rule.severity,
                         rule.description, t, op) for op, t in bounds]
    out = []
    for m in metrics:
        observed = _value(m, rule.use)
        for op, t in bounds:
            if observed is None:
                out.append(_missing(label(op, t, m.key), "threshold", rule.audit, m.key, how,
                                    f"metric {m.key!r} has no {rule.use}", rule.severity, rule.description, t, op))
                continue
            # A threshold met up to float rounding (a bootstrap mean of 0.49999999999999994 against
            # min 0.5) passes: the difference is an artefact of summation order, not of the model.
            tol = _TOL * max(1.0, abs(t))
            ok = observed >= t - tol if op == ">=" else observed <= t + tol
            reason = "" if ok else (f"{rule.use} {format_number(observed)} {'below' if op == '>=' else 'above'} "
                                    f"{'min' if op == '>=' else 'max'} {format_number(t)}")
            out.append(Check(rule=label(op, t, m.key), kind="threshold", audit=rule.audit, metric=m.key,
                             observed=observed, threshold=t, op=op, passed=ok,
                             status=_status(ok, rule.severity, policy), reason=reason, severity=rule.severity,
                             description=rule.description or m.description))
    return out


def _baseline_checks(run: RunResults, base: RunResults, policy: Policy) -> list[Check]:
    bp = policy.baseline
    current = {a.audit: a for a in run.audits}
    out: list[Check] = []
    for old in base.audits:
        if bp.audits is not None and old.audit not in bp.audits:
            continue
        new = current.get(old.audit)
        for m in old.metrics:
            if m.higher_is_worse is None or _value(m, "value") is None:
                continue  # no direction: a change is neither better nor worse
            if bp.metrics is not None and m.key not in bp.metrics and f"{old.audit}.{m.key}" not in bp.metrics:
                continue
            tol = bp.tolerances.get(f"{old.audit}.{m.key}", bp.tolerances.get(m.key, bp.tolerance))
            label = f"{m.key}: no regression > {format_number(tol)}{' x baseline' if bp.relative else ''}"
            cur = new.metrics_by_key().get(m.key) if new is not None else None
            if cur is None or _value(cur, "value") is None:
                where = f"audit {old.audit!r} not in results" if new is None else f"metric {m.key!r} not in results"
                out.append(_missing(label, "baseline", old.audit, m.key, bp.missing,
                                    f"{where} (baseline has it)", bp.severity))
                continue
            out.append(_compare(label, old, new, m, cur, tol, policy))  # type: ignore[arg-type]
    return out


def _compare(label: str, old: AuditResult, new: AuditResult, m: Metric, cur: Metric, tol: float,
             policy: Policy) -> Check:
    bp = policy.baseline
    sign = 1.0 if m.higher_is_worse else -1.0
    b, c = float(m.value), float(cur.value)  # type: ignore[arg-type]
    if bp.use_ci:
        # The most favourable reading of both intervals: only a worsening that survives it counts.
        c_near = cur.ci_low if m.higher_is_worse else cur.ci_high
        b_near = m.ci_high if m.higher_is_worse else m.ci_low
        c = float(c_near) if c_near is not None else c
        b = float(b_near) if b_near is not None else b
    worse_by = sign * (c - b)
    allowed = tol * abs(float(m.value)) if bp.relative else tol  # type: ignore[arg-type]
    ok = worse_by <= allowed + 1e-12
    direction = "higher" if m.higher_is_worse else "lower"
    was, now = format_number(float(m.value)), format_number(float(cur.value))  # type: ignore[arg-type]
    reason = "" if ok else (f"worse than baseline by {format_number(worse_by)} ({was} -> {now}, {direction} is worse; "
                            f"allowed {format_number(allowed)})")
    if not ok and old.params_hash and new.params_hash and old.params_hash != new.params_hash:
        reason += "; note: audit parameters differ from the baseline's"
    return Check(rule=label, kind="baseline", audit=new.audit, metric=m.key, observed=float(cur.value),  # type: ignore[arg-type]
                 threshold=float(m.value) + sign * allowed, op="<=" if m.higher_is_worse else ">=",  # type: ignore[arg-type]
                 passed=ok, status=_status(ok, bp.severity, policy), reason=reason, severity=bp.severity,
                 description=f"baseline {format_number(float(m.value))}")  # type: ignore[arg-type]


def _control_checks(run: RunResults, policy: Policy) -> list[Check]:
    """One check per control of every audit in the run: a failed control makes the audit INCONCLUSIVE.

    An inconclusive audit cannot say "no risk", so by default it blocks the release
    (``[policy] inconclusive = "warn"`` makes it a warning).
    """
    out = []
    for a in run.audits:
        for c in a.controls:
            how = policy.policy.inconclusive_audits.get(a.audit, policy.policy.inconclusive)
            status: Literal["pass", "fail", "warn"] = "pass" if c.passed else how
            reason = "" if c.passed else (f"INCONCLUSIVE: {c.kind} control failed"
                                          f"{f' (expected {c.expected})' if c.expected else ''}"
                                          f"{f': {c.detail}' if c.detail else ''}")
            out.append(Check(rule=f"control {c.name}", kind="control", audit=a.audit, metric=c.name,
                             observed=c.observed, threshold=None, op="", passed=c.passed, status=status,
                             reason=reason, severity="high", description=f"{c.kind} control; {c.expected}".strip()))
    return out


def _absent_audits(run: RunResults, policy: Policy) -> list[Check]:
    """One check per audit the policy's rules name that the results lack (failed, or never run).

    A partial run (``personascope audit bias --out d``) is gated as partial: the gate says which audits
    are missing and how to add them, instead of failing every rule of every absent audit. The check
    fails unless every rule of that audit says ``missing = "skip"``.
    """
    present = {a.audit for a in run.audits}
    out = []
    for name in dict.fromkeys(r.audit for r in policy.rule if r.audit != "*"):
        if name in present:
            continue
        rules = [r for r in policy.rule if r.audit == name]
        skip = all((r.missing or policy.policy.missing) == "skip" for r in rules)
        why = run.errors.get(name)
        short = (catalog.BY_NAME[name].short or (name,))[0] if name in catalog.BY_NAME else name
        reason = (f"audit {name!r} failed: {why}" if why else
                  f"audit {name!r} is not in the results (present: {', '.join(sorted(present)) or 'none'}); add it "
                  f"with 'personascope audit {short} --out <this run's folder>' (results accumulate)")
        worst = max((r.severity for r in rules), key=lambda sev: SEVERITY_ORDER[sev])
        out.append(Check(rule=f"audit {name} present", kind="missing", audit=name, metric="", observed=None,
                         threshold=None, passed=skip, status="skip" if skip else "fail",
                         reason=f"missing: {reason}", severity=worst,
                         description=f"{len(rules)} rule(s) of the policy check this audit"))
    return out


def evaluate(run: RunResults, policy: Policy, baseline: RunResults | None = None,
             baseline_source: str | None = None) -> GateOutcome:
    """Check ``run`` against ``policy`` (and against ``baseline`` for regressions): a `GateOutcome`."""
    checks: list[Check] = _control_checks(run, policy)
    absent = _absent_audits(run, policy)
    checks += absent
    for rule in policy.rule:
        if rule.audit not in {c.audit for c in absent}:
            checks += _rule_checks(rule, run, policy)
    if baseline is not None:
        checks += _baseline_checks(run, baseline, policy)
    return GateOutcome(policy=policy.name, policy_hash=policy.hash, checks=checks,
                       baseline=baseline_source if baseline is not None else None)


# ------------------------------------------------------------------------------------------ CLI
def gate_main(results_path: str | Path, policy_path: str | Path, junit_path: str | Path | None = None,
              baseline_path: str | Path | None = None, *, verbose: bool = False,
              stream: IO[str] | None = None, json_out: bool = False) -> int:
    """Run the gate as a CI step: 0 pass, 1 a blocking check failed, 2 usage or data error.

    Prints the verdict and a table of what failed and why (every check with ``verbose``) to
    ``stream`` (stdout); errors go to stderr. ``junit_path`` also writes JUnit XML for CI test views.
    With ``json_out`` the stream gets one JSON document instead (the outcome with every check, its
    ``passed`` verdict, counts per status and the exit code) and the text table goes to stderr.
    """
    out = stream or sys.stdout
    text = sys.stderr if json_out else out
    try:
        policy = load_policy(policy_path)
        run = RunResults.load(results_path)
        base = RunResults.load(baseline_path) if baseline_path is not None else None
    except (PersonascopeError, DataError) as exc:
        print(f"personascope gate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    outcome = evaluate(run, policy, base, str(baseline_path) if baseline_path is not None else None)
    print(outcome.to_text(all_checks=verbose), file=text)
    if baseline_path is not None and not any(c.kind == "baseline" for c in outcome.checks):
        print("note: the baseline has no metric with a direction (higher_is_worse) to compare", file=text)
    if junit_path is not None:
        from .junit import write_junit

        try:
            write_junit(outcome, junit_path)
        except OSError as exc:
            print(f"personascope gate: error: cannot write JUnit XML {junit_path}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    code = EXIT_PASS if outcome.passed else EXIT_FAIL
    if json_out:
        print(json.dumps({**outcome.model_dump(mode="json"), "passed": outcome.passed, "counts": outcome.counts(),
                          "exit_code": code, "results": str(results_path)}, indent=1), file=out)
    return code


__all__ = ["EXIT_FAIL", "EXIT_PASS", "EXIT_USAGE", "BaselinePolicy", "Check", "GateOutcome", "Policy", "Rule",
           "builtin_policies", "evaluate", "gate_main", "load_policy", "parse_policy", "policy_path"]
