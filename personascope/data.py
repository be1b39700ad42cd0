"""Reading user data files (JSONL prompts, persona statement sets) with errors that name file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import DataError
from .extras import requires

PROMPT_FIELDS = "'text' (raw prompt), 'messages' (chat list), or 'user' with optional 'system'"


def read_json_object(path: str | Path, what: str = "data file") -> dict[str, Any]:
    """Parse a JSON file whose top level is an object; `DataError` naming ``what`` and the file otherwise."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {what} {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a JSON object at the top level")
    return data


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSONL file: one JSON object per line; blank lines are skipped.

    Raises:
        DataError: The file is missing or empty, or a line is not a JSON object (names the line).

    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    records: list[dict[str, Any]] = []
    lineno = 0
    try:
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{p}:{lineno}: invalid JSON ({exc.msg}); each line must be one JSON "
                                    "object") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                records.append(obj)
    except UnicodeDecodeError:
        # The decoder fails on the line after the last one read (it reads ahead by blocks, so approximately).
        raise DataError(f"{p}: not UTF-8 text (near line {lineno + 1}); save it as UTF-8") from None
    except OSError as exc:  # a folder, a permission problem
        raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not records:
        raise DataError(f"{p}: the file has no records; write one JSON object per line")
    return records


#: Suffixes `read_records` reads (besides a folder written by ``datasets``' ``save_to_disk``).
RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_hf_dataset_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    p = Path(path)
    return p.is_dir() and any((p / m).exists() for m in _HF_MARKERS)


