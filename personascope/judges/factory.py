"""One factory for the run's judge: the CLI, the runner, notebooks and audits all get theirs here.

A run chooses one judge (`JudgeSpec`); audits receive it and never build one. ``kind = "none"``
means no model judge: audits fall back to their rule scorers, and an audit that cannot work
without a model judge says so (see `personascope.audits.base.Audit.needs_judge`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UsageError

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter
    from .base import Judge

JudgeKind = Literal["contrast", "logprob", "http", "none"]
JUDGE_KINDS: tuple[str, ...] = ("contrast", "logprob", "http", "none")


class JudgeSpec(BaseModel):
    """The run's judge: ``contrast`` (default; the subject model's likelihoods), ``logprob``, ``http`` or ``none``."""

    model_config = ConfigDict(extra="forbid")

    kind: JudgeKind = "contrast"
    model: str | None = Field(None, description="Judge model (local alias/path; HTTP model name). Default: subject.")
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(0.25, gt=0, description="Contrast judge: nats per token from 50% to 73%.")
    batch_size: int = Field(16, ge=1)
    deadline: float = Field(60.0, gt=0, description="HTTP judge: seconds one request may take in all.")
    max_body_bytes: int = Field(4_000_000, ge=1024, description="HTTP judge: largest reply accepted.")
    retry_budget: float = Field(300.0, ge=0, description="HTTP judge: seconds of retries per run, all items.")


def make_judge(spec: JudgeSpec | str | None, model: ModelAdapter, *, progress: bool = False) -> Judge | None:
    """The judge ``spec`` describes, rating with ``model`` unless the spec names another (None for ``none``).

    Args:
        spec: A `JudgeSpec`, a kind name (``"contrast"``, ``"none"``, ...) or None (the default judge).
        model: The subject model (the judge model unless ``spec.model`` names one).
        progress: A model judge shows a progress bar while it rates.
    """
    if spec is None:
        spec = JudgeSpec()
    elif isinstance(spec, str):
        if spec not in JUDGE_KINDS:
            raise UsageError(f"Unknown judge {spec!r}; allowed: {', '.join(JUDGE_KINDS)}")
        spec = JudgeSpec(kind=spec)
    if spec.kind == "none":
        return None
    if spec.kind == "http":
        from .http import HTTPJudge

        if not spec.base_url or not spec.model:
            raise UsageError("judge kind 'http' needs a base URL and a model name (judge.base_url, judge.model)")
        return HTTPJudge(spec.base_url, spec.model, api_key_env=spec.api_key_env, deadline=spec.deadline,
                         max_body_bytes=spec.max_body_bytes, retry_budget=spec.retry_budget)
    judge_model = model
    if spec.model:
        from ..models import load_model

        judge_model = load_model(spec.model)
    if spec.kind == "logprob":
        from .logprob import LogProbJudge

        return LogProbJudge(judge_model, batch_size=spec.batch_size, progress=progress)
    from .contrast import ContrastJudge

    return ContrastJudge(judge_model, temperature=spec.temperature, batch_size=spec.batch_size, progress=progress)


__all__ = ["JUDGE_KINDS", "JudgeSpec", "make_judge"]
