"""Audits: frozen parameter dataclasses with ``run(model) -> AuditResult``, in one registry.

`REGISTRY` maps each audit name to ``"module:Class"``, read from the one audit table in
`personascope.catalog`; modules import lazily so that listing audits (or rendering a report)
never loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..catalog import CATALOG
from ..errors import UsageError

if TYPE_CHECKING:
    from .base import Audit

REGISTRY: dict[str, str] = {e.name: e.target for e in CATALOG}


def get_audit(name: str) -> type[Audit]:
    """The audit class registered as ``name``; `UsageError` naming the known audits otherwise."""
    if name not in REGISTRY:
        raise UsageError(f"Unknown audit {name!r}; known: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["REGISTRY", "get_audit"]
