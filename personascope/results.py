"""Versioned, JSON-able audit results. No torch import: reports and the gate read only these.

An `AuditResult` says what an audit measured (metrics with confidence intervals), what it
concluded (findings with a severity), what it saw (a few examples, redacted where needed), and
how it was made (parameters, model, judge, seed, data hashes, versions, timings).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import DataError
from .records import JudgeIdentity, ModelInfo, finite, now_iso, package_versions, write_text_atomic

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
    """One illustrative item: the prompt, the (possibly redacted) model output, how it scored."""

    model_config = ConfigDict(extra="forbid")

    subject: str = ""
    prompt: str = ""
    output: str = ""
    score: float | str | None = None
    note: str = ""
    redacted: bool = False


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
    if isinstance(schema, int) and schema > RESULT_SCHEMA:
        what = f"audit {data.get('audit')!r} in {source}" if "audit" in data else source
        raise DataError(f"{what} has result schema {schema}; this personascope reads up to {RESULT_SCHEMA}: "
                        "upgrade personascope")


class AuditResult(BaseModel):
    """Everything one audit produced, versioned (``schema``) and self-describing."""

    model_config = ConfigDict(extra="forbid")

    schema_: int = Field(RESULT_SCHEMA, alias="schema")
    audit: str
    title: str = ""
    kind: Literal["risk", "interpretability"] = "risk"
    params: dict[str, Any] = Field(default_factory=dict)
    params_hash: str = ""
    model: ModelInfo | None = None
    judge: JudgeRecord | None = None
    judge_agreement: dict[str, Any] | None = None
    metrics: list[Metric] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list)
    plots: list[Plot] = Field(default_factory=list)
    tables: list[Table] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
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

    def _repr_html_(self) -> str:
        from .reports.html import render_audit_fragment

        return render_audit_fragment(self)
