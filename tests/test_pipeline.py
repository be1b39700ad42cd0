"""The shared audit pipeline: judge factory, judge records, the caching adapter, the audit template."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import numpy as np
import pytest
import torch

from personascope.audits.base import Audit, AuditContext
from personascope.cache import CachingAdapter
from personascope.errors import UsageError
from personascope.judges.factory import JudgeSpec, make_judge
from personascope.records import JudgeIdentity
from personascope.results import AuditResult, JudgeRecord, Metric
from personascope.stats import derive_seed


# ------------------------------------------------------------------ judges from one factory
def test_make_judge_builds_each_kind_and_none(tiny_nn):
    from personascope.judges.contrast import ContrastJudge
    from personascope.judges.logprob import LogProbJudge

    assert make_judge("none", tiny_nn) is None
    default = make_judge(None, tiny_nn)
    assert isinstance(default, ContrastJudge) and default.temperature == 0.25
    assert isinstance(make_judge("logprob", tiny_nn), LogProbJudge)
    warm = make_judge(JudgeSpec(kind="contrast", temperature=1.0), tiny_nn)
    assert warm.identity != default.identity  # a different judge is a different identity (and cache key)
    with pytest.raises(UsageError, match="allowed: contrast, logprob, http, none"):
        make_judge("gpt", tiny_nn)
    with pytest.raises(UsageError, match="needs a base URL and a model name"):
        make_judge(JudgeSpec(kind="http"), tiny_nn)


def test_contrast_log_ratios_recover_the_ratings(tiny_nn):
    from personascope.judges.rubrics import TRAIT

    judge = make_judge(None, tiny_nn)
    items = ["I love meeting new people at parties.", "I prefer a quiet evening alone."]
    d = judge.log_ratios(items, TRAIT)
    rated = judge.rate(items, TRAIT)
    assert [judge.value_of(x, "0-100") for x in d] == pytest.approx([r.value for r in rated], abs=1e-6)


def test_judge_record_reads_the_old_dict_shapes():
    ident = {"kind": "logprob:contrast", "name": "m", "model_fingerprint": "ab", "prompt_hash": "cd", "version": "1"}
    assert JudgeRecord.model_validate(ident).identity == JudgeIdentity(**ident)
    drift = JudgeRecord.model_validate({"identity": ident, "default": True, "calibration": {"x": 1}})
    assert drift.identity.kind == "logprob:contrast" and drift.details == {"default": True, "calibration": {"x": 1}}
    bias = JudgeRecord.model_validate({"choice": {"kind": "rules:choice"}})
    assert bias.identity is None and bias.kind == "none" and "choice" in bias.details
    res = AuditResult.from_dict({"audit": "x", "judge": ident})
    assert AuditResult.from_dict(json.loads(res.to_json())).judge == res.judge


# ------------------------------------------------------------------ the caching adapter
def test_caching_adapter_answers_repeats_from_disk(tiny_nn, tmp_path):
    prompts = [tiny_nn.format_chat(user=f"Name a colour {k}.") + "Answer:" for k in range(5)]
    opts = [[" red", " dark blue"], [" no"], [" yes", " maybe", " x"], [" a"], [" b", " c"]]
    first = CachingAdapter(tiny_nn, root=tmp_path, chunk_size=2)
    lp = first.logprobs(prompts, [" red"] * 5, reduce="mean")
    ol = first.option_logprobs(prompts, opts)
    ids = [[tiny_nn.tokenizer.eos_token_id, 5], [7], [1, 2, 3], [9], [11]]
    nt = first.next_token_scores(prompts, ids)
    assert first.misses == {"logprobs": 5, "option_logprobs": 5, "next_token_scores": 5} and not first.hits
    np.testing.assert_allclose(lp, tiny_nn.logprobs(prompts, [" red"] * 5, reduce="mean"))
    full = tiny_nn.next_token_logprobs(prompts)
    for i, row in enumerate(nt):
        np.testing.assert_allclose(row, full[i, ids[i]].double().numpy())
    again = CachingAdapter(tiny_nn, root=tmp_path, chunk_size=2)
    np.testing.assert_array_equal(again.logprobs(prompts, [" red"] * 5, reduce="mean"), lp)
    for a, b in zip(again.option_logprobs(prompts, opts), ol, strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.hits == {"logprobs": 5, "option_logprobs": 5} and not again.misses
    # A different reduction, or steering, is a different call: never answered from the plain entries.
    again.logprobs(prompts, [" red"] * 5, reduce="sum")
    v = torch.ones(tiny_nn.d_model)
    with again.steer(v, layer=1, coeff=2.0) as steered:
        assert steered is again  # calls inside the block stay cached
        s = again.logprobs(prompts, [" red"] * 5, reduce="mean")
    assert again.misses == {"logprobs": 10} and not np.allclose(s, lp)
    assert CachingAdapter.wrap(again) is again and again.n_layers == tiny_nn.n_layers


def test_store_generate_goes_through_the_caching_adapter(tiny_nn, tmp_path):
    from personascope.store import generate

    prompts = [tiny_nn.format_chat(user="Say hi.")]
    a = generate(tiny_nn, prompts, 4, cache=tmp_path / "g", progress=False)
    assert list((tmp_path / "g").glob("*.json")) and generate(tiny_nn, prompts, 4, cache=tmp_path / "g") == a
    assert generate(tiny_nn, prompts, 4, cache=False, progress=False) == a


# ------------------------------------------------------------------ the audit template
@dataclasses.dataclass(frozen=True)
class _Probe(Audit):
    name: ClassVar[str] = "probe_template"
    title: ClassVar[str] = "template probe"
    judge_use: ClassVar[str] = "nothing in particular"
    calls: ClassVar[list[str]] = []

    def execute(self, ctx: AuditContext) -> None:
        self.calls.append("execute")
        with ctx.step("draw"):
            ctx.result.metrics.append(Metric(name="draw", value=float(ctx.rng("a").random())))
        assert isinstance(ctx.model, CachingAdapter)
        ctx.result.notes.append(f"judge={ctx.judge!r}")

    def controls(self, ctx: AuditContext) -> None:
        self.calls.append("controls")
        ctx.result.metrics.append(Metric(name="null", value=float(ctx.rng("null").random())))


def test_template_runs_execute_then_controls_and_stamps_once(tiny_nn):
    _Probe.calls.clear()
    np.random.seed(5)
    torch.manual_seed(5)
    expected = (np.random.random(), torch.rand(1))
    np.random.seed(5)
    torch.manual_seed(5)
    res = _Probe(seed=3).run(tiny_nn, judge=None, progress=False)
    assert (np.random.random(), torch.rand(1)) == expected  # the user's global RNGs are untouched
    assert _Probe.calls == ["execute", "controls"]
    assert res.finished and set(res.timings) == {"draw", "controls", "total"}
    assert res.timings["total"] >= res.timings["draw"]
    assert res.judge == JudgeRecord() and res.notes == ["judge=None"]
    draw, null = res.metric("draw").value, res.metric("null").value
    assert draw != null  # named keys give independent streams ...
    assert _Probe(seed=3).run(tiny_nn, judge=None, progress=False).metric("draw").value == draw  # ... reproducibly
    assert _Probe(seed=4).run(tiny_nn, judge=None, progress=False).metric("draw").value != draw


def test_template_default_judge_comes_from_the_factory(tiny_nn):
    res = _Probe().run(tiny_nn, progress=False)
    assert res.judge.identity == make_judge(None, tiny_nn).identity and res.judge.uses == ["nothing in particular"]
    with pytest.raises(UsageError, match="judge must be"):
        _Probe().run(tiny_nn, judge="contrast", progress=False)  # type: ignore[arg-type]


def test_derive_seed_is_stable_and_key_sensitive():
    assert derive_seed(0, "conv", 3) == derive_seed(0, "conv", 3)
    assert len({derive_seed(0, "conv", 3), derive_seed(0, "conv", 4), derive_seed(1, "conv", 3),
                derive_seed(0, "tasks")}) == 4
    # Pinned: the same on every platform and Python version (no hash() of str).
    assert derive_seed(0, "a") == int.from_bytes(__import__("hashlib").sha256(b'[0,"a"]').digest()[:8], "big") >> 1




def test_auroc_matches_sklearn_and_the_pairwise_definition():
    from sklearn.metrics import roc_auc_score

    from personascope.stats import auc, auroc

    g = np.random.default_rng(0)
    s = np.round(g.normal(size=60), 1)  # rounded: many ties
    y = g.random(60) < 0.4
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert auc(pos, neg) == pytest.approx(pairwise)
    assert np.isnan(auroc([1.0, 2.0], [True, True])) and auc([1, 1], [1, 1]) == 0.5


def test_empirical_p_is_uniform_under_the_null_and_floors_on_a_planted_effect():
    from personascope.stats import empirical_p

    g = np.random.default_rng(1)
    k = 19
    # Plant nothing: the effect is one more draw from the null, so p is uniform on {1/20, ..., 1}.
    ps = [empirical_p(g.normal(), g.normal(size=k)) for _ in range(2000)]
    assert abs(np.mean(ps) - 0.525) < 0.03 and abs(np.mean(np.array(ps) <= 0.05) - 0.05) < 0.02
    # Plant an effect far outside the null: p is the smallest possible, 1 / (K + 1).
    assert empirical_p(10.0, g.normal(size=k)) == pytest.approx(1 / 20)
    assert empirical_p(-10.0, g.normal(size=k), two_sided=False) == 1.0  # one-sided: a drop is no rise
    assert np.isnan(empirical_p(1.0, []))
