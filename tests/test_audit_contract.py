"""One contract over every registered audit: parameters as data, a complete, versioned, JSON-able result."""

import dataclasses
import json
import math

import pytest

from personascope.audits import REGISTRY, get_audit
from personascope.audits.base import Audit
from personascope.catalog import BY_NAME, CATALOG
from personascope.errors import UsageError
from personascope.reports import render_audit_fragment
from personascope.results import AuditResult

# Smallest sizes that exercise every code path of each audit on the tiny random model (the catalog's table).
TINY: dict[str, dict] = {e.name: dict(e.tiny) for e in CATALOG}


def test_every_registered_audit_has_tiny_params():
    assert set(REGISTRY) == {e.name for e in CATALOG} and all(TINY.values())
    assert all(e.metrics and len(set(e.metrics)) == len(e.metrics) for e in CATALOG), "declare each audit's metrics"
    for e in CATALOG:
        assert set(e.tiny) <= set(get_audit(e.name).fields()), e.name


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_audit_is_declared_as_data(name):
    cls = get_audit(name)
    assert issubclass(cls, Audit) and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert cls.name == name and cls.title and cls.kind in ("risk", "interpretability", "validity")
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
    # The gate checks policies against the catalog's declared metric names: they must cover the output.
    undeclared = {m.name for m in res.metrics} - set(BY_NAME[name].metrics)
    assert not undeclared, f"add {sorted(undeclared)} to the catalog row's metrics"
    for f in res.findings:
        assert f.metric is None or f.metric in keys, f"finding points at unknown metric {f.metric}"
    # Per-sample records: every audit that scores model text records each item; examples link to them.
    ids = [s.id for s in res.samples]
    if BY_NAME[name].samples:
        assert res.samples and res.n_samples == len(res.samples), "record every scored item (result.add_sample)"
        assert len(ids) == len(set(ids)), "sample ids must be unique within the audit"
        assert all(s.audit == name and (s.prompt or s.output) for s in res.samples)
        assert all(s.judge for s in res.samples), "say who scored each sample"
    else:
        assert not res.samples
    linked = [x.sample for x in res.examples if x.sample is not None]
    assert set(linked) <= set(ids), f"examples link to unknown samples {sorted(set(linked) - set(ids))[:3]}"
    text = res.to_json()
    assert '"samples":' not in text  # the records go to samples/<audit>.jsonl, not into the result
    assert AuditResult.from_dict(json.loads(text)).to_json() == text
    html = render_audit_fragment(res)
    assert name in html or res.title in html
