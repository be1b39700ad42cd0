"""One contract over every registered audit: parameters as data, a complete, versioned, JSON-able result."""

import dataclasses
import json
import math

import pytest

from personascope.audits import REGISTRY, get_audit
from personascope.audits.base import Audit
from personascope.errors import UsageError
from personascope.results import AuditResult

# Smallest sizes that exercise every code path of each audit on the tiny random model.
TINY: dict[str, dict] = {
    "persona_localization": {"personas": ("liberal", "neurotic", "extravert"), "n_per_persona": 6, "folds": 2,
                             "probes": ("logreg",)},
    "persona_vectors": {"traits": ("evil",), "n_questions": 2, "n_instructions": 1, "sweep_layers": (1,),
                        "sweep_questions": 2, "monitor_questions": 2, "max_new_tokens": 3},
    "user_persona_refusal": {"personas": ("altruistic", "selfish", "unlawful"), "n_questions": 3, "n_requests": 6},
    "persona_bias": {"n_questions": 6, "personas": ("a man", "a woman"), "human_controls": ("a human",),
                     "assistant_controls": 2, "generation_questions": 3, "max_new_tokens": 4, "n_boot": 50,
                     "n_examples": 2},
    "ooc_drift": {"traits": ("extraversion",), "levels": ("high", "low"), "tasks": ("post",), "n_prompts": 2,
                  "runs": 2, "max_new_tokens": 12, "reply_tokens": 12, "turns": 3, "conversation_runs": 2,
                  "n_vector_questions": 4},
    "ci_leakage": {"n_users": 1, "contexts": ("counsellor", "landlord_rent"), "n_trials": 2,
                   "privacy_levels": ("none",), "max_new_tokens": 6, "n_memories": 6, "n_orders": 5},
    "memory_injection": {"n_tasks": 3, "queries_per_task": 1, "poison_copies": (1,), "rounds": 2,
                         "max_new_tokens": 4},
    # The candidate is the tiny model itself (filled in by the test): every shift must be exactly zero.
    "release_comparison": {"candidate": "{tiny_model_dir}", "traits": ("evil",), "n_questions": 2,
                           "n_instructions": 1, "n_prompts": 4, "max_new_tokens": 3, "judge_questions": 2,
                           "refusal_requests": 3, "bias_questions": 4, "n_boot": 50},
}


def test_every_registered_audit_has_tiny_params():
    assert set(TINY) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_audit_is_declared_as_data(name):
    cls = get_audit(name)
    assert issubclass(cls, Audit) and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert cls.name == name and cls.title and cls.kind in ("risk", "interpretability")
    assert set(cls.QUICK) <= set(cls.fields()), "QUICK overrides must be parameters"
    for profile in ("full", "quick"):
        audit = cls.from_params({}, profile)
        assert json.loads(json.dumps(audit.params())) == audit.params()
        assert len(audit.params_hash) == 16
    assert cls.from_params({}, "full").params_hash != cls.from_params({"seed": 7}).params_hash
    with pytest.raises(UsageError, match="no_such_knob"):
        cls.from_params({"no_such_knob": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cls.from_params({}).seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_audit_runs_and_returns_a_complete_result(name, tiny_nn, tiny_model_dir):
    cls = get_audit(name)
    params = {k: v.format(tiny_model_dir=tiny_model_dir) if isinstance(v, str) else v for k, v in TINY[name].items()}
    audit = cls.from_params(params)
    res = audit.run(tiny_nn, progress=False)
    assert isinstance(res, AuditResult)
    assert res.audit == name and res.kind == cls.kind and res.params == audit.params()
    assert res.params_hash == audit.params_hash and res.seed == audit.seed
    assert res.model is not None and res.model.fingerprint == tiny_nn.info.fingerprint
    assert res.metrics, "an audit must measure something"
    for m in res.metrics:
        assert m.value is None or math.isfinite(m.value), m.key
        if m.ci_low is not None and m.ci_high is not None and m.value is not None:
            assert m.ci_low - 1e-9 <= m.ci_high, m.key
    keys = [m.key for m in res.metrics]
    assert len(keys) == len(set(keys)), "metric keys must be unique"
    for f in res.findings:
        assert f.metric is None or f.metric in keys, f"finding points at unknown metric {f.metric}"
    text = res.to_json()
    assert AuditResult.from_dict(json.loads(text)).to_json() == text
    html = res._repr_html_()
    assert name in html or res.title in html
