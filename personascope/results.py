"""Versioned, JSON-able records of what a run produced. No torch: reports and the gate read only these.

An `AuditResult` says what an audit measured (metrics with confidence intervals), what it
concluded (findings with a severity), what it saw (a few examples, redacted where needed), and
how it was made (parameters, model, judge, seed, data hashes, versions, timings). `RunResults`
(``results.json``) holds a run's audits and its provenance; `GateOutcome` and its `Check` rows are
what the release gate decided. `personascope.reports` renders these and imports nothing back;
Jupyter shows them as HTML through the display hook that ``import personascope`` registers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import DataError
from .records import JudgeIdentity, ModelInfo, finite, now_iso, package_versions, stable_hash, write_text_atomic

RESULT_SCHEMA = 1
Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


class Metric(BaseModel):
    """One measured number with its uncertainty.

    ``group`` names the subgroup it belongs to (a persona, a layer, a domain) so that a metric name
    can appear once per group; ``key`` is ``name`` or ``name[group]``, the handle the gate uses.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    group: str = ""
    unit: str = ""
    higher_is_worse: bool | None = None
    description: str = ""

    @property
    def key(self) -> str:
        """``name`` or ``name[group]``."""
        return f"{self.name}[{self.group}]" if self.group else self.name

    @classmethod
    def of(cls, name: str, value: Any, ci: Sequence[Any] | None = None, *, ndigits: int | None = None,
           **kw: Any) -> Metric:
        """A metric from a value (NaN/inf become None) and an optional ``(low, high)`` interval."""
        lo, hi = (ci[0], ci[1]) if ci is not None else (None, None)
        return cls(name=name, value=finite(value, ndigits), ci_low=finite(lo, ndigits),
                   ci_high=finite(hi, ndigits), **kw)

    @classmethod
    def from_ci(cls, name: str, ci: Sequence[Any], *, ndigits: int | None = None, **kw: Any) -> Metric:
        """A metric from a ``(point, low, high)`` triple, as every function of `personascope.stats` returns."""
        return cls.of(name, ci[0], (ci[1], ci[2]), ndigits=ndigits, **kw)

    @classmethod
    def rate(cls, name: str, k: int, n: int, **kw: Any) -> Metric:
        """The proportion ``k/n`` with its Wilson interval (value None when ``n == 0``)."""
        from .stats import wilson

        if n <= 0:
            return cls(name=name, value=None, n=n, **kw)
        lo, hi = wilson(k, n)
        return cls(name=name, value=k / n, ci_low=lo, ci_high=hi, n=n, **kw)


class Finding(BaseModel):
    """A conclusion worth a reader's attention, with the metric that supports it."""

    model_config = ConfigDict(extra="forbid")

    severity: Severity
    title: str
    detail: str = ""
    metric: str | None = None  # a Metric.key
    subject: str = ""


class Example(BaseModel):
    """One illustrative item: the prompt, the (possibly redacted) model output, how it scored.

    ``sample`` is the id of its full record in the audit's per-sample file (`Sample`), if any.
    """

    model_config = ConfigDict(extra="forbid")

    subject: str = ""
    prompt: str = ""
    output: str = ""
    score: float | str | None = None
    note: str = ""
    redacted: bool = False
    sample: str | None = None


SAMPLES_DIR = "samples"


class Sample(BaseModel):
    """One scored item of an audit, as written to ``OUT/samples/<audit>.jsonl`` (like inspect's sample logs).

    Attributes:
        audit: The audit that scored it.
        id: Unique within the audit; an `Example`'s ``sample`` names it.
        subject: The condition it belongs to (a persona, a user/context, a trait and layer).
        prompt: What the model was given (the system message first when there is one).
        output: What the model produced (its answer, or the option it scored highest).
        score: How it was scored (a number or an outcome label).
        judge: Who scored it (a rule, option log-probs, a judge model's name).
        redacted: Private values in ``prompt``/``output`` were replaced by their entity type.
        meta: Anything else the audit records about the item (gold answer, condition kind, run).
    """

    model_config = ConfigDict(extra="forbid")

    audit: str
    id: str
    subject: str = ""
    prompt: str = ""
    output: str = ""
    score: float | str | None = None
    judge: str = ""
    redacted: bool = False
    meta: dict[str, Any] = Field(default_factory=dict)


