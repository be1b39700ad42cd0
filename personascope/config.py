"""Process-wide settings read from the environment (cache location, offline mode)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .errors import UsageError


def cache_dir() -> Path:
    """Root of personascope's on-disk cache: ``$PERSONASCOPE_CACHE`` or ``~/.cache/personascope``."""
    root = os.environ.get("PERSONASCOPE_CACHE") or Path.home() / ".cache" / "personascope"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted.

    personascope is offline by default: only ``HF_HUB_OFFLINE=0`` (or ``false``/``no``) allows
    downloads, because on most audit machines the hub is not reachable and a silent hang is worse
    than a clear error.
    """
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return True
    return value.strip().lower() not in ("0", "false", "no", "off")


#: What each folder (or file) of the cache holds, in the order ``personascope cache info`` lists them.
CACHE_KINDS: dict[str, str] = {
    "models": "GGUF files copied from their packages and their dequantized float32 copies (about 5x the GGUF)",
    "organisms": "fine-tuned model organisms (personascope validate --organisms finetune), float32 folders",
    "activations": "captured activations (safetensors), keyed by model fingerprint, prompts and sites",
    "generations": "generated texts, keyed by model fingerprint, prompt and decoding settings",
    "calls": "log-prob, option and next-token scores of the caching adapter",
    "judgements": "judge ratings, keyed by judge identity, rubric and text",
    "fingerprints": "model fingerprints memoised by file size and time (fingerprints.json)",
}


def _cache_path(kind: str) -> Path:
    return cache_dir() / ("fingerprints.json" if kind == "fingerprints" else kind)


def cache_usage() -> list[dict[str, Any]]:
    """One row per cache kind: ``kind``, ``path``, ``bytes``, ``files`` and what it holds."""
    rows: list[dict[str, Any]] = []
    for kind, what in CACHE_KINDS.items():
        path = _cache_path(kind)
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        rows.append({"kind": kind, "path": str(path), "bytes": sum(p.stat().st_size for p in files),
                     "files": len(files), "holds": what})
    return rows


def clear_cache(kinds: list[str]) -> int:
    """Delete the cache folders of ``kinds`` (names of `CACHE_KINDS`); returns the bytes freed.

    Raises:
        UsageError: An unknown kind (the message lists the known ones).
    """
    unknown = [k for k in kinds if k not in CACHE_KINDS]
    if unknown:
        raise UsageError(f"Unknown cache kind(s) {', '.join(map(repr, unknown))}; known: {', '.join(CACHE_KINDS)}")
    sizes = {r["kind"]: int(r["bytes"]) for r in cache_usage()}
    freed = 0
    for kind in dict.fromkeys(kinds):
        path = _cache_path(kind)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()
        freed += sizes.get(kind, 0)
    return freed
