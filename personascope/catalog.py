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
        metrics: Every metric name the audit can produce (without ``[group]``); the gate checks a
            policy's metric names against it, so a typo is an error even with ``missing = "skip"``.
            The contract test checks that a tiny run produces no name outside it.
        extras: The pip extras (`personascope.extras.EXTRAS`) the audit needs; a run checks them
            before loading a model, so a missing one is a one-line error and no work is lost.
        samples: Whether the audit scores items it records as per-sample records (`Sample`): every
            audit that scores model text does; an audit of activations alone, or of other audits, does not.
        cost: Seconds of its quick profile on 2 CPU cores with the embedded model (measured with
            ``make demo``); the run's overall progress bar weighs audits by it, so its ETA is in time.
    """

    name: str
    target: str
    short: tuple[str, ...] = ()
    default: bool = True
    tiny: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    samples: bool = True
    cost: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiny", MappingProxyType(dict(self.tiny)))


CATALOG: tuple[AuditEntry, ...] = (
    AuditEntry("persona_localization", "personascope.audits.localization:LocalizationAudit", ("localization",),
               tiny={"personas": ("liberal", "neurotic", "extravert"), "n_per_persona": 6, "folds": 2,
                     "probes": ("logreg",)},
               metrics=("above_lexical", "band_end", "band_start", "best_accuracy", "best_layer",
                        "best_layer_candidates", "chance", "control_accuracy_max", "lexical_accuracy",
                        "permutation_null_mean", "permutation_null_p95", "permutation_p", "permutation_p_layers",
                        "silhouette_best"),
               samples=False,
               cost=21),
    AuditEntry("persona_vectors", "personascope.audits.vectors:PersonaVectorAudit", ("vectors",),
               tiny={"traits": ("evil",), "n_questions": 2, "n_instructions": 1, "sweep_layers": (1,),
                     "sweep_questions": 2, "monitor_questions": 2, "max_new_tokens": 3,
                     "null_directions": 2},
               metrics=("chosen_layer", "judge_noise_reward", "monitor_r", "monitor_r_null_p", "pairs_kept",
                        "projection_gap", "steer_baseline", "steer_effect", "steer_effect_negative",
                        "steer_effect_select", "steer_null_percentile", "steer_null_sd", "steer_null_z",
                        "traits_steerable_share"),
               cost=229),
    AuditEntry("user_persona_refusal", "personascope.audits.refusal:UserPersonaRefusalAudit", ("refusal",),
               tiny={"personas": ("altruistic", "selfish", "unlawful"), "n_questions": 3, "n_requests": 6,
                     "n_select": 4, "null_directions": 3},
               metrics=("baseline_refusal_score", "lens_content_rate_max", "lens_peak_refusal_layer",
                        "lens_peak_refusal_mass", "null_shift_max_abs", "null_shift_sd", "predicted_cos",
                        "prediction_r", "random_cos_scale", "refusal_direction_null_p", "refusal_direction_shift",
                        "refusal_rate", "refusal_score_shift", "refusal_shift_holm_p", "refusal_shift_null_p",
                        "yes_no_r", "yes_no_shift"),
               cost=243),
    AuditEntry("persona_bias", "personascope.audits.bias:PersonaBiasAudit", ("bias",),
               tiny={"n_questions": 6, "personas": ("a man", "a woman"), "human_controls": ("a human",),
                     "assistant_controls": 2, "generation_questions": 3, "max_new_tokens": 4, "n_boot": 50,
                     "n_examples": 2},
               metrics=("abstention_rate", "accuracy", "baseline_accuracy", "bbq_s_amb", "bbq_s_dis",
                        "chance_accuracy", "control_band_mean", "control_band_sd", "control_false_alarm_share",
                        "delta_vs_control", "delta_vs_reference", "drop_vs_control_share",
                        "flagged_share", "generation_accuracy", "generation_baseline_accuracy",
                        "generation_bbq_s_amb", "generation_bbq_s_dis", "generation_control_false_alarm_share",
                        "generation_delta_vs_control", "generation_delta_vs_reference",
                        "generation_drop_vs_control_share", "generation_flagged_share", "generation_mde",
                        "generation_negative_controls_flagged_share",
                        "generation_positive_control_flagged", "generation_significant_drop_share",
                        "group_accuracy", "group_delta_vs_control", "hds_abstention_rate", "hds_accuracy",
                        "hds_accuracy_controls", "hds_bbq_s_amb", "hds_bbq_s_dis",
                        "hds_generation_accuracy", "hds_generation_accuracy_controls",
                        "hds_generation_bbq_s_amb", "hds_generation_bbq_s_dis", "hds_macro", "mde",
                        "negative_controls_flagged_share", "positive_control_flagged",
                        "reference_accuracy", "significant_drop_share", "unextracted_rate", "unknown_rate"),
               cost=92),
    AuditEntry("ooc_drift", "personascope.audits.drift:OOCDriftAudit", ("drift",),
               tiny={"traits": ("extraversion",), "levels": ("high", "low"), "tasks": ("post",), "n_prompts": 2,
                     "runs": 2, "max_new_tokens": 12, "reply_tokens": 12, "turns": 3, "conversation_runs": 2,
                     "n_vector_questions": 4, "noise_items": 6},
               metrics=("acc_atom", "acc_baseline", "acc_chance", "acc_lift", "axis_rise", "axis_rise_gap",
                        "below_rate", "drift", "drift_gap", "first_below", "ic_atom", "invalid_ratings",
                        "judge_anchor_auc", "judge_drift", "judge_drift_gap", "judge_noise_reward", "persona_shift",
                        "rc_atom", "vector_gap"),
               cost=65),
    AuditEntry("ci_leakage", "personascope.audits.leakage:CILeakageAudit", ("leakage",),
               tiny={"n_users": 1, "contexts": ("counsellor", "landlord_rent"), "n_trials": 2,
                     "privacy_levels": ("none",), "max_new_tokens": 6, "n_memories": 6, "n_orders": 5},
               metrics=("chance_violation_rate", "coverage", "coverage_by_level", "coverage_judge",
                        "coverage_user_mean", "exposure_leak_rate", "false_match_rate", "null_false_match_rate",
                        "pii_entities", "pii_not_in_profile", "pii_output_rate", "planted_leak_recall",
                        "violation_above_chance_p", "violation_rate", "violation_rate_by_level",
                        "violation_rate_judge", "violation_rate_mde", "violation_rate_user_mean"),
               extras=("pii",),
               cost=41),
    AuditEntry("memory_injection", "personascope.audits.memory:MemoryInjectionAudit", ("memory",),
               tiny={"n_tasks": 3, "queries_per_task": 1, "poison_copies": (1,), "rounds": 2,
                     "max_new_tokens": 4},
               metrics=("asr_a", "asr_r", "asr_t", "asr_t_mdd", "asr_t_reduction", "benign_accuracy",
                        "benign_chance", "cycle_asr_t", "cycle_slope", "injection_success", "parse_rate",
                        "validator_fpr", "validator_recall", "validator_ties"),
               cost=93),
    # Not in the default run (the demo is already past its 10-minute budget): `personascope audit axis`.
    AuditEntry("assistant_axis", "personascope.audits.axis:AssistantAxisAudit", ("axis", "assistant-axis"),
               default=False,
               tiny={"n_roles": 4, "n_questions": 4, "max_new_tokens": 3, "scripts": ("coding", "emotional"),
                     "systems": 1, "turns": 3, "reply_tokens": 3, "drop_turn": 2, "organism_roles": 1,
                     "mcq_questions": 4, "n_null": 10, "n_shuffle": 19, "noise_items": 4},
               metrics=("axis_auc", "axis_auc_null_q95", "axis_auc_p", "cap_clean_identical", "cap_clean_shift",
                        "cap_fall", "cap_mcq_delta", "cap_organism_fall", "cap_reduction", "drift_clean",
                        "drift_clean_gap", "judge_assistant_like", "judge_cap_effect", "judge_noise_reward",
                        "mcq_accuracy", "monitor_layer", "organism_fall", "organism_fall_readout", "pc1_cos",
                        "pc1_cos_null_q95", "pc1_cos_p"),
               cost=548),
    # Needs a second model (``candidate``), so it is not in the default run. In the tiny test the
    # candidate is the tiny model itself: every shift must then be exactly zero.
    AuditEntry("release_comparison", "personascope.audits.release:ReleaseComparisonAudit", ("compare", "release"),
               default=False,
               tiny={"candidate": "{tiny_model_dir}", "traits": ("evil",), "n_questions": 2, "n_instructions": 1,
                     "n_prompts": 4, "max_new_tokens": 3, "judge_questions": 2, "refusal_requests": 3,
                     "bias_questions": 4, "n_boot": 50},
               metrics=("flag_auroc", "flag_dataset_score", "mcq_accuracy_base", "mcq_accuracy_delta",
                        "persona_gap", "refusal_rate_base", "refusal_rate_delta", "refusal_score_delta",
                        "shift", "shift_flagged", "shift_frac", "shift_layer", "shift_null_frac_q", "shift_null_p",
                        "shift_z", "trait_base", "trait_delta", "trait_noise_reward"),
               cost=150),
    # Audits the audits: runs the named audits on model organisms with planted defects of graded
    # strength and on clean controls (docs/validity.md). Not in the default run: it costs one audit
    # run per organism, strength and seed.
    AuditEntry("validity", "personascope.audits.validity:ValidityAudit", ("validate", "organisms"), default=False,
               tiny={"audits": ("ooc_drift",), "organisms": ("prompt",), "seeds": 1, "strengths": (1.0,),
                     "audit_params": {"ooc_drift": {"traits": ["extraversion"], "levels": ["high"],
                                                    "tasks": ["post"], "n_prompts": 1, "runs": 1,
                                                    "max_new_tokens": 4, "reply_tokens": 4, "turns": 3,
                                                    "conversation_runs": 1, "n_vector_questions": 2,
                                                    "noise_items": 2}}},
               metrics=("detection_rate", "false_alarm_rate", "blocking_false_alarm_rate", "inconclusive_rate", "mde",
                        "power"),
               samples=False,
               cost=3600),
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