def samples_path(out: str | Path, audit: str) -> Path:
    """Where a run folder keeps the per-sample records of ``audit``."""
    return Path(out) / SAMPLES_DIR / f"{audit}.jsonl"


def write_samples(path: str | Path, samples: Sequence[Sample]) -> Path:
    """Write ``samples`` as JSON lines, atomically (one record per line, keys sorted)."""
    lines = [json.dumps(s.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) for s in samples]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_samples(path: str | Path) -> list[Sample]:
    """The records of a per-sample file; `DataError` naming the line of a bad one."""
    out = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"Cannot read samples {path}: {exc}") from exc
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(Sample.model_validate_json(line))
            except Exception as exc:  # pydantic.ValidationError names the field
                raise DataError(f"{path}:{i}: not a sample record: {exc}") from exc
    return out


class Series(BaseModel):
    """A curve for a plot: y (with optional CI band) against x, one line per label."""

    model_config = ConfigDict(extra="forbid")

    label: str
    x: list[float | str]
    y: list[float | None]
    lo: list[float | None] | None = None
    hi: list[float | None] | None = None


class Plot(BaseModel):
    """A figure described as data (rendered to SVG by `personascope.reports`)."""

    model_config = ConfigDict(extra="forbid")

    title: str
    x_label: str = ""
    y_label: str = ""
    kind: Literal["line", "bar", "heatmap"] = "line"
    series: list[Series] = Field(default_factory=list)
    # heatmap: values[row][col] with row/col labels
    values: list[list[float | None]] | None = None
    rows: list[str] | None = None
    cols: list[str] | None = None
    note: str = ""


class Table(BaseModel):
    """A table for the report: column names and rows of JSON scalars."""

    model_config = ConfigDict(extra="forbid")

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


class Control(BaseModel):
    """A check an audit runs on itself; the audit's verdict is trusted only when all its controls pass.

    Attributes:
        name: Short name (``positive_control``, ``judge_noise``, ``power``, ...).
        kind: ``positive``: a planted effect the audit must detect; ``negative``: a null it must not
            flag; ``power``: the audit could see an effect of the policy's size (baseline above chance,
            minimum detectable effect below the threshold); ``artifact``: the score does not reward
            degraded text or another confound.
        passed: Whether the control came out as it must.
        observed: The number the control looked at (None: not a number).
        expected: What it must be, in words (``"> 99th percentile of 16 random directions"``).
        detail: What was measured and how.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["positive", "negative", "power", "artifact"]
    passed: bool
    observed: float | None = None
    expected: str = ""
    detail: str = ""

    @field_validator("observed", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> float | None:
        return finite(v)


class JudgeRecord(BaseModel):
    """Which judge an audit used, what for, and how it was set up (one shape for every audit).

    Attributes:
        identity: The run's judge (None: no model judge; the audit used rule scorers only).
        uses: What the audit used the judge for (e.g. ``"trait ratings"``, ``"atom ratings"``).
        rules: Rule judges the audit scored with on top (choice extraction, value matching, ...).
        details: Audit-specific set-up: rubric hashes, calibration, the layer of a monitor, ...
    """

    model_config = ConfigDict(extra="forbid")

    identity: JudgeIdentity | None = None
    uses: list[str] = Field(default_factory=list)
    rules: list[JudgeIdentity] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Read the dict shapes that results of personascope 0.1 wrote before this record existed."""
        if not isinstance(data, dict) or set(data) <= {"identity", "uses", "rules", "details"}:
            return data
        if "kind" in data:  # a bare JudgeIdentity
            return {"identity": data}
        rest = {k: v for k, v in data.items() if k != "identity"}
        return {"identity": data.get("identity"), "details": rest}

    @property
    def kind(self) -> str:
        """The judge's kind, ``"none"`` without a model judge."""
        return self.identity.kind if self.identity is not None else "none"


