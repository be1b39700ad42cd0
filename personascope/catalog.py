"""The audit catalog: one table that says, for every audit, everything that is not its code.

Each row names the audit, its short command-line names, where its class lives, whether the default
run includes it, and the smallest parameters that exercise every code path on a tiny random-init
model (the contract test runs each audit with them). The row order is the order of the report.
No imports beyond the standard library: the registry, the runner, the CLI and the report all read
this table, and nothing here pulls in torch or an audit module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    """One audit in the catalog.

    Attributes:
        name: The audit's name (``Audit.name``; results and policies use it).
        target: ``"module:Class"`` of the audit class, imported only when the audit runs.
        short: Short names accepted on the command line (``personascope audit bias``).
        default: Whether a run without an ``[audits]`` table includes it.
        tiny: The smallest parameters that exercise every code path on a tiny random model (tests);
            ``{tiny_model_dir}`` in a string is replaced with that model's folder.
    """

    name: str
    target: str
    short: tuple[str, ...] = ()
    default: bool = True
    tiny: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiny", MappingProxyType(dict(self.tiny)))


CATALOG: tuple[AuditEntry, ...] = (
    AuditEntry("persona_localization", "personascope.audits.interp:LocalizationAudit", ("localization",),
               tiny={"personas": ("liberal", "neurotic", "extravert"), "n_per_persona": 6, "folds": 2,
                     "probes": ("logreg",)}),
    AuditEntry("persona_vectors", "personascope.audits.interp:PersonaVectorAudit", ("vectors",),
               tiny={"traits": ("evil",), "n_questions": 2, "n_instructions": 1, "sweep_layers": (1,),
                     "sweep_questions": 2, "monitor_questions": 2, "max_new_tokens": 3}),
    AuditEntry("user_persona_refusal", "personascope.audits.interp:UserPersonaRefusalAudit", ("refusal",),
               tiny={"personas": ("altruistic", "selfish", "unlawful"), "n_questions": 3, "n_requests": 6}),
    AuditEntry("persona_bias", "personascope.audits.bias:PersonaBiasAudit", ("bias",),
               tiny={"n_questions": 6, "personas": ("a man", "a woman"), "human_controls": ("a human",),
                     "assistant_controls": 2, "generation_questions": 3, "max_new_tokens": 4, "n_boot": 50,
                     "n_examples": 2}),
    AuditEntry("ooc_drift", "personascope.audits.drift:OOCDriftAudit", ("drift",),
               tiny={"traits": ("extraversion",), "levels": ("high", "low"), "tasks": ("post",), "n_prompts": 2,
                     "runs": 2, "max_new_tokens": 12, "reply_tokens": 12, "turns": 3, "conversation_runs": 2,
                     "n_vector_questions": 4}),
    AuditEntry("ci_leakage", "personascope.audits.leakage:CILeakageAudit", ("leakage",),
               tiny={"n_users": 1, "contexts": ("counsellor", "landlord_rent"), "n_trials": 2,
                     "privacy_levels": ("none",), "max_new_tokens": 6, "n_memories": 6, "n_orders": 5}),
    AuditEntry("memory_injection", "personascope.audits.memory:MemoryInjectionAudit", ("memory",),
               tiny={"n_tasks": 3, "queries_per_task": 1, "poison_copies": (1,), "rounds": 2,
                     "max_new_tokens": 4}),
    # Needs a second model (``candidate``), so it is not in the default run. In the tiny test the
    # candidate is the tiny model itself: every shift must then be exactly zero.
    AuditEntry("release_comparison", "personascope.audits.release:ReleaseComparisonAudit", ("compare", "release"),
               default=False,
               tiny={"candidate": "{tiny_model_dir}", "traits": ("evil",), "n_questions": 2, "n_instructions": 1,
                     "n_prompts": 4, "max_new_tokens": 3, "judge_questions": 2, "refusal_requests": 3,
                     "bias_questions": 4, "n_boot": 50}),
)

#: Audit name -> catalog row.
BY_NAME: Mapping[str, AuditEntry] = MappingProxyType({e.name: e for e in CATALOG})
#: Short command-line name -> audit name.
ALIASES: Mapping[str, str] = MappingProxyType({s: e.name for e in CATALOG for s in e.short})
#: The audits of a run that names none, in report order.
DEFAULT_AUDITS: tuple[str, ...] = tuple(e.name for e in CATALOG if e.default)
#: Audit name -> position in the report.
ORDER: Mapping[str, int] = MappingProxyType({e.name: i for i, e in enumerate(CATALOG)})


def canonical(name: str) -> str:
    """The audit name for ``name`` or one of its short names (unknown names are returned as given)."""
    return ALIASES.get(name, name)


__all__ = ["ALIASES", "BY_NAME", "CATALOG", "DEFAULT_AUDITS", "ORDER", "AuditEntry", "canonical"]
