"""The audit contract: a frozen dataclass of parameters with ``run(model) -> AuditResult``.

Audits are data: their parameters are the dataclass fields (JSON scalars, lists and dicts), so
a config file, the CLI and a results file all describe the same audit. ``QUICK`` holds the
overrides of the ``quick`` budget profile (the demo: the whole run in minutes on 2 CPU cores).

`Audit.run` is a template that every audit shares: it checks the judge against what the audit
declares (``judge_use``, ``judge_required``), wraps the model in the caching adapter (so an
interrupted run does no finished model work again), builds the pre-filled `AuditResult`, calls the
audit's own `Audit.execute` (prepare -> generate -> score -> summarize, each a timed `AuditContext.step`),
then the `Audit.controls` slot (null distributions and control checks), and stamps the total wall
time and ``finished`` once.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import UsageError
from ..records import now_iso, stable_hash
from ..results import AuditResult, JudgeRecord
from ..stats import derive_seed, rng

if TYPE_CHECKING:
    import numpy as np

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
    #: What the audit uses the run's model judge for ("" = never: it scores with rules only).
    judge_use: ClassVar[str] = ""
    #: The audit cannot measure anything without a model judge (``--judge none`` skips it).
    judge_required: ClassVar[bool] = False

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
    def run(self, model: ModelAdapter, *, judge: Judge | None | Literal["default"] = "default",
            progress: bool = True) -> AuditResult:
        """Run the audit on ``model`` (never changed outside ``with`` blocks) and return the result.

        Args:
            model: The subject model's adapter (wrapped in the caching adapter for the run).
            judge: The run's judge from `personascope.judges.make_judge`; None: no model judge;
                ``"default"``: the factory's default judge on ``model`` when the audit uses one.
            progress: Show progress bars.

        Raises:
            UsageError: The audit needs a model judge (``judge_required``) and ``judge`` is None.
        """
        from ..cache import CachingAdapter

        if isinstance(judge, str):
            if judge != "default":
                raise UsageError(f"judge must be a Judge, None or 'default', not {judge!r}")
            from ..judges.factory import make_judge

            judge = make_judge(None, model) if self.judge_use else None
        if judge is None and self.judge_required:
            raise UsageError(f"Audit {self.name!r} needs a model judge ({self.judge_use}); run it with "
                             "--judge contrast, logprob or http, not --judge none")
        cached = CachingAdapter.wrap(model)
        result = self.new_result(model, judge=self.judge_record(judge))
        ctx = AuditContext(model=cached, judge=judge if self.judge_use else None, result=result,
                           progress=progress, seed=self.seed)
        t0 = time.perf_counter()
        self.execute(ctx)
        with ctx.step("controls"):
            self.controls(ctx)
        result.timings["total"] = round(time.perf_counter() - t0, 3)
        result.finished = now_iso()
        return result

    @abstractmethod
    def execute(self, ctx: AuditContext) -> None:
        """The audit's own work: prepare data, generate, score, summarize into ``ctx.result``."""

    def controls(self, ctx: AuditContext) -> None:
        """Slot for null distributions and control checks that run after `execute` (none by default).

        An override adds control metrics (a random-direction null, a degraded-text judge baseline, a
        clean-model rerun) to ``ctx.result`` beside the effect they qualify.
        """
        return None

    def judge_record(self, judge: Judge | None) -> JudgeRecord:
        """How this audit uses ``judge``: its identity and use, or none when the audit needs no model judge."""
        if judge is None or not self.judge_use:
            return JudgeRecord()
        return JudgeRecord(identity=judge.identity, uses=[self.judge_use])

    def new_result(self, model: ModelAdapter | None, **kw: Any) -> AuditResult:
        """An `AuditResult` pre-filled with this audit's identity, parameters, model and seed."""
        return AuditResult(audit=self.name, title=self.title, kind=self.kind, params=self.params(),
                           params_hash=self.params_hash, model=model.info if model is not None else None,
                           seed=self.seed, **kw)


@dataclasses.dataclass
class AuditContext:
    """What `Audit.execute` works with: the (caching) model, the run's judge, the result, seeded randomness.

    Attributes:
        model: The subject model behind the caching adapter (generation, log-probs and activations cached).
        judge: The run's judge, or None (no model judge, or the audit uses none).
        result: The `AuditResult` being filled.
        progress: Show progress bars.
        seed: The audit's seed; `rng` and `seed_for` derive independent streams from named keys.
    """

    model: Any
    judge: Judge | None
    result: AuditResult
    progress: bool = True
    seed: int = 0

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step into ``result.timings[name]`` (seconds; repeated steps add up)."""
        with timed(self.result, name):
            yield

    def rng(self, *keys: Any) -> np.random.Generator:
        """A numpy generator for the random step named by ``keys`` (same seed and keys, same draws)."""
        return rng(self.seed, *keys)

    def seed_for(self, *keys: Any) -> int:
        """A 31-bit seed for the step named by ``keys`` (for APIs that take an int seed)."""
        return derive_seed(self.seed, *keys) % (2**31 - 1)


@contextmanager
def timed(result: AuditResult, step: str) -> Iterator[None]:
    """Record the wall time of a step in ``result.timings`` (seconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        result.timings[step] = round(result.timings.get(step, 0.0) + time.perf_counter() - t0, 3)
