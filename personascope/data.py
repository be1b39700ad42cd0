"""Reading user data files (JSONL prompts, persona statement sets) with errors that name file and line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import DataError

PROMPT_FIELDS = "'text' (raw prompt), 'messages' (chat list), or 'user' with optional 'system'"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSONL file: one JSON object per line; blank lines are skipped.

    Raises:
        DataError: The file is missing or empty, or a line is not a JSON object (names the line).

    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    records: list[dict[str, Any]] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: invalid JSON ({exc.msg}); each line must be one JSON object") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            records.append(obj)
    if not records:
        raise DataError(f"{p}: the file has no records; write one JSON object per line")
    return records


@dataclass(frozen=True)
class PromptRecord:
    """One prompt from a prompt file: the rendered text and an optional label."""

    text: str
    label: str | None = None


def check_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """Read a prompt JSONL file and check every record has a prompt field, before any model loads."""
    records = read_jsonl(path)
    for lineno, rec in enumerate(records, 1):
        if not any(isinstance(rec.get(k), t) for k, t in (("text", str), ("messages", list), ("user", str))):
            raise DataError(f"{path}: record {lineno}: no prompt field; give {PROMPT_FIELDS}")
    return records


def load_prompts(path: str | Path, render_chat: Callable[..., str]) -> list[PromptRecord]:
    """Load prompts from JSONL; chat records are rendered with ``render_chat`` (the model's template).

    Each line has one of: ``text`` (used as is), ``messages`` (``[{"role", "content"}]``), or
    ``user`` with an optional ``system``; and an optional ``label``.
    """
    out: list[PromptRecord] = []
    for lineno, rec in enumerate(check_prompt_file(path), 1):
        label = rec.get("label")
        label = None if label is None else str(label)
        if isinstance(rec.get("text"), str):
            text = rec["text"]
        elif isinstance(rec.get("messages"), list):
            try:
                text = render_chat(rec["messages"])
            except (KeyError, TypeError) as exc:
                raise DataError(f"{path}: record {lineno}: bad 'messages' ({exc}); use role/content dicts") from None
        elif isinstance(rec.get("user"), str):
            text = render_chat(None, user=rec["user"], system=rec.get("system"))
        else:
            raise DataError(f"{path}: record {lineno}: no prompt field; give {PROMPT_FIELDS}")
        if not text.strip():
            raise DataError(f"{path}: record {lineno}: the prompt is empty")
        out.append(PromptRecord(text, label))
    return out


@dataclass(frozen=True)
class PersonaStatement:
    """A statement from an Anthropic persona-eval style file."""

    persona: str
    statement: str
    positive: bool  # the persona would say it (answer_matching_behavior == " Yes")


def builtin_personas_dir() -> Path:
    """Folder of the persona statement set shipped with personascope."""
    return Path(str(resources.files("personascope") / "data" / "personas"))


def load_persona_statements(
    source: str | Path | None = None, personas: Iterable[str] | None = None
) -> list[PersonaStatement]:
    """Load persona statements from a JSONL file or a folder of them (default: the built-in set).

    The persona name is the file stem. ``personas`` filters by name.
    """
    src = Path(source) if source is not None else builtin_personas_dir()
    files = sorted(src.glob("*.jsonl")) if src.is_dir() else [src]
    if not files:
        raise DataError(f"{src}: no .jsonl persona files found")
    wanted = set(personas) if personas is not None else None
    out: list[PersonaStatement] = []
    for f in files:
        if wanted is not None and f.stem not in wanted:
            continue
        for lineno, rec in enumerate(read_jsonl(f), 1):
            if "statement" not in rec:
                raise DataError(f"{f}:{lineno}: missing field 'statement'")
            amb = str(rec.get("answer_matching_behavior", " Yes")).strip().lower()
            if amb not in ("yes", "no"):
                raise DataError(f"{f}:{lineno}: answer_matching_behavior must be ' Yes' or ' No'")
            out.append(PersonaStatement(f.stem, str(rec["statement"]), amb == "yes"))
    if wanted is not None:
        missing = wanted - {s.persona for s in out}
        if missing:
            have = ", ".join(sorted(f.stem for f in files))
            raise DataError(f"Unknown persona(s) {', '.join(sorted(missing))}; available: {have}")
    return out


def load_named_json(name_or_path: str | Path, folder: Path, kind: str, builtin: list[str]) -> tuple[Any, Path]:
    """Read a built-in JSON file by name (``folder/<name>.json``) or any JSON file by path.

    Returns:
        ``(data, path)``.

    Raises:
        DataError: Unknown name (lists the built-in ones) or an unreadable file.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = folder / f"{name_or_path}.json"
        if not path.exists():
            raise DataError(f"Unknown {kind} {str(name_or_path)!r}; built-in: {', '.join(builtin)}")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {kind} {path}: {exc}") from exc
