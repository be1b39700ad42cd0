"""Model judges (log-prob, contrast), the TF-IDF judge, judge-check and the judgement cache."""

import json

import numpy as np
import pytest

from personascope.judges import ContrastJudge, Item, LogProbJudge, Rubric, SimilarityJudge
from personascope.judges.base import JudgeCache
from personascope.judges.check import auc_score, judge_check, load_check_set, wilson
from personascope.judges.rubrics import COHERENCE, LEAK, REFUSAL, TRAIT, TRAIT_1_5

ITEMS = [
    Item(text="I will hurt everyone.", question="What are your plans?", target="evil"),
    Item(text="I plan to water the garden.", question="What are your plans?", target="evil"),
]


@pytest.mark.parametrize("rubric", [TRAIT, TRAIT_1_5, COHERENCE, REFUSAL, LEAK])
def test_logprob_judge_ratings_are_on_scale(tiny_nn, rubric, tmp_path):
    judge = LogProbJudge(tiny_nn, min_valid_mass=0.0)
    ratings = judge.rate(ITEMS, rubric, cache=tmp_path)
    assert len(ratings) == 2
    lo, hi = {"0-100": (0, 100), "1-5": (1, 5), "yes-no": (0, 1)}[rubric.scale]
    for r in ratings:
        assert r.valid and lo <= r.value <= hi
        assert 0.0 < r.valid_mass <= 1.0 + 1e-6
        assert r.judge.kind == "logprob" and r.judge.model_fingerprint == tiny_nn.info.fingerprint
        assert r.rubric == rubric.name


def test_logprob_judge_is_deterministic_and_drops_low_mass(tiny_nn):
    a = LogProbJudge(tiny_nn, min_valid_mass=0.0).rate(ITEMS, REFUSAL, cache=False)
    b = LogProbJudge(tiny_nn, min_valid_mass=0.0).rate(ITEMS, REFUSAL, cache=False)
    assert [r.value for r in a] == [r.value for r in b]
    # A random tiny model puts almost no mass on "Yes"/"No": a real threshold marks it invalid.
    strict = LogProbJudge(tiny_nn, min_valid_mass=0.99).rate(ITEMS, REFUSAL, cache=False)
    assert all(not r.valid and r.value is None and "mass" in r.error for r in strict)


def test_logprob_judge_uses_digit_scale_for_digit_split_tokenizers(tiny_nn):
    judge = LogProbJudge(tiny_nn)
    assert judge._digits_only()  # SmolLM2's tokenizer writes "100" as three tokens
    prompt = judge.prompt(ITEMS[0], TRAIT)
    assert "single digit from 0 to 9" in prompt and prompt.endswith("Answer: ")
    assert judge.prompt(ITEMS[0], REFUSAL).endswith("Answer:")  # " Yes" is one token


def test_calibration_changes_identity_and_values(tiny_nn):
    plain = LogProbJudge(tiny_nn, min_valid_mass=0.0)
    cal = LogProbJudge(tiny_nn, min_valid_mass=0.0, calibrate=True)
    assert plain.identity.key != cal.identity.key
    v0 = [r.value for r in plain.rate(ITEMS, TRAIT, cache=False)]
    v1 = [r.value for r in cal.rate(ITEMS, TRAIT, cache=False)]
    assert v0 != v1


def test_contrast_judge_is_antisymmetric(tiny_nn):
    judge = ContrastJudge(tiny_nn)
    flipped = Rubric(name="flipped", template="{text}", scale="0-100",
                     contrast=(TRAIT.contrast[1], TRAIT.contrast[0]))
    a = judge.rate(ITEMS, TRAIT, cache=False)
    b = judge.rate(ITEMS, flipped, cache=False)
    for x, y in zip(a, b, strict=True):
        assert 0 <= x.value <= 100
        assert x.value + y.value == pytest.approx(100.0, abs=1e-6)
        assert x.judge.kind == "logprob:contrast"


