"""`RunResults`: one run of several audits with its provenance, saved as ``results.json``.

The file is canonical JSON (sorted keys, indent 1), so the same run always gives the same bytes,
and the HTML report and the release gate read it without torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import DataError
from ..records import ModelInfo, package_versions, stable_hash, write_text_atomic
from ..results import AuditResult, check_result_schema

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
            self.config_hash = stable_hash(self.config)[:16]
        return self

    # ------------------------------------------------------------------ reading
    def audit(self, name: str) -> AuditResult:
        """The result of audit ``name``; `KeyError` naming the audits present otherwise."""
        for a in self.audits:
            if a.audit == name:
                return a
        raise KeyError(f"no audit {name!r} in this run; present: {', '.join(a.audit for a in self.audits) or 'none'}")

    @property
    def risk(self) -> str:
        """Highest risk over the audits (``"none"`` without findings)."""
        from ..results import SEVERITY_ORDER

        levels = [a.risk for a in self.audits if a.risk != "none"]
        return max(levels, key=SEVERITY_ORDER.__getitem__) if levels else "none"

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
                            f"`personascope run` wrote (or its folder).") from exc
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
        if not isinstance(schema, int) or schema > RUN_SCHEMA:
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

    def _repr_html_(self) -> str:
        from .html import render_run_fragment

        return render_run_fragment(self)


def _as_dict(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object, got {type(data).__name__}")
    return data


__all__ = ["RESULTS_FILE", "RUN_SCHEMA", "RunResults"]
