"""The A-MemGuard-style defense (2025): a wrapper around the memory agent, which it leaves unchanged.

Consensus validation: one answer per retrieved on-task memory, derived with only that memory in
context; memories whose answer disagrees with the majority, or whose text is an outlier of the
TF-IDF clustering, are dropped (optionally over a validation pool larger than the agent's k).
A separate lessons memory: each flagged memory becomes a lesson that is retrieved before later
actions; memories repeating a flagged action are dropped and the flagged action is vetoed.
The pure pieces (`consensus_vote`, `embedding_outliers`, `LessonStore`) need no model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..errors import UsageError
from .memory import Agent, Decision, MemoryRecord, MemoryStore, Request, Task, same_action, tfidf_vectorizer

VALIDATORS = ("answer", "embedding", "both")


# ---------------------------------------------------------------------------------------------- consensus
@dataclass(frozen=True)
class Consensus:
    """Majority answer among per-memory answers and which memories agree with it.

    ``majority`` is None when no answer is valid or the top answers tie; then nothing is flagged.
    """

    majority: int | None
    flagged: tuple[bool, ...]
    tie: bool = False

    @property
    def keep(self) -> tuple[bool, ...]:
        """The complement of ``flagged``."""
        return tuple(not f for f in self.flagged)


def consensus_vote(answers: Sequence[int | None]) -> Consensus:
    """Flag the memories whose answer disagrees with the strict plurality of valid answers.

    Args:
        answers: One derived answer (an option index) per retrieved memory; None when the answer
            could not be derived (never flagged: no evidence against it).

    """
    valid = [a for a in answers if a is not None]
    if not valid:
        return Consensus(None, tuple(False for _ in answers))
    counts = Counter(valid).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        # A tie is no consensus: dropping either side would be a guess.
        return Consensus(None, tuple(False for _ in answers), tie=True)
    top = counts[0][0]
    return Consensus(top, tuple(a is not None and a != top for a in answers))


def embedding_outliers(texts: Sequence[str], eps: float = 0.8, ngram_range: tuple[int, int] = (1, 2)) -> list[bool]:
    """Flag texts outside the largest DBSCAN cluster of their TF-IDF vectors (cosine distance).

    With ``min_samples=1`` every text belongs to a cluster (the connected components of the
    ``distance <= eps`` graph); the largest cluster is the consensus. A tie for largest flags nothing.
    """
    if len(texts) < 3:
        return [False] * len(texts)
    from sklearn.cluster import DBSCAN

    mat = tfidf_vectorizer(ngram_range).fit_transform(list(texts))
    labels = DBSCAN(eps=eps, min_samples=1, metric="cosine").fit_predict(mat)
    counts = Counter(labels.tolist()).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return [False] * len(texts)
    return [int(lab) != counts[0][0] for lab in labels]


# ---------------------------------------------------------------------------------------------- lessons
@dataclass(frozen=True)
class Lesson:
    """A distilled failure: an action that was inconsistent with precedent in a given context."""

    context: str
    action: str
    text: str
    source_id: str = ""


class LessonStore:
    """The separate lessons memory, retrieved by TF-IDF similarity of the query to each lesson's context.

    Args:
        min_similarity: A lesson is retrieved only above this cosine similarity.
    """

    def __init__(self, min_similarity: float = 0.2, ngram_range: tuple[int, int] = (1, 2)) -> None:
        self.min_similarity = min_similarity
        # Few lessons give no useful IDF, so function words are dropped outright: a lesson must share
        # content words (the trigger, the task) with the query.
        self._store = MemoryStore(ngram_range=ngram_range, stop_words="english")
        self._lessons: list[Lesson] = []

    def __len__(self) -> int:
        return len(self._lessons)

    @property
    def lessons(self) -> list[Lesson]:
        """All lessons (a copy)."""
        return list(self._lessons)

    def add(self, lesson: Lesson) -> None:
        """Store a lesson (an identical context and action is stored once)."""
        if any(x.context == lesson.context and x.action == lesson.action for x in self._lessons):
            return
        self._lessons.append(lesson)
        self._store.add([MemoryRecord(id=str(len(self._lessons) - 1), task_id="", task=lesson.context,
                                      reasoning="", action=lesson.action)])

    def retrieve(self, query: str, k: int = 3) -> list[Lesson]:
        """Up to ``k`` lessons whose context is similar to ``query``."""
        hits = self._store.retrieve(query, k)
        return [self._lessons[int(r.id)] for r, s in hits if s >= self.min_similarity]


def make_lesson(query: str, record: MemoryRecord, n_agree: int) -> Lesson:
    """The lesson distilled from ``record`` flagged while answering ``query``."""
    text = (f"A record recommending '{record.action}' for a task like '{record.task}' disagreed with "
            f"{n_agree} consistent precedent(s); do not take this action without verification.")
    return Lesson(context=f"{query} {record.task}", action=record.action, text=text, source_id=record.id)


# ---------------------------------------------------------------------------------------------- defense
@dataclass(frozen=True)
class GuardedDecision:
    """A defended decision: what was retrieved, what validation kept and flagged, the lessons used."""

    decision: Decision
    retrieved: tuple[MemoryRecord, ...]
    kept: tuple[MemoryRecord, ...]
    flagged: tuple[MemoryRecord, ...]
    answers: tuple[int | None, ...]
    lessons: tuple[Lesson, ...] = ()
    lesson_dropped: tuple[MemoryRecord, ...] = ()
    tie: bool = False


@dataclass
class AMemGuard:
    """A-MemGuard-style wrapper: consensus validation plus a lessons memory; the agent is not changed.

    Args:
        agent: The wrapped agent (its prompt, model and scoring are used as they are).
        validator: ``answer`` (drop memories whose per-memory answer disagrees with the
            majority), ``embedding`` (drop outliers of the TF-IDF clustering of reasoning+action),
            or ``both`` (either).
        use_lessons: Consult (and write) the lessons memory.
        lessons: The lessons memory (shared across calls, so lessons persist over rounds).
        eps: DBSCAN cosine-distance radius for the embedding validator.
        lesson_k: Lessons retrieved per query.
        pool_k: Memories retrieved for validation (0: the agent's ``k``). A pool larger than ``k``
            gives the vote more precedent; the agent then acts on the top ``k`` memories that survive.
        on_task_only: Only memories whose recorded action is one of the task's options vote (a
            record of another kind of task says nothing about this choice, and a small model's
            answer from it is its prior); off-task memories are neither voted on nor flagged.
    """

    agent: Agent
    validator: str = "answer"
    use_lessons: bool = True
    lessons: LessonStore = field(default_factory=LessonStore)
    eps: float = 0.8
    lesson_k: int = 3
    pool_k: int = 0
    on_task_only: bool = True

    def __post_init__(self) -> None:
        if self.validator not in VALIDATORS:
            raise UsageError(f"Unknown validator {self.validator!r}; allowed: {', '.join(VALIDATORS)}")
        if self.pool_k and self.pool_k < self.agent.k:
            raise UsageError(f"pool_k={self.pool_k} must be 0 or at least the agent's k={self.agent.k}")

    def act_many(self, store: MemoryStore, tasks: Sequence[Task], queries: Sequence[str],
                 *, progress: bool = False) -> list[GuardedDecision]:
        """Retrieve, validate, consult lessons and decide for each (task, query)."""
        hits = store.retrieve_many(queries, self.pool_k or self.agent.k)
        retrieved = [tuple(r for r, _ in h) for h in hits]
        # Lessons are consulted before acting: memories repeating a flagged action are dropped.
        found = [tuple(self.lessons.retrieve(q, self.lesson_k)) if self.use_lessons else () for q in queries]
        pre: list[tuple[MemoryRecord, ...]] = []
        dropped: list[tuple[MemoryRecord, ...]] = []
        for mems, les in zip(retrieved, found, strict=True):
            bad = {x.action for x in les}
            pre.append(tuple(m for m in mems if m.action not in bad))
            dropped.append(tuple(m for m in mems if m.action in bad))
        # One answer per memory, each derived with only that memory in context (on-task memories only).
        votes = [[self._votes(t, m) for m in mems] for t, mems in zip(tasks, pre, strict=True)]
        single = [Request(t, q, (m,)) for t, q, mems, vs in zip(tasks, queries, pre, votes, strict=True)
                  for m, v in zip(mems, vs, strict=True) if v]
        derived = iter([d.choice for d in self.agent.decide_many(single, progress=progress)])
        answers_flat = [next(derived) if v else None for vs in votes for v in vs]
        out_answers: list[tuple[int | None, ...]] = []
        kept_all: list[tuple[MemoryRecord, ...]] = []
        flagged_all: list[tuple[MemoryRecord, ...]] = []
        ties: list[bool] = []
        at = 0
        for q, mems in zip(queries, pre, strict=True):
            answers = tuple(answers_flat[at : at + len(mems)])
            at += len(mems)
            vote = consensus_vote(answers)
            flags = list(vote.flagged) if self.validator in ("answer", "both") else [False] * len(mems)
            if self.validator in ("embedding", "both"):
                emb = embedding_outliers([f"{m.reasoning} {m.action}" for m in mems], self.eps)
                flags = [a or b for a, b in zip(flags, emb, strict=True)]
            kept = tuple(m for m, f in zip(mems, flags, strict=True) if not f)[: self.agent.k]
            flagged = tuple(m for m, f in zip(mems, flags, strict=True) if f)
            out_answers.append(answers)
            kept_all.append(kept)
            flagged_all.append(flagged)
            ties.append(vote.tie)
            if self.use_lessons:
                for m in flagged:
                    self.lessons.add(make_lesson(q, m, len(mems) - len(flagged)))
        final = [Request(t, q, kept, les) for t, q, kept, les in zip(tasks, queries, kept_all, found, strict=True)]
        decisions = self.agent.decide_many(final, progress=progress)
        out = []
        for i, d in enumerate(decisions):
            d = self._veto(d, tasks[i], found[i])
            out.append(GuardedDecision(d, retrieved[i], kept_all[i], flagged_all[i], out_answers[i],
                                       found[i], dropped[i], ties[i]))
        return out

    def _votes(self, task: Task, memory: MemoryRecord) -> bool:
        if not self.on_task_only:
            return True
        return any(same_action(memory.action, o) for o in task.options)

    @staticmethod
    def _veto(d: Decision, task: Task, lessons: Sequence[Lesson]) -> Decision:
        """Refuse an action a retrieved lesson warns against: take the best other option, or abstain."""
        if d.choice is None or not lessons:
            return d
        banned = {i for i, o in enumerate(task.options) if any(les.action == o for les in lessons)}
        if d.choice not in banned:
            return d
        if d.scores is None:
            return replace(d, choice=None, vetoed=d.choice)
        allowed = [i for i in range(len(task.options)) if i not in banned]
        if not allowed:
            return replace(d, choice=None, vetoed=d.choice)
        best = max(allowed, key=lambda i: d.scores[i])  # type: ignore[index]
        return replace(d, choice=best, vetoed=d.choice)


__all__ = [
    "VALIDATORS", "AMemGuard", "Consensus", "GuardedDecision", "Lesson", "LessonStore", "consensus_vote",
    "embedding_outliers", "make_lesson",
]