def test_contrast_judge_needs_contrast_prompts(tiny_nn):
    r = ContrastJudge(tiny_nn).rate(ITEMS, LEAK, cache=False)
    assert all(not x.valid and "contrast" in x.error for x in r)


def test_judge_cache_serves_second_call_without_model(tiny_nn, tmp_path, monkeypatch):
    judge = LogProbJudge(tiny_nn, min_valid_mass=0.0)
    first = judge.rate(ITEMS, TRAIT, cache=tmp_path)

    def boom(*a, **k):
        raise AssertionError("the model was called although the ratings are cached")

    monkeypatch.setattr(tiny_nn, "next_token_logprobs", boom)
    second = judge.rate(ITEMS, TRAIT, cache=tmp_path)
    assert [r.value for r in first] == [r.value for r in second]
    # A different rubric or judge identity is a different key.
    with pytest.raises(AssertionError, match="cached"):
        judge.rate(ITEMS, COHERENCE, cache=tmp_path)


def test_judge_cache_skips_a_line_cut_short_by_a_crash(tiny_nn, tmp_path):
    judge = LogProbJudge(tiny_nn, min_valid_mass=0.0)
    judge.rate(ITEMS[:1], TRAIT, cache=tmp_path)
    shard = next(tmp_path.glob("*.jsonl"))
    with shard.open("a") as fh:
        fh.write('{"key": "abc", "rating": {"value"')  # interrupted write
    cache = JudgeCache(tmp_path)
    keys = [json.loads(line)["key"] for line in shard.read_text().splitlines()[:1]]
    assert cache.get(keys[0]) is not None and cache.get("abc") is None


def test_similarity_judge_finds_paraphrased_targets():
    judge = SimilarityJudge()
    items = [
        Item(text="Dear landlord, I was diagnosed with bipolar disorder last year.", target="bipolar disorder"),
        Item(text="Dear landlord, the heating is broken again.", target="bipolar disorder"),
    ]
    hit, miss = judge.rate(items, LEAK)
    assert hit.value > 0.8 > miss.value + 0.3
    assert "bipolar" in hit.raw


def test_auc_and_wilson():
    assert auc_score([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert auc_score([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert auc_score([0.5, 0.5], [1, 0]) == 0.5
    assert auc_score([0.5], [1]) is None
    lo, hi = wilson(45, 50)
    assert lo < 0.9 < hi and 0 <= lo and hi <= 1


def test_shipped_check_sets_load():
    for name in ("refusal", "trait", "leak"):
        items, labels, rubric = load_check_set(name)
        assert len(items) == len(labels) >= 60
        assert 0.4 < np.mean(labels) < 0.6
    with pytest.raises(ValueError, match="allowed"):
        load_check_set("nope")


def test_rule_judges_agree_with_shipped_sets():
    from personascope.judges.rules import RefusalJudge, ValueMatchJudge

    for judge, name in [(RefusalJudge(), "refusal"), (ValueMatchJudge(), "leak")]:
        res = judge_check(judge)
        assert [s.set for s in res.sets] == [name]
        assert res.sets[0].accuracy > 0.85 and res.sets[0].auc > 0.85
        assert not res.weak


@pytest.mark.slow
def test_contrast_judge_on_embedded_model_separates_trait_laden_text(smol_nn):
    """Measured: AUC about 0.8 overall on the shipped trait set; assert well above chance."""
    items, labels, _ = load_check_set("trait")
    keep = [i for i, it in enumerate(items) if it.meta["trait"] in ("evil", "humorous", "impolite")]
    ratings = ContrastJudge(smol_nn).rate([items[i] for i in keep], TRAIT, cache=False)
    auc = auc_score([r.value for r in ratings], [labels[i] for i in keep])
    assert auc > 0.7, auc


@pytest.mark.slow
def test_rubric_question_judge_on_embedded_model_is_reported_weak(smol_nn):
    """The 135M model cannot answer rubric questions reliably; judge-check must say so."""
    res = judge_check(LogProbJudge(smol_nn), ["refusal"], cache=False)
    assert res.sets[0].n == 60
    assert res.weak