def split_spec(path: str | Path) -> tuple[Path, str | None]:
    """``(path, split)`` from ``"folder::split"``; the split is None without ``::``."""
    text = str(path)
    if "::" in text:
        base, split = text.rsplit("::", 1)
        return Path(base), split or None
    return Path(text), None


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records (JSON objects) from a user data file, whatever its container.

    Dispatches on what ``path`` is:

    - ``.jsonl``: one JSON object per line (`read_jsonl`);
    - ``.json``: a JSON list of objects (or an object holding one such list, e.g. ``{"data": [...]}``);
    - ``.parquet``: every row of the table (pyarrow, imported only here; null fields are dropped,
      so a column a row does not use reads as an absent field);
    - a folder written by ``datasets``' ``save_to_disk`` (``dataset_info.json``/``state.json``):
      every row, read with ``datasets.load_from_disk`` without network. A ``DatasetDict`` folder
      needs a split: write ``folder::split`` (the error lists the splits).

    Raises:
        DataError: Missing or empty input, an unknown suffix, a record that is not an object, or a
            ``DatasetDict`` without a split; the message names the file and the fix.

    """
    p, split = split_spec(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        if not is_hf_dataset_dir(p):
            raise DataError(f"{p} is a folder but not a Hugging Face dataset saved with save_to_disk "
                            "(no dataset_info.json/state.json/dataset_dict.json); point at a file instead")
        records = _read_hf_dir(p, split)
    elif split is not None:
        raise DataError(f"{path}: '::{split}' selects a split of a saved dataset folder; {p} is a file")
    elif p.suffix.lower() == ".jsonl":
        return read_jsonl(p)
    elif p.suffix.lower() == ".json":
        records = _read_json_list(p)
    elif p.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            records = _drop_nulls(pq.read_table(str(p)).to_pylist())
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            raise DataError(f"{p}: cannot read parquet ({exc})") from exc
    else:
        raise DataError(f"{p}: unknown data file type {p.suffix!r}; use .jsonl, .json (a list), .parquet "
                        "or a folder saved with datasets' save_to_disk")
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise DataError(f"{p}: record {i}: expected a JSON object, got {type(rec).__name__}")
    if not records:
        raise DataError(f"{p}: the file has no records")
    return records


def _drop_nulls(rows: list[Any]) -> list[Any]:
    # A columnar table has every column in every row; a null there means the field is absent, as
    # it would be from a JSONL line (so "key in record" checks read both containers alike).
    return [{k: v for k, v in r.items() if v is not None} if isinstance(r, dict) else r for r in rows]


def _read_json_list(p: Path) -> list[Any]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: invalid JSON ({exc})") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{p}: expected a JSON list of records (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{p}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _read_hf_dir(p: Path, split: str | None) -> list[Any]:
    with requires("datasets", f"reading the saved dataset folder {p}"):
        import datasets  # lazily: heavy, and only needed for saved dataset folders

    try:
        ds = datasets.load_from_disk(str(p))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise DataError(f"{p}: cannot load the saved dataset ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None:
            raise DataError(f"{p} holds several splits ({', '.join(splits)}); choose one as {p}::{splits[0]}")
        if split not in ds:
            raise DataError(f"{p}: no split {split!r}; available: {', '.join(splits)}")
        ds = ds[split]
    elif split is not None:
        raise DataError(f"{p} is a single dataset without splits; drop '::{split}'")
    return _drop_nulls(ds.to_list())


@dataclass(frozen=True)
class PromptRecord:
    """One prompt from a prompt file: the rendered text and an optional label."""

    text: str
    label: str | None = None


def check_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """Read a prompt file (any `read_records` format) and check every record has a prompt field."""
    from .chat import check_messages

    records = read_records(path)
    for lineno, rec in enumerate(records, 1):
        if not any(isinstance(rec.get(k), t) for k, t in (("text", str), ("messages", list), ("user", str))):
            raise DataError(f"{path}: record {lineno}: no prompt field; give {PROMPT_FIELDS}")
        if not isinstance(rec.get("text"), str) and isinstance(rec.get("messages"), list):
            try:
                check_messages(rec["messages"])
            except DataError as exc:
                raise DataError(f"{path}: record {lineno}: bad 'messages' ({exc})") from None
    return records


def load_prompts(path: str | Path, render_chat: Callable[..., str]) -> list[PromptRecord]:
    """Load prompts from a JSONL file (or any `read_records` format); chat records use ``render_chat``.

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
            except (KeyError, TypeError, DataError) as exc:
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
    """Load persona statements from a file or a folder of them (default: the built-in set).

    A file is anything `read_records` reads (Anthropic's ``persona/*.jsonl``, a ``.json`` list, a
    ``.parquet`` file, a saved ``datasets`` folder); a plain folder is read file by file. The
    persona name is the file stem (the folder name for a saved dataset). ``personas`` filters by
    name, and an unknown name is an error listing the available ones.
    """
    src = Path(source) if source is not None else builtin_personas_dir()
    if src.is_dir() and not is_hf_dataset_dir(src):
        files = sorted(f for f in src.iterdir() if f.suffix.lower() in RECORD_SUFFIXES or is_hf_dataset_dir(f))
    else:
        files = [src]
    if not files:
        raise DataError(f"{src}: no persona files found (.jsonl, .json, .parquet)")
    wanted = set(personas) if personas is not None else None
    out: list[PersonaStatement] = []
    for f in files:
        stem = split_spec(f)[0].stem
        if wanted is not None and stem not in wanted:
            continue
        for lineno, rec in enumerate(read_records(f), 1):
            if "statement" not in rec:
                raise DataError(f"{f}:{lineno}: missing field 'statement'")
            amb = str(rec.get("answer_matching_behavior", " Yes")).strip().lower()
            if amb not in ("yes", "no"):
                raise DataError(f"{f}:{lineno}: answer_matching_behavior must be ' Yes' or ' No'")
            out.append(PersonaStatement(stem, str(rec["statement"]), amb == "yes"))
    if wanted is not None:
        missing = wanted - {s.persona for s in out}
        if missing:
            have = ", ".join(sorted(split_spec(f)[0].stem for f in files))
            raise DataError(f"Unknown persona(s) {', '.join(sorted(missing))}; available: {have}")
    return out


def is_path_spec(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names a file: a `Path`, or text with a separator or ending in ``.json``.

    Anything else is a built-in name, looked up in a closed list and never joined to a folder as a
    path, so ``../../x`` cannot reach a file outside the package's data.
    """
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    return "/" in text or "\\" in text or os.sep in text or text.lower().endswith(".json")


def load_named_json(name_or_path: str | Path, folder: Path, kind: str, builtin: list[str]) -> tuple[Any, Path]:
    """Read a built-in JSON file by name (one of ``builtin``) or any JSON file by path (see `is_path_spec`).

    Returns:
        ``(data, path)``.

    Raises:
        DataError: Unknown name (lists the built-in ones), a missing file, or an unreadable file.
    """
    if is_path_spec(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise DataError(f"{kind} file {path} does not exist; built-in names: {', '.join(builtin)}")
    elif str(name_or_path) in builtin:
        path = folder / f"{name_or_path}.json"
    else:
        raise DataError(f"Unknown {kind} {str(name_or_path)!r}; built-in: {', '.join(builtin)} (or give a .json path)")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {kind} {path}: {exc}") from exc