def check_result_schema(data: Any, source: str) -> None:
    """Raise `DataError` when ``data`` (an audit result dict) has a newer schema than this package reads."""
    schema = data.get("schema", RESULT_SCHEMA) if isinstance(data, dict) else RESULT_SCHEMA
    if not isinstance(schema, int) or isinstance(schema, bool):  # "1" is a broken file, not a newer one
        what = f"audit {data.get('audit')!r} in {source}" if "audit" in data else source
        raise DataError(f"{what}: schema must be an integer, got {schema!r}")
    if schema > RESULT_SCHEMA:
        what = f"audit {data.get('audit')!r} in {source}" if "audit" in data else source
        raise DataError(f"{what} has result schema {schema}; this personascope reads up to {RESULT_SCHEMA}: "
                        "upgrade personascope")


class AuditResult(BaseModel):
    """Everything one audit produced, versioned (``schema``) and self-describing."""

    model_config = ConfigDict(extra="forbid")

    schema_: int = Field(RESULT_SCHEMA, alias="schema")
    audit: str
    title: str = ""
    kind: Literal["risk", "interpretability", "validity"] = "risk"
    params: dict[str, Any] = Field(default_factory=dict)
    params_hash: str = ""
    model: ModelInfo | None = None
    judge: JudgeRecord | None = None
    judge_agreement: dict[str, Any] | None = None
    metrics: list[Metric] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list)
    #: Every scored item; written to ``samples/<audit>.jsonl`` by the runner, not into the result's JSON.
    samples: list[Sample] = Field(default_factory=list, exclude=True)
    samples_file: str | None = None
    n_samples: int = 0
    plots: list[Plot] = Field(default_factory=list)
    tables: list[Table] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    controls: list[Control] = Field(default_factory=list)
    data_hashes: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    versions: dict[str, str] = Field(default_factory=lambda: package_versions("torch", "transformers"))
    started: str = Field(default_factory=now_iso)
    finished: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)

    # ------------------------------------------------------------------ reading
    def metric(self, name: str, group: str = "") -> Metric:
        """The metric ``name`` (in ``group``); `KeyError` naming the available keys if missing."""
        for m in self.metrics:
            if m.name == name and m.group == group:
                return m
        raise KeyError(f"{self.audit}: no metric {name!r}{f' [{group}]' if group else ''}; "
                       f"available: {', '.join(sorted({m.key for m in self.metrics}))}")

    def metrics_by_key(self) -> dict[str, Metric]:
        """``{metric.key: metric}``."""
        return {m.key: m for m in self.metrics}

    @property
    def risk(self) -> str:
        """Highest finding severity, ``"none"`` without findings."""
        if not self.findings:
            return "none"
        return max(self.findings, key=lambda f: SEVERITY_ORDER[f.severity]).severity

    @property
    def failed_controls(self) -> list[Control]:
        """The audit's controls that did not come out as they must."""
        return [c for c in self.controls if not c.passed]

    @property
    def conclusive(self) -> bool:
        """True when every control passed (an audit without controls is conclusive by default)."""
        return not self.failed_controls

    @property
    def verdict(self) -> str:
        """``"inconclusive"`` when a control failed, else the highest finding severity (`risk`)."""
        return "inconclusive" if not self.conclusive else self.risk

    def add_sample(self, id: str, prompt: str, output: str, score: float | str | None = None, *,
                   subject: str = "", judge: str = "", redacted: bool = False, **meta: Any) -> str:
        """Record one scored item (see `Sample`) and return its id, for an `Example` to link to."""
        self.samples.append(Sample(audit=self.audit, id=id, subject=subject, prompt=prompt, output=output,
                                   score=score, judge=judge, redacted=redacted, meta=meta))
        self.n_samples = len(self.samples)
        return id

    # ------------------------------------------------------------------ files
    def to_json(self) -> str:
        """Canonical JSON text (stable key order, so a re-render is byte-identical)."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=1, sort_keys=True)

    def save(self, path: str | Path) -> Path:
        """Write JSON to ``path`` atomically."""
        return write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> AuditResult:
        """Read a result written by `save`; `DataError` on a missing or invalid file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read audit result {path}: {exc}") from exc
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "audit result") -> AuditResult:
        """Validate a dict; a newer schema than this package reads is a clear error."""
        check_result_schema(data, source)
        try:
            return cls.model_validate(data)
        except Exception as exc:  # pydantic.ValidationError lists every bad field
            raise DataError(f"{source} is not a valid audit result: {exc}") from exc


