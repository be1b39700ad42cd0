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
import functools
import re
import time
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Interval
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..errors import UsageError
from ..records import now_iso, stable_hash
from ..results import AuditResult, Control, JudgeRecord
from ..stats import derive_seed, rng

if TYPE_CHECKING:
    import numpy as np

    from ..backends.base import ModelAdapter
    from ..judges.base import Judge

PROFILES = ("quick", "full")

# Constrained parameter types for audit fields (pydantic honours the ``Annotated`` metadata).
#: A count or size of at least 1 (a negative size would silently mean "all but N" in a slice).
Count = Annotated[int, Ge(1)]
#: A count where 0 has a meaning of its own ("skip" or "all", as the field's docstring says).
Count0 = Annotated[int, Ge(0)]
#: A share or probability in [0, 1].
Fraction = Annotated[float, Interval(ge=0, le=1)]
#: A strictly positive finite number (temperatures, strengths); NaN and inf are rejected for every float.
Positive = Annotated[float, Gt(0)]


@dataclasses.dataclass(frozen=True)
class Audit(ABC):
    """Base of every audit. Subclasses are frozen dataclasses and set ``name`` and ``title``.

    Attributes:
        seed: Seed of every random choice the audit makes (same seed, same numbers).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    #: ``risk`` (graded by the gate), ``interpretability`` (describes the model) or ``validity`` (measures
    #: other audits' detection power on model organisms).
    kind: ClassVar[str] = "risk"
    QUICK: ClassVar[dict[str, Any]] = {}
    #: What the audit uses the run's model judge for ("" = never: it scores with rules only).
    judge_use: ClassVar[str] = ""
    #: The audit cannot measure anything without a model judge (``--judge none`` skips it).
    judge_required: ClassVar[bool] = False
    #: What it needs from the model beyond generation (of ``backends.base.CAPABILITIES``): a served model
    #: that lacks one is skipped with the reason. New audits are assumed to need the weights.
    needs: ClassVar[tuple[str, ...]] = ("logprobs", "activations", "steering")

    seed: Annotated[int, Ge(0)] = 0  # numpy's generators take no negative seed

    # ------------------------------------------------------------------ construction
    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field[Any]]:
        """Parameter fields by name."""
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, params: dict[str, Any] | None = None, profile: str = "full") -> Audit:
        """Build from a profile's defaults plus ``params``, checked against the field types and constraints.

        Raises:
            UsageError: An unknown key, or a value of the wrong type or outside its field's range (one
                message naming the audit, the key, the value and what is allowed).
        """
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
            checked = _params_model(cls).model_validate(merged)
        except ValidationError as exc:
            raise UsageError(_validation_message(cls.name, exc)) from None
        # The validated values: ints given for floats become floats, so 1 and 1.0 hash alike.
        merged = {key: getattr(checked, key) for key in merged}
        try:
            return cls(**merged)
        except UsageError as exc:  # a cross-field check in __post_init__: say which audit
            raise UsageError(f"Audit {cls.name!r}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"Bad parameters for audit {cls.name!r}: {exc}") from exc

    def validate(self) -> None:
        """Check names that refer to built-in data (traits, personas, contexts, groups) without a model.

        The runner calls it when it reads a config, so that a typo stops the run before the model
        loads; it must stay cheap (read packaged data files, never load a model). Raises `UsageError`.
        """
        return None

    def params(self) -> dict[str, Any]:
        """Parameters as JSON-able data."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def params_hash(self) -> str:
        """Hash of the audit name and parameters (a finished result with this hash is reused)."""
        return stable_hash({"audit": self.name, "params": self.params()})[:16]

    # ------------------------------------------------------------------ running
    def requirements(self) -> tuple[str, ...]:
        """What this audit, with these parameters, needs from the model (``needs`` unless a parameter changes it)."""
        return self.needs

    def missing_capabilities(self, model: Any) -> list[str]:
        """The requirements ``model`` does not offer (empty: the audit can run on it)."""
        from ..backends.base import capabilities

        have = capabilities(model)
        return [c for c in self.requirements() if c not in have]

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
        lacking = self.missing_capabilities(model)
        if lacking:
            from ..backends.served import NeedsWeightsError

            raise NeedsWeightsError(f"Audit {self.name!r} needs {', '.join(lacking)} from the model, which "
                                    f"{model.info.id} does not offer (a served model gives text and at most "
                                    "log-probs): run it on local weights")
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


