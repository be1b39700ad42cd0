"""Audits: frozen parameter dataclasses with ``run(model) -> AuditResult``, in one registry.

`REGISTRY` maps each audit name to ``"module:Class"``; modules import lazily so that listing
audits (or rendering a report) never loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .base import Audit

REGISTRY: dict[str, str] = {
    "persona_localization": "personascope.audits.interp:LocalizationAudit",
    "persona_vectors": "personascope.audits.interp:PersonaVectorAudit",
    "user_persona_refusal": "personascope.audits.interp:UserPersonaRefusalAudit",
    "persona_bias": "personascope.audits.bias:PersonaBiasAudit",
    "ooc_drift": "personascope.audits.drift:OOCDriftAudit",
    "ci_leakage": "personascope.audits.leakage:CILeakageAudit",
    "memory_injection": "personascope.audits.memory:MemoryInjectionAudit",
    # Needs a second model (param ``candidate``); not in the default run (see runner.QUICK_AUDITS).
    "release_comparison": "personascope.audits.release:ReleaseComparisonAudit",
}


def get_audit(name: str) -> type[Audit]:
    """The audit class registered as ``name``; `UsageError` naming the known audits otherwise."""
    if name not in REGISTRY:
        raise UsageError(f"Unknown audit {name!r}; known: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["REGISTRY", "get_audit"]
