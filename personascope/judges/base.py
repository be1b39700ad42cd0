"""The judge interface: `Judge.rate(items, rubric) -> list[Rating]`, records that say who rated.

Judges rate model output. Every `Rating` names the judge that produced it (kind, model
fingerprint, prompt hash), so a report can say exactly which judge stands behind each number, and
model judges record the probability mass they put on valid answers, so unreliable ratings can be
dropped and counted. No torch import here: reports read these records.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import cache_dir
from ..records import JudgeIdentity, stable_hash

Scale = Literal["0-100", "1-5", "yes-no", "label"]


class Item(BaseModel):
    """One thing to rate: the text, plus optional context (the question it answers, a target)."""

    model_config = ConfigDict(frozen=True)

    text: str
    question: str | None = None
    target: str | None = None  # e.g. the attribute value whose leak is checked, or a persona
    meta: dict[str, Any] = Field(default_factory=dict)


class Rubric(BaseModel):
    """What to rate and on which scale.

    ``template`` is the judge prompt with ``{text}`` (and optionally ``{question}``, ``{target}``)
    placeholders. On ``0-100`` the value is the expected score; on ``1-5`` the expected rating; on
    ``yes-no`` the probability of "Yes" (0..1); on ``label`` the chosen label's index.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    template: str
    scale: Scale = "0-100"
    labels: tuple[str, ...] = ()  # for scale="label"
    description: str = ""
    # For `ContrastJudge`: system prompts (with {target}) under which the text is likelier when it
    # does / does not show the property; the user turn is the item's question.
    contrast: tuple[str, str] | None = None

    @property
    def hash(self) -> str:
        """Hash of the rubric's content."""
        return stable_hash(self.model_dump(mode="json"))[:16]

    def render(self, item: Item) -> str:
        """The judge prompt for ``item``."""
        return self.template.format(
            text=item.text, question=item.question or "", target=item.target or "", answer=item.text
        )


class Rating(BaseModel):
    """One judgement: value (None when invalid), rubric, judge and, for model judges, valid mass."""

    value: float | None
    valid: bool = True
    rubric: str
    judge: JudgeIdentity
    valid_mass: float | None = None  # probability the model judge put on valid answers
    raw: str | None = None  # the judge's raw answer or the matched evidence
    error: str | None = None


class Judge(ABC):
    """Rates items against a rubric. Subclasses set `identity` and implement `_rate`.

    ``min_valid_mass``: a model judge's rating whose valid-answer mass is below this is marked
    invalid (value kept in ``raw`` only) so audits can drop and count it.
    """

    min_valid_mass: float = 0.0
    # Rule judges are cheaper to recompute than to look up; model and HTTP judges are cached.
    cacheable: bool = True

    @property
    @abstractmethod
    def identity(self) -> JudgeIdentity:
        """Who this judge is (goes into every rating)."""

    @abstractmethod
    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        """Rate items (no caching)."""

    def _cache_ok(self, rating: Rating) -> bool:
        """Whether ``rating`` may be cached (a transient failure must be retried next time)."""
        return True

    def rate(
        self, items: Sequence[Item | str], rubric: Rubric, *, cache: bool | str | Path = True
    ) -> list[Rating]:
        """Rate ``items`` against ``rubric``; results are cached by (judge, item, rubric)."""
        its = [Item(text=i) if isinstance(i, str) else i for i in items]
        if not its:
            return []
        store = JudgeCache(None if cache is True else Path(cache)) if cache and self.cacheable else None
        out: list[Rating | None] = [None] * len(its)
        keys = [_key(self.identity, it, rubric) for it in its]
        todo = []
        for i, k in enumerate(keys):
            hit = store.get(k) if store else None
            if hit is not None:
                out[i] = hit
            else:
                todo.append(i)
        if todo:
            fresh = self._rate([its[i] for i in todo], rubric)
            for i, r in zip(todo, fresh, strict=True):
                out[i] = r
            if store:
                store.put_many([(keys[i], r) for i, r in zip(todo, fresh, strict=True) if self._cache_ok(r)])
        return [r for r in out if r is not None]


def _key(identity: JudgeIdentity, item: Item, rubric: Rubric) -> str:
    return stable_hash({"judge": identity.key, "item": item.model_dump(mode="json"), "rubric": rubric.hash})


class JudgeCache:
    """Append-only JSONL cache of ratings, one file per key prefix; safe to interrupt."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "judgements"
        self.root.mkdir(parents=True, exist_ok=True)
        self._mem: dict[str, dict[str, Rating]] = {}

    def _shard(self, key: str) -> dict[str, Rating]:
        prefix = key[:2]
        if prefix not in self._mem:
            data: dict[str, Rating] = {}
            path = self.root / f"{prefix}.jsonl"
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:  # a line cut short by a crash is skipped, not fatal
                        rec = json.loads(line)
                        data[rec["key"]] = Rating.model_validate(rec["rating"])
                    except (ValueError, KeyError):
                        continue
            self._mem[prefix] = data
        return self._mem[prefix]

    def get(self, key: str) -> Rating | None:
        """Cached rating for ``key``, or None."""
        return self._shard(key).get(key)

    def put_many(self, pairs: Sequence[tuple[str, Rating]]) -> None:
        """Store ratings (one appended line each, flushed to disk before returning)."""
        by_shard: dict[str, list[str]] = {}
        for key, rating in pairs:
            self._shard(key)[key] = rating
            line = json.dumps({"key": key, "rating": rating.model_dump(mode="json")}, ensure_ascii=False)
            by_shard.setdefault(key[:2], []).append(line)
        for prefix, lines in by_shard.items():
            with open(self.root / f"{prefix}.jsonl", "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