# ====================================================================== runs and gate outcomes
RUN_SCHEMA = 1
RESULTS_FILE = "results.json"


class RunResults(BaseModel):
    """The results of one run: which audits ran, on what model, with which config, and what they found.

    Attributes:
        schema: Version of this record's layout (a newer one than this package reads is a `DataError`).
        name: A label for the run (shown in the report title).
        model: The audited model (each audit also records the model it ran on).
        profile: Budget profile the audits ran with (``quick`` or ``full``).
        seed: Run-level seed (each audit records its own too).
        config: The run configuration as given (audits, parameters, judge, ...).
        config_hash: Hash of ``config`` (filled in from it when left empty).
        versions: Package versions of the run.
        started, finished: ISO 8601 UTC timestamps of the run.
        wall_time_s: Wall time of the whole run in seconds.
        audits: One `AuditResult` per audit that finished.
        errors: Audits that did not finish: name -> error message (the gate counts them as missing).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: int = Field(RUN_SCHEMA, alias="schema")
    name: str = ""
    model: ModelInfo | None = None
    profile: str = ""
    seed: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    versions: dict[str, str] = Field(default_factory=lambda: package_versions("torch", "transformers", "pydantic"))
    started: str = ""
    finished: str | None = None
    wall_time_s: float | None = None
    audits: list[AuditResult] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fill_config_hash(self) -> RunResults:
        if not self.config_hash:
            # Without ``out`` (as `runner.config_hash`): the same run written elsewhere has the same hash.
            self.config_hash = stable_hash({k: v for k, v in self.config.items() if k != "out"})[:16]
        return self

    # ------------------------------------------------------------------ reading
    def audit(self, name: str) -> AuditResult:
        """The result of audit ``name``; `KeyError` naming the audits present otherwise."""
        for a in self.audits:
            if a.audit == name:
                return a
        raise KeyError(f"no audit {name!r} in this run; present: {', '.join(a.audit for a in self.audits) or 'none'}")

    def audit_or_none(self, name: str) -> AuditResult | None:
        """The result of audit ``name``, or None when the run has none."""
        return next((a for a in self.audits if a.audit == name), None)

    @property
    def risk(self) -> str:
        """Highest risk over the audits (``"none"`` without findings)."""
        levels = [a.risk for a in self.audits if a.risk != "none"]
        return max(levels, key=SEVERITY_ORDER.__getitem__) if levels else "none"

    @property
    def inconclusive(self) -> list[AuditResult]:
        """Audits with a failed control (their risk cannot be read as "no risk")."""
        return [a for a in self.audits if not a.conclusive]

    @property
    def model_info(self) -> ModelInfo | None:
        """The run's model, or the first audit's when the run did not record one."""
        return self.model or next((a.model for a in self.audits if a.model is not None), None)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (field aliases, so ``schema`` not ``schema_``)."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        """Canonical JSON text: sorted keys, indent 1 (same run, same bytes)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        """Write JSON to ``path`` (a file, or a folder that gets ``results.json``) atomically."""
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        return write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> RunResults:
        """Read ``results.json`` (or a folder holding one); `DataError` on a missing or invalid file.

        A single saved `AuditResult`, or a JSON list of them, is read too, as a run without run-level
        provenance, so that the gate and the report also work on one audit's output.
        """
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read run results {path}: {exc}. Pass the results.json that "
                            f"`personascope audit` wrote (or its folder).") from exc
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: Any, source: str = "run results") -> RunResults:
        """Validate parsed JSON: a run dict, one audit result dict, or a list of audit result dicts."""
        if isinstance(data, list):
            return cls.from_audits([AuditResult.from_dict(_as_dict(d, source), source) for d in data])
        data = _as_dict(data, source)
        if "audits" not in data and "audit" in data:
            return cls.from_audits([AuditResult.from_dict(data, source)])
        schema = data.get("schema", RUN_SCHEMA)
        if not isinstance(schema, int) or isinstance(schema, bool):  # "1" is a broken file, not a newer one
            raise DataError(f"{source}: schema must be an integer, got {schema!r}")
        if schema > RUN_SCHEMA:
            raise DataError(f"{source} has run schema {schema!r}; this personascope reads up to {RUN_SCHEMA}: "
                            f"upgrade personascope")
        audits = data.get("audits", [])
        if not isinstance(audits, list):
            raise DataError(f"{source}: 'audits' must be a list of audit results")
        for a in audits:  # per-audit schema check, with a clear message
            check_result_schema(a, source)
        try:
            return cls.model_validate(data)
        except Exception as exc:  # pydantic.ValidationError lists every bad field
            raise DataError(f"{source} is not a valid run results file: {exc}") from exc

    @classmethod
    def from_audits(cls, audits: list[AuditResult], **kw: Any) -> RunResults:
        """A run made of ``audits``, with the model, seed and time span taken from them."""
        model = next((a.model for a in audits if a.model is not None), None)
        seeds = {a.seed for a in audits if a.seed is not None}
        ends = [a.finished for a in audits if a.finished]
        base: dict[str, Any] = {
            "model": model, "seed": seeds.pop() if len(seeds) == 1 else None,
            "started": min((a.started for a in audits), default=""), "finished": max(ends) if ends else None,
            "config": {"audits": {a.audit: a.params for a in audits}},
        }
        return cls(audits=audits, **{**base, **kw})

