"""Judges rate model output offline by default and say exactly which judge produced each score.

- rules (no model): refusal, abstention, multiple-choice extraction, value matching;
- `LogProbJudge`: a local model answers the rubric question, score = expectation over answers;
- `ContrastJudge`: likelihood of the text under contrasting system prompts (works on small models);
- `HTTPJudge`: any OpenAI-compatible server; `server.serve` exposes a local model as one;
- `SimilarityJudge`: TF-IDF semantic matching.

`make_judge(spec, model)` is the one place a run's judge is built (CLI, runner, notebooks, audits).

Imports are lazy so that reading ratings never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Item, Judge, JudgeIdentity, Rating, Rubric

_LAZY = {
    "LogProbJudge": ".logprob",
    "ContrastJudge": ".contrast",
    "HTTPJudge": ".http",
    "SimilarityJudge": ".similarity",
    "RefusalJudge": ".rules",
    "AbstentionJudge": ".rules",
    "ChoiceJudge": ".rules",
    "ValueMatchJudge": ".rules",
    "judge_check": ".check",
    "make_judge": ".factory",
    "JudgeSpec": ".factory",
    "BUILTIN_RUBRICS": ".rubrics",
}

__all__ = ["Item", "Judge", "JudgeIdentity", "Rating", "Rubric", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'personascope.judges' has no attribute {name!r}")
