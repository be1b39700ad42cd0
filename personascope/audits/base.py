"""The audit contract: a frozen dataclass of parameters with ``run(model) -> AuditResult``.

Audits are data: their parameters are the dataclass fields (JSON scalars, lists and dicts), so
a config file, the CLI and a results file all describe the same audit. ``QUICK`` holds the
overrides of the ``quick`` budget profile (the demo: the whole run in minutes on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import UsageError
from ..records import stable_hash
from ..results import AuditResult

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter
    from ..judges.base import Judge

PROFILES = ("quick", "full")


@dataclasses.dataclass(frozen=True)
class Audit(ABC):
    """Base of every audit. Subclasses are frozen dataclasses and set ``name`` and ``title``.

    Attributes:
        seed: Seed of every random choice the audit makes (same seed, same numbers).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    kind: ClassVar[str] = "risk"
    QUICK: ClassVar[dict[str, Any]] = {}

    seed: int = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field[Any]]:
        """Parameter fields by name."""
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, params: dict[str, Any] | None = None, profile: str = "full") -> Audit:
        """Build from a profile's defaults plus ``params``; unknown keys are a `UsageError`."""
        if profile not in PROFILES:
            raise UsageError(f"Unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
        params = dict(params or {})
        known = cls.fields()
        bad = sorted(set(params) - set(known))
        if bad:
            raise UsageError(f"Audit {cls.name!r} has no parameter(s) {', '.join(bad)}; "
                             f"allowed: {', '.join(sorted(known))}")
        merged = {**(cls.QUICK if profile == "quick" else {}), **params}
        for key, value in merged.items():
            default = known[key].default
            if isinstance(value, list) and isinstance(default, tuple):
                merged[key] = tuple(value)
        try:
            return cls(**merged)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"Bad parameters for audit {cls.name!r}: {exc}") from exc

    def params(self) -> dict[str, Any]:
        """Parameters as JSON-able data."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def params_hash(self) -> str:
        """Hash of the audit name and parameters (a finished result with this hash is reused)."""
        return stable_hash({"audit": self.name, "params": self.params()})[:16]

    # ------------------------------------------------------------------ running
    @abstractmethod
    def run(self, model: ModelAdapter, *, judge: Judge | None = None, progress: bool = True) -> AuditResult:
        """Run the audit on ``model`` (never changed outside ``with`` blocks) and return the result."""

    def new_result(self, model: ModelAdapter | None, **kw: Any) -> AuditResult:
        """An `AuditResult` pre-filled with this audit's identity, parameters, model and seed."""
        return AuditResult(audit=self.name, title=self.title, kind=self.kind, params=self.params(),
                           params_hash=self.params_hash, model=model.info if model is not None else None,
                           seed=self.seed, **kw)


@contextmanager
def timed(result: AuditResult, step: str) -> Iterator[None]:
    """Record the wall time of a step in ``result.timings`` (seconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        result.timings[step] = round(result.timings.get(step, 0.0) + time.perf_counter() - t0, 3)
