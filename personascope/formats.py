"""Readers for files other tools write: persona_vectors / repeng vectors, and file hashes.

Trait files (persona_vectors' ``trait_data_extract/<trait>.json``) are read by
`personascope.steering.traits.load_trait`; ``.pt`` and ``.gguf`` vectors by
`personascope.steering.vector.PersonaVector.load` (`load_vector_any` here); CIMemories profiles
by `personascope.privacy.cimemories.load_cimemories`. The conventions (layer shifts, labels, the
domain map) are documented in ``docs/formats.md``. This module imports no torch at module level.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from .data import split_spec
from .errors import DataError

if TYPE_CHECKING:
    from .steering.vector import PersonaVector

__all__ = ["file_data_hash", "load_vector_any"]


def file_data_hash(path: str | Path) -> str:
    """sha256 (16 hex digits) of a file's bytes, or of every file under a folder (names and bytes)."""
    p, _ = split_spec(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def load_vector_any(path: str | Path) -> PersonaVector:
    """A persona vector from ``.safetensors`` (ours), ``.pt`` (persona_vectors) or ``.gguf`` (llama.cpp/repeng)."""
    from .steering.vector import PersonaVector

    return PersonaVector.load(path)
