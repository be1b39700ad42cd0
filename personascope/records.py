"""JSON-able records of how every result was made. No torch import: reports read these."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (and personascope), read from metadata without importing."""
    out: dict[str, str] = {}
    for name in ("personascope", *names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def stable_hash(obj: Any) -> str:
    """Sha256 of the canonical JSON of ``obj`` (sorted keys), as hex."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(data).hexdigest()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def now_iso() -> str:
    """Current UTC time in ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def finite(x: Any, ndigits: int | None = None) -> float | None:
    """``float(x)``, or None for None/NaN/inf (JSON has no NaN); rounded to ``ndigits`` if given."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return round(v, ndigits) if ndigits is not None else v


class ModelInfo(BaseModel):
    """Identity of a loaded model; goes into every saved artifact."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="What the user asked for: alias, Hugging Face id or path.")
    source: str = Field(description="The file or folder the weights came from.")
    fingerprint: str = Field(description="Hash of the weight files (see fingerprint_method).")
    fingerprint_method: str = "sha256"
    architecture: str = ""
    n_layers: int
    d_model: int
    dtype: str
    device: str
    backend: str
    versions: dict[str, str] = Field(default_factory=dict)

    @property
    def short(self) -> str:
        """Short human-readable name: id and the first 12 hex digits of the fingerprint."""
        return f"{self.id}@{self.fingerprint[:12]}"


class Provenance(BaseModel):
    """How an artifact was made, so that it can be re-run (model, sites, positions, data, seed)."""

    model: ModelInfo
    method: str
    sites: list[str] = Field(default_factory=list)
    position: str | None = None
    data_hash: str | None = None
    n_items: int | None = None
    seed: int | None = None
    created: str = Field(default_factory=now_iso)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = Field(default_factory=dict)


class JudgeIdentity(BaseModel):
    """Which judge produced a rating (kind, name, model fingerprint, prompt hash, version)."""

    model_config = ConfigDict(frozen=True)

    kind: str  # "rules:refusal", "logprob", "http", "tfidf", ...
    name: str = ""
    model_fingerprint: str | None = None
    prompt_hash: str | None = None
    version: str = "1"

    @property
    def key(self) -> str:
        """Stable key of this identity (used in cache keys)."""
        return stable_hash(self.model_dump(mode="json"))[:16]
