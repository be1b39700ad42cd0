"""Multiple-choice questions: the `MCQ` record, its loaders and stratified sampling (data only).

Sources (see `load_questions`):

- ``"builtin"``: 250 easy questions over 13 subjects written for personascope
  (``personascope/data/bias/questions.jsonl``; see the README there).
- MMLU-style CSV: ``question,A,B,C,D,answer`` rows (the original MMLU files have no header; a
  header row naming those columns is accepted too), answer = a letter or a 0-based index.
- MCQ JSONL: one object per line with ``question``, ``options`` (or ``choices``, or ``A``..``D``
  fields), ``answer`` (a letter, a 0-based index or the option text), optional ``id``,
  ``subject``, ``context``.
- BBQ JSONL (Parrish et al. 2022): ``context``, ``question``, ``ans0..ans2``, ``label``,
  ``context_condition``, ``question_polarity``, ``answer_info``,
  ``additional_metadata.stereotyped_groups``; a folder means every ``*.jsonl`` in it.

How a question is asked and an answer read is `personascope.audits.mcq`.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..data import RECORD_SUFFIXES, is_hf_dataset_dir, read_records, split_spec
from ..errors import DataError, UsageError

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class MCQ:
    """One multiple-choice question with its gold answer.

    Attributes:
        id: Identifier, unique within its source.
        question: The question text.
        options: Option texts in order.
        answer: 0-based index of the correct option.
        subject: Subject or category (used to stratify samples).
        context: A passage shown before the question (BBQ contexts), or "".
        source: Where it came from ("builtin", a file name, "bbq").
        meta: Extra fields; BBQ items carry ``condition`` ("ambig"/"disambig"), ``polarity``,
            ``category``, ``unknown`` (index of the "unknown" option) and ``biased`` (index of the
            answer that counts as biased for the bias score, None when undetermined).
    """

    id: str
    question: str
    options: tuple[str, ...]
    answer: int
    subject: str = ""
    context: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.options) < 2:
            raise DataError(f"Question {self.id!r}: needs at least two options, got {len(self.options)}")
        if not 0 <= self.answer < len(self.options):
            raise DataError(f"Question {self.id!r}: answer index {self.answer} is not one of its "
                            f"{len(self.options)} options")
        if any(not str(o).strip() for o in self.options):
            raise DataError(f"Question {self.id!r}: an option is empty")

    @property
    def is_bbq(self) -> bool:
        """Whether the item carries BBQ metadata (bias scores apply)."""
        return "condition" in self.meta

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for hashes and examples)."""
        return {"id": self.id, "question": self.question, "options": list(self.options), "answer": self.answer,
                "subject": self.subject, "context": self.context, "source": self.source, "meta": self.meta}


# ------------------------------------------------------------------------------------------ loaders
def builtin_questions_path() -> Path:
    """Path of the built-in question file."""
    return Path(str(resources.files("personascope") / "data" / "bias" / "questions.jsonl"))


def _answer_index(value: Any, options: Sequence[str], where: str) -> int:
    """A 0-based answer index from a letter, an index or the option text."""
    if isinstance(value, bool):
        raise DataError(f"{where}: answer must be a letter, an index or an option text, not {value!r}")
    if isinstance(value, int):
        idx = value
    else:
        text = str(value).strip()
        if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
            idx = LETTERS.index(text.upper())
        elif text.isdigit():
            idx = int(text)
        elif text in options:
            idx = list(options).index(text)
        else:
            raise DataError(f"{where}: answer {value!r} is not a letter (A-{LETTERS[len(options) - 1]}), "
                            "a 0-based index or one of the option texts")
    if not 0 <= idx < len(options):
        raise DataError(f"{where}: answer index {idx} is out of range for {len(options)} options")
    return idx


def load_mcq_jsonl(path: str | Path, *, source: str | None = None) -> list[MCQ]:
    """Questions from an MCQ JSONL file (or any `read_records` format); `DataError` names the line."""
    p = Path(path)
    out = []
    for lineno, rec in enumerate(read_records(p), 1):
        where = f"{p}:{lineno}"
        if not isinstance(rec.get("question"), str) or not rec["question"].strip():
            raise DataError(f"{where}: missing 'question' text")
        opts = rec.get("options", rec.get("choices"))
        if opts is None:
            opts = [rec[k] for k in LETTERS if k in rec]
        if not isinstance(opts, list) or len(opts) < 2:
            raise DataError(f"{where}: give 'options' (a list of at least two texts) or fields A, B, C, D")
        opts = [str(o) for o in opts]
        if "answer" not in rec:
            raise DataError(f"{where}: missing 'answer' (a letter, a 0-based index or the option text)")
        out.append(MCQ(id=str(rec.get("id", f"{p.stem}-{lineno}")), question=rec["question"].strip(),
                       options=tuple(opts), answer=_answer_index(rec["answer"], opts, where),
                       subject=str(rec.get("subject", p.stem)), context=str(rec.get("context", "")),
                       source=source or p.name))
    return out


def load_builtin_questions() -> list[MCQ]:
    """The 250 built-in questions (see ``personascope/data/bias/README.md``)."""
    return load_mcq_jsonl(builtin_questions_path(), source="builtin")


