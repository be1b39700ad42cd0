"""Trait specs (the persona-vectors recipe) and the extraction pipeline.

A `TraitSpec` has a name, a description, >= 5 pairs of contrasting system instructions,
extraction and evaluation questions, and a judge rubric. `extract_persona_vector` generates
responses under the positive and negative instructions, rates them, keeps pairs by the paper's
thresholds, and takes the per-layer mean difference of response-averaged activations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data import is_path_spec
from ..errors import DataError
from ..records import stable_hash
from ..sites import Position
from ..store import collect, generate
from .extract import mean_diff
from .vector import PersonaVector

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter
    from ..judges.base import Judge, Rubric


@dataclass(frozen=True)
class TraitSpec:
    """One trait: contrasting instructions, questions and a judge rubric (with {question}/{answer})."""

    name: str
    description: str
    instructions: tuple[tuple[str, str], ...]
    extraction_questions: tuple[str, ...]
    evaluation_questions: tuple[str, ...]
    rubric: str = ""
    source: str = ""

    @property
    def hash(self) -> str:
        """Content hash (recorded in every vector's provenance)."""
        return stable_hash([self.name, self.description, self.instructions, self.extraction_questions,
                            self.evaluation_questions, self.rubric])[:16]

    def judge_rubric(self) -> Rubric:
        """The spec's own judge prompt as a 0-100 `Rubric` (`TRAIT` when the spec has none).

        Works for our ``rubric`` and for persona_vectors' ``eval_prompt`` (both use ``{question}``
        and ``{answer}``); a ``REFUSAL`` answer gives an invalid rating.
        """
        from ..judges.rubrics import TRAIT, rubric_from_eval_prompt

        return rubric_from_eval_prompt(self.rubric, f"trait:{self.name}") if self.rubric else TRAIT

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> TraitSpec:
        """Build from our JSON schema; errors name the missing field."""
        for key in ("name", "instructions", "extraction_questions"):
            if key not in data:
                raise DataError(f"{source or 'trait spec'}: missing field {key!r}")
        pairs = tuple(_pairs(data["instructions"], "instructions", source or "trait spec"))
        if len(pairs) < 1:
            raise DataError(f"{source}: 'instructions' needs at least one pos/neg pair")
        return cls(
            name=str(data["name"]), description=str(data.get("description", data["name"])),
            instructions=pairs, extraction_questions=tuple(data["extraction_questions"]),
            evaluation_questions=tuple(data.get("evaluation_questions", ())),
            rubric=str(data.get("rubric", "")), source=source,
        )

    @classmethod
    def from_persona_vectors(cls, data: dict[str, Any], source: str | Path, *,
                             eval_questions: list[str] | None = None) -> TraitSpec:
        """Build from a persona_vectors trait file (``trait_data_extract/<trait>.json``).

        The schema is ``{"instruction": [{"pos", "neg"}, ...], "questions": [...], "eval_prompt"}``.
        The trait name is the file stem. As in the paper's code, the system prompts are
        ``"You are a/an {trait} assistant. {pos}"`` and ``"You are a helpful assistant. {neg}"``;
        ``questions`` are the extraction questions and, unless ``eval_questions`` is given (the
        sibling ``trait_data_eval`` file, see `load_trait`), the evaluation questions too;
        ``eval_prompt`` becomes ``rubric`` (see `judge_rubric`).

        Raises:
            DataError: A missing or malformed field; the message names the field and the file.
        """
        where = str(source)
        name = Path(source).stem
        for key, kind in (("instruction", list), ("questions", list), ("eval_prompt", str)):
            if key not in data:
                raise DataError(f"{where}: missing field {key!r} (persona_vectors trait file: instruction, "
                                "questions, eval_prompt)")
            if not isinstance(data[key], kind):
                raise DataError(f"{where}: field {key!r} must be a {kind.__name__}")
        if "{answer}" not in data["eval_prompt"]:
            raise DataError(f"{where}: field 'eval_prompt' has no {{answer}} placeholder")
        questions = _questions(data["questions"], "questions", where)
        article = "an" if name[:1].lower() in "aeiou" else "a"
        pairs = tuple((f"You are {article} {name} assistant. {pos}", f"You are a helpful assistant. {neg}")
                      for pos, neg in _pairs(data["instruction"], "instruction", where))
        return cls(name=name, description=name, instructions=pairs, extraction_questions=questions,
                   evaluation_questions=tuple(eval_questions) if eval_questions is not None else questions,
                   rubric=data["eval_prompt"], source=where)


def _pairs(items: Any, key: str, where: str) -> list[tuple[str, str]]:
    """``(pos, neg)`` pairs from a list of ``{"pos", "neg"}`` objects; errors name field and file."""
    if not isinstance(items, list) or not items:
        raise DataError(f"{where}: field {key!r} must be a non-empty list of {{\"pos\", \"neg\"}} objects")
    out = []
    for i, p in enumerate(items):
        if not isinstance(p, dict) or not isinstance(p.get("pos"), str) or not isinstance(p.get("neg"), str):
            raise DataError(f"{where}: {key}[{i}] needs string fields 'pos' and 'neg'")
        out.append((p["pos"], p["neg"]))
    return out


def _questions(items: list[Any], key: str, where: str) -> tuple[str, ...]:
    if not items or not all(isinstance(q, str) and q.strip() for q in items):
        raise DataError(f"{where}: field {key!r} must be a non-empty list of question strings")
    return tuple(items)


def builtin_traits_dir() -> Path:
    """Folder of the built-in trait specs."""
    return Path(str(resources.files("personascope") / "data" / "traits"))


def builtin_traits() -> list[str]:
    """Names of the built-in traits."""
    return sorted(p.stem for p in builtin_traits_dir().glob("*.json"))


def is_trait_path(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names a trait file rather than a built-in trait (see `data.is_path_spec`)."""
    return is_path_spec(name_or_path)


def _read_trait_json(name_or_path: str | Path) -> tuple[Any, Path]:
    """The JSON of a built-in trait (by name only) or of a trait file (by path only), and its path."""
    if not is_trait_path(name_or_path):
        builtin = builtin_traits()
        if name_or_path not in builtin:
            raise DataError(f"Unknown trait {str(name_or_path)!r}; built-in: {', '.join(builtin)} "
                            "(or give a trait file's path)")
        path = builtin_traits_dir() / f"{name_or_path}.json"
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise DataError(f"No such trait file: {path}")
    try:
        return json.loads(path.read_bytes().decode("utf-8")), path
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f"Cannot read trait {path}: {' '.join(str(exc).split())}") from exc


def load_trait(name_or_path: str | Path) -> TraitSpec:
    """A built-in trait by name, or a trait file in our schema or persona_vectors' (auto-detected).

    A built-in name (``evil``) only ever means the shipped file; a path (with a separator or ending
    in ``.json``, see `is_trait_path`) is read as given and must exist.
    A persona_vectors file has ``instruction`` + ``eval_prompt`` (ours: ``name`` + ``instructions``).
    For ``.../trait_data_extract/<trait>.json`` with a sibling ``.../trait_data_eval/<trait>.json``,
    the sibling's questions become the evaluation questions.
    """
    data, path = _read_trait_json(name_or_path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: a trait file is a JSON object, got {type(data).__name__}")
    if "instructions" not in data and ("instruction" in data or "eval_prompt" in data):
        eval_questions = None
        sibling = path.parent.parent / "trait_data_eval" / path.name
        if path.parent.name == "trait_data_extract" and sibling.exists():
            sib, _ = _read_trait_json(sibling)
            if not isinstance(sib, dict) or "questions" not in sib:
                raise DataError(f"{sibling}: missing field 'questions'")
            eval_questions = list(_questions(sib["questions"], "questions", str(sibling)))
        return TraitSpec.from_persona_vectors(data, path, eval_questions=eval_questions)
    return TraitSpec.from_dict(data, str(path))


@dataclass
class Extraction:
    """What `extract_persona_vector` produced: vectors per read position, pairs, ratings."""

    vectors: dict[str, PersonaVector]
    kept: int
    total: int
    filtered: bool
    note: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def vector(self) -> PersonaVector:
        """The default vector (mean difference of response-averaged activations)."""
        return self.vectors[Position.RESPONSE_MEAN.value]


def extract_persona_vector(
    model: ModelAdapter,
    trait: TraitSpec | str,
    *,
    judge: Judge | None = None,
    n_questions: int | None = None,
    n_instructions: int | None = None,
    max_new_tokens: int = 48,
    trait_threshold: float = 50.0,
    coherence_threshold: float = 50.0,
    min_fluency: float = -3.0,
    batch_size: int | None = None,
    progress: bool = True,
) -> Extraction:
    """Extract a persona vector with the persona-vectors recipe (all layers, one pass per batch).

    Args:
        model: The subject model.
        trait: A `TraitSpec` or a built-in trait name.
        judge: Rates trait expression and coherence (0-100). Pairs are kept when the positive
            response scores >= ``trait_threshold``, the negative one below it, and both are
            coherent. A pair with an invalid rating is dropped and counted in the note; a judge with
            no valid rating at all raises `DataError`. ``None`` keeps every pair; the vector's
            ``meta["filtered"]`` records which.
        n_questions: Use the first n extraction questions (default all).
        n_instructions: Use the first n instruction pairs (default all).
        max_new_tokens: Response length.
        trait_threshold: See ``judge``.
        coherence_threshold: See ``judge``.
        min_fluency: When the judge cannot rate coherence: both answers of a kept pair must have a mean
            log-prob per token of at least this (nats) under the model, given their prompts.
        batch_size: Prompts per batch.
        progress: Show progress bars.
    """
    from ..judges.base import Item
    from ..judges.rubrics import COHERENCE, TRAIT

    spec = load_trait(trait) if isinstance(trait, str) else trait
    questions = list(spec.extraction_questions[:n_questions])
    pairs = list(spec.instructions[:n_instructions])
    pos_prompts, neg_prompts, qs = [], [], []
    for pos_i, neg_i in pairs:
        for q in questions:
            pos_prompts.append(model.format_chat(user=q, system=pos_i))
            neg_prompts.append(model.format_chat(user=q, system=neg_i))
            qs.append(q)
    pos_resp = generate(model, pos_prompts, max_new_tokens, batch_size=batch_size, progress=progress)
    neg_resp = generate(model, neg_prompts, max_new_tokens, batch_size=batch_size, progress=progress)
    # response_mean needs at least one response token; an immediate end of turn gives "".
    keep = [bool(a) and bool(b) for a, b in zip(pos_resp, neg_resp, strict=True)]
    filtered, note, rows = False, "no judge: all non-empty pairs kept", []
    if judge is not None:
        def rate(resps: list[str], rubric: Any) -> list[Any]:
            return judge.rate([Item(text=r, question=q, target=spec.description) for r, q in zip(resps, qs,
                                                                                                  strict=True)], rubric)

        tp, tn = rate(pos_resp, TRAIT), rate(neg_resp, TRAIT)
        cp, cn = rate(pos_resp, COHERENCE), rate(neg_resp, COHERENCE)
        valid = [a.valid and b.valid and a.value is not None and b.value is not None
                 for a, b in zip(tp, tn, strict=True)]
        invalid = valid.count(False)
        if not any(valid):
            raise DataError(f"The judge gave no valid trait rating for trait {spec.name!r} ({len(valid)} pairs): "
                            "use a judge that can rate it (--judge logprob or http)")
        filtered = True
        note = f"judge {judge.identity.kind}:{judge.identity.name}"
        # A pair the judge could not rate is dropped and counted, never kept unfiltered.
        keep = [k and ok and a.value >= trait_threshold > b.value
                for k, ok, a, b in zip(keep, valid, tp, tn, strict=True)]
        if invalid:
            note += f"; {invalid} pair(s) dropped: invalid trait rating"
        if all(r.valid for r in cp + cn):
            keep = [k and c.value >= coherence_threshold and d.value >= coherence_threshold
                    for k, c, d in zip(keep, cp, cn, strict=True)]
        else:
            # e.g. the contrast judge: it has no coherence prompt. Coherence by fluency instead: the
            # mean log-prob per token of each answer under the model that wrote it, given its prompt.
            idx_k = [i for i, k in enumerate(keep) if k]
            if idx_k:
                fl = model.logprobs([pos_prompts[i] for i in idx_k] + [neg_prompts[i] for i in idx_k],
                                    [pos_resp[i] for i in idx_k] + [neg_resp[i] for i in idx_k], reduce="mean",
                                    batch_size=batch_size)
                m = len(idx_k)
                fluent = {i: bool(fl[j] >= min_fluency and fl[m + j] >= min_fluency) for j, i in enumerate(idx_k)}
                dropped = sum(not v for v in fluent.values())
                keep = [k and fluent.get(i, False) for i, k in enumerate(keep)]
                note += (f"; coherence by fluency >= {min_fluency:g} nats/token (the judge cannot rate coherence): "
                         f"{dropped} pair(s) dropped")
        rows = [{"question": q, "pos": a, "neg": b, "pos_trait": x.value, "neg_trait": y.value, "kept": k}
                for q, a, b, x, y, k in zip(qs, pos_resp, neg_resp, tp, tn, keep, strict=True)]
    idx = [i for i, k in enumerate(keep) if k]
    if not idx:
        raise DataError(f"No response pair passed the filters for trait {spec.name!r} ({note}); "
                        "lower the thresholds or use more questions")
    positions = [Position.RESPONSE_MEAN, Position.PROMPT_MEAN, Position.LAST]
    sites = model.sites("all")
    pos_sets = collect(model, [pos_prompts[i] for i in idx], sites, positions,
                       responses=[pos_resp[i] for i in idx], batch_size=batch_size, progress=progress)
    neg_sets = collect(model, [neg_prompts[i] for i in idx], sites, positions,
                       responses=[neg_resp[i] for i in idx], batch_size=batch_size, progress=progress)
    vectors = {}
    for pos in positions:
        v = mean_diff(pos_sets[pos], neg_sets[pos], name=spec.name)
        v.meta.update({"trait_hash": spec.hash, "pairs_kept": len(idx), "pairs_total": len(keep),
                       "filtered": filtered, "filter_note": note, "max_new_tokens": max_new_tokens})
        vectors[pos.value] = v
    return Extraction(vectors, len(idx), len(keep), filtered, note, rows)
