"""personascope: audit how open language models represent and act out personas.

Heavy dependencies (torch, transformers, nnsight, transformer_lens) load lazily on first use, so
``import personascope`` is fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "personascope.models",
    "DEFAULT_MODEL": "personascope.models",
    "ALIASES": "personascope.models",
    "Site": "personascope.sites",
    "Point": "personascope.sites",
    "Position": "personascope.sites",
    "ModelInfo": "personascope.records",
    "Provenance": "personascope.records",
    "ActivationSet": "personascope.store",
    "collect": "personascope.store",
    "activations": "personascope.store",
    "Steer": "personascope.backends.base",
    "ModelAdapter": "personascope.backends.base",
    "format_chat": "personascope.chat",
    "PersonascopeError": "personascope.errors",
    "ModelNotFoundError": "personascope.errors",
    "UsageError": "personascope.errors",
    "DataError": "personascope.errors",
}

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:
    from .backends.base import ModelAdapter, Steer
    from .chat import format_chat
    from .errors import DataError, ModelNotFoundError, PersonascopeError, UsageError
    from .models import ALIASES, DEFAULT_MODEL, load_model
    from .records import ModelInfo, Provenance
    from .sites import Point, Position, Site
    from .store import ActivationSet, activations, collect


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'personascope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
