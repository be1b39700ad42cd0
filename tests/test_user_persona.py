"""User-persona refusal scoring: phrase openers without bare Yes/No, disjoint splits, the random-direction null."""

import numpy as np
import pytest
import torch

from personascope.errors import DataError, UsageError
from personascope.stats import empirical_p, rng
from personascope.steering import user_persona as up
from personascope.steering.sweep import mean_residual_norm
from personascope.steering.vector import PersonaVector


def _readout(model) -> torch.Tensor:
    """Unembedding rows times the final-norm weight: what a last-layer push does to each token's logit."""
    w = model.hf_model.get_output_embeddings().weight.detach().float()
    return w * model.hf_model.model.norm.weight.detach().float()


def planted_refusal_direction(model) -> torch.Tensor:
    """A last-layer direction that raises every refusal-only phrase token and lowers every compliance-only one."""
    op = up.opener_set(model.tokenizer)
    ref = {t for p in op.refusal for t in p}
    com = {t for p in op.compliance for t in p}
    g = _readout(model)
    return g[sorted(ref - com)].mean(0) - g[sorted(com - ref)].mean(0)


def _prompts(model, n: int) -> list[str]:
    return [model.format_chat(user=h) for h in up.refusal_prompts()[0][:n]]


# ---------------------------------------------------------------------------------------------- the score
def test_opener_set_keeps_bare_yes_no_out_and_counts_no_phrase_twice(embedded_tokenizer):
    op = up.opener_set(embedded_tokenizer)
    starts = {p[0] for p in (*op.refusal, *op.compliance)}
    assert op.yes not in starts and op.no not in starts
    assert not {op.yes, op.no} & {t for p in (*op.refusal, *op.compliance) for t in p}
    # Three passes per prompt: the answer start, after "I", after "I'm".
    assert op.contexts == [(), tuple(embedded_tokenizer.encode("I", add_special_tokens=False)),
                           tuple(embedded_tokenizer.encode("I'm", add_special_tokens=False))]
    with pytest.raises(DataError, match="Yes/No"):
        up.opener_set(embedded_tokenizer, refusal=("No", *up.REFUSAL_PHRASES))
    with pytest.raises(DataError, match="Yes/No"):
        up.opener_set(embedded_tokenizer, compliance=("Yes, here it is", *up.COMPLIANCE_PHRASES))
    with pytest.raises(DataError, match="prefix"):
        up.opener_set(embedded_tokenizer, refusal=("I", *up.REFUSAL_PHRASES))


def test_opener_scores_equal_whole_phrase_log_probabilities(tiny_nn):
    prompts = _prompts(tiny_nn, 3)
    got = up.opener_scores(tiny_nn, prompts)

    def mass(phrases):
        per = np.stack([tiny_nn.logprobs(prompts, [ph] * len(prompts)) for ph in phrases])
        return np.logaddexp.reduce(per, axis=0)

    np.testing.assert_allclose(got.refusal, mass(up.REFUSAL_PHRASES) - mass(up.COMPLIANCE_PHRASES), atol=2e-4)
    op = up.opener_set(tiny_nn.tokenizer)
    lp = tiny_nn.next_token_logprobs(prompts).double().numpy()
    np.testing.assert_allclose(got.yes_no, lp[:, op.yes] - lp[:, op.no], atol=1e-5)
    np.testing.assert_array_equal(up.refusal_score(tiny_nn, prompts), got.refusal)


def test_a_pure_yes_no_push_moves_the_yes_no_margin_but_not_the_refusal_score(tiny_nn):
    # Planted: a last-layer push that raises "Yes" over "No" and is orthogonal to the read-out of every
    # phrase token. The old opener score (with "No" among refusals, "Yes" among compliance) moved with
    # such a push; the new one must not, and the Yes/No margin must show it.
    op = up.opener_set(tiny_nn.tokenizer)
    g = _readout(tiny_nn)
    basis = torch.linalg.qr(g[sorted({t for p in (*op.refusal, *op.compliance) for t in p})].T).Q
    u = g[op.yes] - g[op.no]
    u = u - basis @ (basis.T @ u)
    last = tiny_nn.n_layers - 1
    harmful = up.refusal_prompts()[0][:4]
    vec = PersonaVector("yes", {k: u for k in range(tiny_nn.n_layers)})
    shift = up.measure_refusal_shift(tiny_nn, {"yes": vec}, vec, layer=last, coeff=0.5, harmful=harmful)
    yn, yn_lo, _ = shift.yes_no["yes"]
    assert yn_lo > 0.2  # recovered: the margin moved
    assert abs(shift.measured["yes"][0]) < 0.05 * yn  # the refusal score did not
    # The old first-token score would have moved with it.
    old_ref = [op.refusal[4][0], op.refusal[5][0], op.no]  # "Sorry", "Unfortunately", "No"
    old_com = [op.compliance[0][0], op.compliance[1][0], op.yes]  # "Sure", "Here", "Yes"
    prompts = _prompts(tiny_nn, 4)

    def old_score() -> float:
        lp = tiny_nn.next_token_logprobs(prompts).double()
        return float((torch.logsumexp(lp[:, old_ref], -1) - torch.logsumexp(lp[:, old_com], -1)).mean())

    from personascope.steering.sweep import relative_steer

    before = old_score()
    norm = mean_residual_norm(tiny_nn, prompts, [last])[last]
    with tiny_nn.steer(relative_steer(vec, last, 0.5, norm)):
        after = old_score()
    assert after - before < -0.3 * yn