def _as_dict(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object, got {type(data).__name__}")
    return data


def format_number(v: float | None) -> str:
    """A number as a gate table shows it: ``-`` for None, integers without a point, else 4 significant digits."""
    if v is None:
        return "-"
    if float(v).is_integer() and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.4g}"



class Check(BaseModel):
    """One checked rule against one metric (or one audit's findings, or one baseline comparison).

    Kind ``missing``: one check per audit that the policy's rules name and the results lack (its rules
    are not checked one by one).

    ``status`` is ``pass``, ``fail`` (blocks the release), ``warn`` (failed, but below the policy's
    ``fail_severity``) or ``skip`` (the result was missing and the policy says to skip).
    """

    model_config = ConfigDict(extra="forbid")

    rule: str
    kind: Literal["threshold", "findings", "baseline", "control", "missing"]
    audit: str
    metric: str
    observed: float | None
    threshold: float | None
    op: str = ""
    passed: bool
    status: Literal["pass", "fail", "warn", "skip"]
    reason: str = ""
    severity: Severity = "high"
    description: str = ""


class GateOutcome(BaseModel):
    """All checks of a policy against a run; ``passed`` when no check has status ``fail``."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    policy_hash: str
    baseline: str | None = None
    checks: list[Check] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check blocks the release."""
        return not any(c.status == "fail" for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """Checks that block the release."""
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        """Checks that failed below the policy's ``fail_severity``."""
        return [c for c in self.checks if c.status == "warn"]

    def counts(self) -> dict[str, int]:
        """Number of checks per status."""
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "warn", "skip")}

    def for_audit(self, audit: str) -> list[Check]:
        """The checks of one audit."""
        return [c for c in self.checks if c.audit == audit]

    def summary(self) -> str:
        """One line: verdict and counts."""
        c = self.counts()
        verdict = "PASS" if self.passed else "FAIL"
        return (f"gate {verdict} ({self.policy}): {c['pass']} passed, {c['fail']} failed, {c['warn']} warnings, "
                f"{c['skip']} skipped of {len(self.checks)} checks")

    def to_text(self, all_checks: bool = False) -> str:
        """A plain-text table of the failed, warned and skipped checks (all with ``all_checks``) and why."""
        rows = [c for c in self.checks if all_checks or c.status != "pass"]
        lines = [self.summary()]
        if rows:
            head = ("status", "audit", "check", "observed", "threshold", "reason")
            table = [head] + [(c.status.upper(), c.audit, c.rule, format_number(c.observed),
                               f"{c.op} {format_number(c.threshold)}".strip(), c.reason) for c in rows]
            widths = [min(48, max(len(r[k]) for r in table)) for k in range(len(head) - 1)]
            for r in table:
                cells = [r[k][:48].ljust(widths[k]) for k in range(len(head) - 1)]
                lines.append("  ".join([*cells, r[-1]]).rstrip())
        return "\n".join(lines)
