"""PersonaVector value semantics, files (safetensors, llama.cpp GGUF), steering, extraction."""

import numpy as np
import pytest
import torch
from conftest import fake_activation_set

from personascope.errors import DataError, UsageError
from personascope.sites import Position
from personascope.steering.extract import mean_diff, pca_diff, probe_direction, project
from personascope.steering.vector import PersonaVector


def _vec(d=64, layers=(1, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    return PersonaVector("evil", {k: torch.randn(d, generator=g) for k in layers}, method="test", meta={"x": 1})


def test_value_semantics():
    v = _vec()
    assert torch.allclose((2 * v)[1], 2 * v[1]) and torch.allclose((-v)[2], -v[2])
    assert torch.allclose((v + v - v)[1], v[1])
    assert torch.allclose(v.unit()[1].norm(), torch.tensor(1.0))
    assert v.at(2).layers == [2]
    with pytest.raises(UsageError, match="No direction at layer 7"):
        v[7]
    with pytest.raises(UsageError, match="width"):
        v + _vec(d=32)


def test_save_load_round_trip_exact(tmp_path, tiny_nn):
    v = PersonaVector("evil", _vec().directions, model=tiny_nn.info, method="mean_diff", meta={"pairs": 5})
    v.save(tmp_path / "evil")
    w = PersonaVector.load(tmp_path / "evil.safetensors")
    assert w.layers == v.layers and all(torch.equal(v[k], w[k]) for k in v.layers)
    assert w.model == tiny_nn.info and w.meta == {"pairs": 5} and w.method == "mean_diff"
    (tmp_path / "evil.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="Cannot read persona vector"):
        PersonaVector.load(tmp_path / "evil")


def test_gguf_control_vector_round_trip(tmp_path):
    import gguf

    v = _vec(layers=(3, 5))
    path = v.to_gguf(tmp_path / "evil.gguf")
    reader = gguf.GGUFReader(str(path))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    assert sorted(t.name for t in reader.tensors) == ["direction.3", "direction.5"]
    w = PersonaVector.from_gguf(path)
    assert all(torch.equal(v[k], w[k]) for k in (3, 5))
    with pytest.raises(UsageError, match="layer 0"):
        _vec(layers=(0, 1)).to_gguf(tmp_path / "bad.gguf")
    with pytest.raises(DataError):
        PersonaVector.from_gguf(tmp_path / "missing.gguf")


def test_check_model_refuses_wrong_width_and_fingerprint(tiny_nn):
    with pytest.raises(UsageError, match="d_model 64"):
        _vec(d=32).check_model(tiny_nn)
    with pytest.raises(UsageError, match="do not exist"):
        _vec(layers=(9,)).check_model(tiny_nn)
    other = tiny_nn.info.model_copy(update={"fingerprint": "f" * 64})
    v = PersonaVector("x", _vec().directions, model=other)
    with pytest.raises(UsageError, match="force=True"):
        v.check_model(tiny_nn)
    v.check_model(tiny_nn, force=True)


@pytest.mark.parametrize("fixture", ["tiny_nn", "tiny_tl"])
def test_apply_patches_only_target_site_and_restores(fixture, request):
    model = request.getfixturevalue(fixture)
    prompts = [model.format_chat(user="hello there"), "plain text"]
    sites = model.sites("all")
    before_params = {k: t.clone() for k, t in model.hf_model.state_dict().items()}
    base = model.activations(prompts, sites, "all", progress=False)[Position.ALL].acts
    v = PersonaVector("x", {2: torch.randn(model.d_model)}, model=model.info)
    with v.apply(model, coeff=3.0):
        steered = model.activations(prompts, sites, "all", progress=False)[Position.ALL].acts
    after = model.activations(prompts, sites, "all", progress=False)[Position.ALL].acts
    assert torch.equal(base, after)  # restored exactly
    assert all(torch.equal(t, before_params[k]) for k, t in model.hf_model.state_dict().items())
    # Layers before the patched one are untouched; the patched layer moves by exactly 3v.
    assert torch.equal(steered[:, :2], base[:, :2])
    delta = steered[:, 2] - base[:, 2]
    assert torch.allclose(delta, (3.0 * v[2]).expand_as(delta), atol=1e-4)


def _planted_pair(n=60, d=48, layers=4, seed=0):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    base = rng.normal(size=(n, layers, d))
    # Pair noise is shared (same question under both system prompts); only layer 2 gets the signal.
    pos, neg = base + rng.normal(scale=0.1, size=base.shape), base + rng.normal(scale=0.1, size=base.shape)
    # Strength varies per pair: PCA of centred differences sees the direction through that variance.
    strength = rng.uniform(0, 6, size=n)
    pos[:, 2] += strength[:, None] * direction
    return fake_activation_set(pos, ["pos"] * n), fake_activation_set(neg, ["neg"] * n), direction


@pytest.mark.parametrize("method", [mean_diff, pca_diff, probe_direction])
def test_planted_direction_is_recovered(method):
    pos, neg, direction = _planted_pair()
    v = method(pos, neg, name="planted")
    got = v[2].double().numpy()
    cos = float(got @ direction / np.linalg.norm(got))
    assert cos > 0.99, cos
    assert v.model is not None and v.meta["n_pos"] == 60
    # Monitoring: positive rows project higher than negative ones along the found direction.
    assert project(pos, v, 2).mean() > project(neg, v, 2).mean() + 1.0


def test_paired_method_needs_pairs():
    pos, neg, _ = _planted_pair()
    short = fake_activation_set(neg.acts.numpy()[:10], ["neg"] * 10)
    with pytest.raises(UsageError, match="as many positive as negative"):
        pca_diff(pos, short)


def test_builtin_traits_load():
    from personascope.steering.traits import builtin_traits, load_trait

    names = builtin_traits()
    assert {"evil", "sycophantic", "hallucinating", "impolite", "optimistic", "humorous"} <= set(names)
    for n in names:
        spec = load_trait(n)
        assert len(spec.instructions) >= 5 and len(spec.extraction_questions) >= 20
        assert "{question}" in spec.rubric and "{answer}" in spec.rubric
    with pytest.raises(DataError, match="built-in"):
        load_trait("grumpy")


def test_extraction_pipeline_on_tiny_model(tiny_nn):
    from personascope.judges import SimilarityJudge
    from personascope.steering.traits import extract_persona_vector

    ex = extract_persona_vector(tiny_nn, "evil", n_questions=2, n_instructions=2, max_new_tokens=4,
                                progress=False)
    assert ex.total == 4 and not ex.filtered and "no judge" in ex.note
    v = ex.vector
    assert v.layers == list(range(tiny_nn.n_layers)) and v.d_model == tiny_nn.d_model
    assert v.method == "mean_diff:response_mean" and v.meta["pairs_kept"] == ex.kept
    assert set(ex.vectors) == {"response_mean", "prompt_mean", "last"}
    # A judge whose ratings are all invalid (the random tiny model puts no mass on digits) is an
    # error naming the fix, never a silent switch to unfiltered pairs.
    from personascope.judges import LogProbJudge

    with pytest.raises(DataError, match="no valid trait rating"):
        extract_persona_vector(tiny_nn, "evil", judge=LogProbJudge(tiny_nn, min_valid_mass=0.999),
                               n_questions=1, n_instructions=2, max_new_tokens=4, progress=False)
    # A judge that rates some pairs and not others: the unrated pairs are dropped and counted.
    from scripted_judges import ScriptedJudge

    # Called for the positive answers, then the negative ones: 90 vs 10; every 4th unrated.
    half_blind = ScriptedJudge(lambda call, k, item: (90.0 if call % 2 else 10.0) if k % 4 else None, "half-blind")
    ex3 = extract_persona_vector(tiny_nn, "evil", judge=half_blind, n_questions=2, n_instructions=2,
                                 max_new_tokens=4, trait_threshold=50, min_fluency=-1e9, progress=False)
    assert ex3.filtered and "1 pair(s) dropped: invalid trait rating" in ex3.note
    assert ex3.total == 4 and ex3.kept <= 3
    # A usable judge that rejects every pair is a clear error naming the fix.
    with pytest.raises(DataError, match="lower the thresholds"):
        extract_persona_vector(tiny_nn, "evil", judge=SimilarityJudge(), n_questions=1, n_instructions=2,
                               max_new_tokens=4, progress=False)


@pytest.mark.slow
def test_embedded_vector_monitors_held_out_system_prompts(smol_nn):
    """A vector from 10 pairs ranks held-out positive-prompt activations above negative ones."""
    from personascope.steering.traits import extract_persona_vector, load_trait
    from personascope.store import collect

    spec = load_trait("evil")
    ex = extract_persona_vector(smol_nn, spec, n_questions=5, n_instructions=2, max_new_tokens=24,
                                progress=False)
    layer = int(smol_nn.n_layers * 2 / 3)
    v = ex.vectors["last"]
    qs = list(spec.evaluation_questions[:6])
    pos_i, neg_i = spec.instructions[4]  # an instruction pair not used for extraction
    sets = [collect(smol_nn, [smol_nn.format_chat(user=q, system=s) for q in qs], smol_nn.sites([layer]),
                    ["last"], progress=False)[Position.LAST] for s in (pos_i, neg_i)]
    p, n = project(sets[0], v, layer), project(sets[1], v, layer)
    assert (p > n).mean() >= 5 / 6, (p, n)


def test_monitor_and_flag_follow_a_planted_response_direction(tiny_nn):
    """Flagging ranks samples by how far their responses move activations along the vector."""
    from personascope.steering.monitor import flag_dataset, monitor

    prompts = [tiny_nn.format_chat(user=f"Question {i}?") for i in range(6)]
    layer = 2
    # The direction between two kinds of responses is the vector; flagged samples with the
    # "positive" kind of response must outrank those with the "negative" kind.
    pos_resp, neg_resp = ["You are wonderful and brilliant!"] * 6, ["The meeting is at noon."] * 6
    from personascope.store import collect

    a = collect(tiny_nn, prompts, tiny_nn.sites([layer]), ["response_mean"], responses=pos_resp,
                progress=False)[Position.RESPONSE_MEAN]
    b = collect(tiny_nn, prompts, tiny_nn.sites([layer]), ["response_mean"], responses=neg_resp,
                progress=False)[Position.RESPONSE_MEAN]
    v = mean_diff(a, b, name="flattery")
    mixed = [pos_resp[0] if i % 2 == 0 else neg_resp[0] for i in range(6)]
    res = flag_dataset(tiny_nn, prompts, mixed, v, layer, max_new_tokens=3)
    top3 = {i for i, _ in res.top(3)}
    assert top3 == {0, 2, 4}
    assert res.scores[[0, 2, 4]].min() > res.scores[[1, 3, 5]].max()
    scores = monitor(tiny_nn, prompts, v, layer, responses=mixed)
    assert set(scores) == {"last", "response_mean"} and scores["last"].shape == (6,)
    assert scores["response_mean"][[0, 2, 4]].min() > scores["response_mean"][[1, 3, 5]].max()


def test_user_persona_data_and_caa_vectors(tiny_nn):
    from personascope.steering.user_persona import (
        builtin_user_personas,
        load_user_persona,
        predict_refusal_shift,
        refusal_direction,
        refusal_prompts,
        user_persona_vector,
    )

    names = builtin_user_personas()
    assert {"altruistic", "selfish", "law-abiding", "unlawful", "curious", "close-minded",
            "power-seeking", "coffee"} <= set(names)
    assert all(len(load_user_persona(n).questions) >= 40 for n in names)
    harmful, harmless = refusal_prompts()
    assert len(harmful) == len(harmless) >= 40
    with pytest.raises(DataError, match="built-in"):
        load_user_persona("martian")

    v = user_persona_vector(tiny_nn, "altruistic", n_questions=4)
    r = refusal_direction(tiny_nn, harmful[:4], harmless[:4])
    assert v.layers == r.layers == list(range(tiny_nn.n_layers))
    assert v.method == "caa:answer_token" and v.meta["persona"] == "altruistic"
    cos = predict_refusal_shift(v, r)
    assert set(cos) == set(v.layers) and all(-1.0 <= c <= 1.0 for c in cos.values())
    # Geometry is exact: the vector's cosine with itself is 1, with its negation -1.
    assert predict_refusal_shift(r, r)[1] == pytest.approx(1.0, abs=1e-6)
    assert predict_refusal_shift(-r, r)[1] == pytest.approx(-1.0, abs=1e-6)