# ---------------------------------------------------------------------------------------------- splits
def test_request_splits_are_disjoint_seeded_and_keep_evaluation_out_of_the_fit():
    pool = up.refusal_prompts()[0]
    a = up.split_requests(pool, 10, 24, rng(0, "request_split"))
    assert len(a.selection) == 10 and len(a.evaluation) == 24
    assert not set(a.selection) & set(a.evaluation)
    assert set(a.fit) == set(pool) - set(a.evaluation) and set(a.selection) <= set(a.fit)
    assert a == up.split_requests(pool, 10, 24, rng(0, "request_split"))  # same seed, same split
    b = up.split_requests(pool, 10, 24, rng(1, "request_split"))
    assert b.evaluation != a.evaluation and a.hashes() != b.hashes()
    assert len(set(a.hashes().values())) == 3
    with pytest.raises(UsageError, match="40"):
        up.split_requests(pool, 20, 21, rng(0))


# ---------------------------------------------------------------------------------------------- the null
def test_planted_direction_beats_every_random_direction(tiny_nn):
    last = tiny_nn.n_layers - 1
    harmful = up.refusal_prompts()[0][:3]
    planted = PersonaVector("planted", {last: planted_refusal_direction(tiny_nn)})
    randoms = up.random_directions(tiny_nn.d_model, last, 20, rng(0, "null"))
    sh = up.measure_refusal_shift(tiny_nn, {"planted": planted, **randoms}, planted, layer=last, coeff=0.5,
                                  harmful=harmful)
    null = np.array([sh.measured[n][0] for n in randoms])
    assert sh.measured["planted"][1] > 0  # recovered: its CI is above 0
    assert empirical_p(sh.measured["planted"][0], null, two_sided=False) == pytest.approx(1 / 21)
    # and its negation is at the other end: a direction toward compliance does not pass as refusal
    neg = up.measure_refusal_shift(tiny_nn, {"minus": -planted}, planted, layer=last, coeff=0.5, harmful=harmful)
    assert empirical_p(neg.measured["minus"][0], null, two_sided=False) == pytest.approx(1.0)


def test_a_random_persona_is_not_extreme_against_the_null_over_repeated_seeds(tiny_nn):
    # Null: a persona that is a random direction (through the persona path: vector minus control)
    # read against K random directions (through the null path). Exchangeable, so its empirical p
    # is uniform on {1/8, ..., 1}; a mismatch between the paths (scale, layer, prompts) would pile
    # the p-values up at 1/8.
    last, k = tiny_nn.n_layers - 1, 7
    harmful = up.refusal_prompts()[0][:1]  # one request keeps it fast; exchangeability does not need more
    ps = []
    for seed in range(8):
        g = rng(seed, "null-test")
        ctrl = up.random_directions(tiny_nn.d_model, last, 1, g, prefix="control")["control0"]
        personas = up.random_directions(tiny_nn.d_model, last, 3, g, prefix="persona")
        nulls = up.random_directions(tiny_nn.d_model, last, k, g)
        per = up.measure_refusal_shift(tiny_nn, {n: v + ctrl for n, v in personas.items()}, ctrl, layer=last,
                                       coeff=0.5, control=ctrl, harmful=harmful)
        nul = up.measure_refusal_shift(tiny_nn, nulls, ctrl, layer=last, coeff=0.5, harmful=harmful)
        vals = np.array([nul.measured[n][0] for n in nulls])
        ps += [empirical_p(per.measured[n][0], vals) for n in personas]
    ps = np.array(ps)
    assert 0.35 <= ps.mean() <= 0.8  # uniform on the grid: mean 0.5625
    assert (ps <= 1 / (k + 1) + 1e-9).mean() <= 0.3  # the most extreme value: expected share 1/8
    grid = np.arange(1, k + 2) / (k + 1)
    ecdf = np.array([(ps <= q + 1e-9).mean() for q in grid])
    assert np.abs(ecdf - grid).max() <= 0.3  # Kolmogorov distance to the discrete uniform