@functools.cache
def _params_model(cls: type[Audit]) -> type[BaseModel]:
    """A pydantic model of ``cls``'s parameter fields: strict types, ``Annotated`` constraints, finite floats.

    Strict, because a config that says ``folds = 2.5`` or ``do_sample = "maybe"`` is a mistake, not
    something to coerce; an int is still accepted where a float is expected.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else ...)
        fields[f.name] = (hints[f.name], default)
    config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{cls.__name__}Params", __config__=config, **fields)


# What a value must be, by pydantic error type (the constraint's bound comes from the error's context).
_REQUIREMENTS: dict[str, str] = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a text in quotes",
    "tuple_type": 'must be a list, e.g. ["a", "b"]',  # a bare word on the command line is a string
    "finite_number": "must be a finite number",
}


def _validation_message(audit: str, exc: ValidationError) -> str:
    """One line for every bad parameter: the audit, the key, what it must be and the value given."""
    parts = []
    for err in exc.errors():
        loc = err["loc"]
        key = str(loc[0]) + "".join(f"[{x}]" for x in loc[1:]) if loc else "?"
        ctx = err.get("ctx") or {}
        got = f"got {err.get('input')!r}"
        if err["type"] == "literal_error":
            allowed = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
            parts.append(f"{key} is not allowed ({got}; allowed: {allowed})")
        elif err["type"] in _REQUIREMENTS:
            parts.append(f"{key} {_REQUIREMENTS[err['type']].format(**ctx)} ({got})")
        else:
            parts.append(f"{key}: {err['msg']} ({got})")
    return f"Bad parameter(s) for audit {audit!r}: " + "; ".join(parts)


@dataclasses.dataclass
class AuditContext:
    """What `Audit.execute` works with: the (caching) model, the run's judge, the result, seeded randomness.

    Attributes:
        model: The subject model behind the caching adapter (generation, log-probs and activations cached).
        judge: The run's judge, or None (no model judge, or the audit uses none).
        result: The `AuditResult` being filled.
        progress: Show progress bars.
        seed: The audit's seed; `rng` and `seed_for` derive independent streams from named keys.
        state: What `Audit.execute` leaves for `Audit.controls`.
    """

    model: Any
    judge: Judge | None
    result: AuditResult
    progress: bool = True
    seed: int = 0
    #: What `Audit.execute` leaves for `Audit.controls` (the chosen layer, the items, the effects).
    state: dict[str, Any] = dataclasses.field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step into ``result.timings[name]`` (seconds; repeated steps add up)."""
        with timed(self.result, name):
            yield

    def control(self, name: str, kind: str, passed: bool, *, observed: Any = None, expected: str = "",
                detail: str = "") -> Control:
        """Record one of the audit's own controls (a failed one makes the audit INCONCLUSIVE and the gate fail).

        Args:
            name: Short name, unique within the audit.
            kind: ``positive`` (a planted effect must be detected), ``negative`` (a null must not be
                flagged), ``power`` (an effect of the policy's size is detectable) or ``artifact``
                (the score does not reward degraded text or another confound).
            passed: Whether the control came out as it must.
            observed: The number it looked at.
            expected: What the number must be, in words.
            detail: What was measured and how.
        """
        c = Control(name=name, kind=kind, passed=bool(passed), observed=observed, expected=expected,
                    detail=detail)
        self.result.controls = [x for x in self.result.controls if x.name != name] + [c]
        return c

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
