"""One scripted judge for tests: ratings from a function, never cached, with a test identity."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from personascope.judges.base import Item, Judge, Rating, Rubric
from personascope.records import JudgeIdentity

#: ``fn(call, index, item)`` -> the rating's value (None: an invalid rating); ``call`` counts `_rate` calls from 1.
RateFn = Callable[[int, int, Item], float | None]


class ScriptedJudge(Judge):
    """A judge whose ratings come from ``fn``; ``calls`` counts the rating calls, ``rated`` keeps every text."""

    cacheable = False

    def __init__(self, fn: RateFn, name: str = "scripted") -> None:
        self.fn, self.name, self.calls, self.rated = fn, name, 0, []

    @property
    def identity(self) -> JudgeIdentity:
        return JudgeIdentity(kind="rules", name=f"test:{self.name}")

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        self.calls += 1
        self.rated += [i.text for i in items]
        values = [self.fn(self.calls, k, it) for k, it in enumerate(items)]
        return [Rating(value=v, valid=v is not None, rubric=rubric.name, judge=self.identity) for v in values]
