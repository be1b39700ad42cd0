"""Process-wide settings read from the environment (cache location, offline mode)."""

from __future__ import annotations

import os
from pathlib import Path


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