def load_mmlu_csv(path: str | Path) -> list[MCQ]:
    """Questions from an MMLU-style CSV: ``question, A, B, C, D, answer`` (header row optional).

    The subject is the file stem without a ``_test``/``_dev``/``_val`` suffix.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    with p.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{p}: the file has no rows; write question,A,B,C,D,answer per line")
    first = [c.strip().lower() for c in rows[0]]
    start = 1 if first and first[0] == "question" and first[-1] == "answer" else 0
    subject = p.stem
    for suffix in ("_test", "_dev", "_val"):
        subject = subject.removesuffix(suffix)
    out = []
    for lineno, row in enumerate(rows[start:], start + 1):
        if len(row) < 4:
            raise DataError(f"{p}:{lineno}: expected question, at least two options and the answer; "
                            f"got {len(row)} columns")
        opts = [c for c in row[1:-1]]
        out.append(MCQ(id=f"{subject}-{lineno}", question=row[0].strip(), options=tuple(opts),
                       answer=_answer_index(row[-1], opts, f"{p}:{lineno}"), subject=subject, source=p.name))
    return out


def _norm_group(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _bbq_item(rec: dict[str, Any], where: str) -> MCQ:
    for key in ("context", "question", "ans0", "ans1", "ans2", "label", "context_condition", "question_polarity"):
        if key not in rec:
            raise DataError(f"{where}: not a BBQ record (missing {key!r})")
    options = (str(rec["ans0"]), str(rec["ans1"]), str(rec["ans2"]))
    info = rec.get("answer_info") or {}
    groups = [str(x) for x in (rec.get("additional_metadata") or {}).get("stereotyped_groups", [])]
    wanted = {_norm_group(g) for g in groups}
    labels = [str((info.get(f"ans{k}") or ["", ""])[-1]) for k in range(3)]
    unknown = next((k for k, lab in enumerate(labels) if lab.lower() == "unknown"), None)
    if unknown is None:
        raise DataError(f"{where}: BBQ record without an 'unknown' answer in answer_info")
    others = [k for k in range(3) if k != unknown]
    target = [k for k in others if _norm_group(labels[k]) in wanted]
    biased: int | None = None
    if len(target) == 1:
        # A biased answer picks the stereotyped group for a negative question and the other
        # group for a non-negative one (Parrish et al. 2022, section 4).
        non_target = next(k for k in others if k != target[0])
        biased = target[0] if rec["question_polarity"] == "neg" else non_target
    category = str(rec.get("category", ""))
    return MCQ(
        id=f"bbq-{category}-{rec.get('example_id', where)}", question=str(rec["question"]), options=options,
        answer=int(rec["label"]), subject=f"bbq-{category}" if category else "bbq", context=str(rec["context"]),
        source="bbq",
        meta={"condition": str(rec["context_condition"]), "polarity": str(rec["question_polarity"]),
              "category": category, "unknown": unknown, "biased": biased},
    )


def load_bbq(path: str | Path, categories: Iterable[str] | None = None) -> list[MCQ]:
    """BBQ items from one file (any `read_records` format) or a folder of them; ``categories`` filters by stem."""
    p = Path(path)
    if not split_spec(p)[0].exists():
        raise DataError(f"{p}: no such file or folder; point it at BBQ's data/ folder or one of its .jsonl files")
    if p.is_dir() and not is_hf_dataset_dir(p):
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in RECORD_SUFFIXES or is_hf_dataset_dir(f))
    else:
        files = [p]
    if categories is not None:
        wanted = set(categories)
        files = [f for f in files if split_spec(f)[0].stem in wanted]
        if not files:
            raise DataError(f"{p}: no BBQ file for categories {sorted(wanted)}")
    if not files:
        raise DataError(f"{p}: no .jsonl files found")
    out = []
    for f in files:
        for lineno, rec in enumerate(read_records(f), 1):
            out.append(_bbq_item(rec, f"{f}:{lineno}"))
    return out


def load_questions(spec: str) -> list[MCQ]:
    """Questions from a source spec: ``builtin``, ``bbq:<file-or-folder>``, a ``.csv`` or a records file.

    A records file is ``.jsonl``, ``.json``, ``.parquet`` or a saved ``datasets`` folder (``::split``
    selects a split); one whose first record has ``ans0`` is read as BBQ. A plain folder is BBQ too.
    """
    spec = str(spec).strip()
    if spec == "builtin":
        return load_builtin_questions()
    if spec.startswith("bbq:"):
        return load_bbq(spec[4:])
    p = Path(spec)
    if p.is_dir() and not is_hf_dataset_dir(p):
        return load_bbq(p)
    if p.suffix.lower() == ".csv":
        return load_mmlu_csv(p)
    if p.suffix.lower() in RECORD_SUFFIXES or is_hf_dataset_dir(split_spec(p)[0]):
        first = read_records(p)[0]
        return load_bbq(p) if "ans0" in first else load_mcq_jsonl(p)
    raise UsageError(f"Unknown question source {spec!r}: use 'builtin', 'bbq:<path>', a .csv (MMLU), "
                     "a .jsonl/.json/.parquet file or a saved datasets folder")


def sample_questions(questions: Sequence[MCQ], n: int, seed: int = 0) -> list[MCQ]:
    """``n`` questions stratified round-robin over subjects (BBQ: over category x condition x polarity).

    ``n <= 0`` or ``n >= len`` keeps all. The result keeps the input order, so a smaller sample
    with the same seed is not a subset in general but is deterministic.
    """
    if n <= 0 or n >= len(questions):
        return list(questions)
    rng = random.Random(seed)
    strata: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        key = q.subject + (f"/{q.meta['condition']}/{q.meta['polarity']}" if q.is_bbq else "")
        strata.setdefault(key, []).append(i)
    pools = [rng.sample(v, len(v)) for _, v in sorted(strata.items())]
    rng.shuffle(pools)
    picked: list[int] = []
    while len(picked) < n:
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return [questions[i] for i in sorted(picked)]


__all__ = [
    "LETTERS",
    "MCQ",
    "builtin_questions_path",
    "load_bbq",
    "load_builtin_questions",
    "load_mcq_jsonl",
    "load_mmlu_csv",
    "load_questions",
    "sample_questions",
]
