"""The judge interface: `Judge.rate(items, rubric) -> list[Rating]`, records that say who rated.

Judges rate model output. Every `Rating` names the judge that produced it (kind, model
fingerprint, prompt hash), so a report can say exactly which judge stands behind each number, and
model judges record the probability mass they put on valid answers, so unreliable ratings can be
dropped and counted. No torch import here: reports read these records.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
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
    #: Items rated per call of `_rate` (each chunk is cached before the next starts).
    rate_chunk: int = 64

    @property
    @abstractmethod
    def identity(self) -> JudgeIdentity:
        """Who this judge is (goes into every rating)."""

    @abstractmethod
    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        """Rate items (no caching)."""

    def can_rate(self, rubric: Rubric) -> bool:
        """Whether this judge can rate ``rubric`` at all (False: every rating would be invalid by construction)."""
        return True

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
        # In chunks, each cached as soon as it is rated: Ctrl-C or a crash loses at most one chunk.
        for start in range(0, len(todo), self.rate_chunk):
            part = todo[start : start + self.rate_chunk]
            fresh = self._rate([its[i] for i in part], rubric)
            for i, r in zip(part, fresh, strict=True):
                out[i] = r
            if store:
                store.put_many([(keys[i], r) for i, r in zip(part, fresh, strict=True) if self._cache_ok(r)])
        return [r for r in out if r is not None]


def _key(identity: JudgeIdentity, item: Item, rubric: Rubric) -> str:
    return stable_hash({"judge": identity.key, "item": item.model_dump(mode="json"), "rubric": rubric.hash})


class JudgeCache:
    """Append-only JSONL cache of ratings, one file per key prefix; safe to interrupt.

    Each line is ``{"key", "rating", "sha256"}``, the checksum covering key and rating. A line that
    is not valid UTF-8 JSON of that shape, or fails its checksum (a crash mid-write, a hand edit,
    a line from a version without checksums), is skipped: the file is named in one warning and
    rewritten without it, so the rating is recomputed and the next run reads a clean file.
    """

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
                good: list[bytes] = []
                bad = 0
                for line in path.read_bytes().splitlines():
                    if not line.strip():
                        continue
                    parsed = _parse_line(line)
                    if parsed is None:
                        bad += 1
                        continue
                    data[parsed[0]] = parsed[1]
                    good.append(line)
                if bad:
                    warnings.warn(f"Judge cache {path}: dropped {bad} corrupt or unverifiable line(s); "
                                  "those ratings are recomputed", stacklevel=4)
                    _rewrite(path, good)
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
            rec = {"key": key, "rating": rating.model_dump(mode="json")}
            line = json.dumps({**rec, "sha256": _line_sha256(rec)}, ensure_ascii=False)
            by_shard.setdefault(key[:2], []).append(line)
        for prefix, lines in by_shard.items():
            with open(self.root / f"{prefix}.jsonl", "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
                fh.flush()
                os.fsync(fh.fileno())


def _line_sha256(rec: dict[str, Any]) -> str:
    """Checksum of a cache line's ``key`` and ``rating``."""
    text = json.dumps({"key": rec["key"], "rating": rec["rating"]}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _parse_line(line: bytes) -> tuple[str, Rating] | None:
    """``(key, rating)`` of a judge-cache line, or None when it is damaged or unverifiable."""
    try:
        rec = json.loads(line.decode("utf-8"))
        if not isinstance(rec, dict) or not isinstance(rec.get("key"), str) or rec.get("sha256") != _line_sha256(rec):
            return None
        return rec["key"], Rating.model_validate(rec["rating"])
    except (ValueError, KeyError, TypeError):  # UnicodeDecodeError and pydantic's ValidationError are ValueErrors
        return None


def _rewrite(path: Path, lines: list[bytes]) -> None:
    """Replace ``path`` by its good ``lines`` (through a temporary file, so a crash loses nothing good)."""
    # A line another process appends between our read and this replace is lost; that only costs
    # recomputing one rating, while leaving bad lines would warn on every later run.
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        tmp.write_bytes(b"".join(line + b"\n" for line in lines))
        os.replace(tmp, path)
    except OSError:
        # A read-only cache still works: the bad lines are skipped on every read instead.
        tmp.unlink(missing_ok=True)
