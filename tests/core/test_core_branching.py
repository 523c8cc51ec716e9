"""Entropy, likelihood gain Omega, Branching Score, branch-point selection, ARPO probability."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.core.branching import (
    arpo_branch_probability,
    branching_score,
    likelihood_gain,
    omega_noise_rows,
    select_branch_points,
    suffix_gain,
    token_entropy,
    topk_entropy,
)

HSET = settings(max_examples=40, deadline=None)

# ------------------------------------------------------------------------------------------ entropy


def test_token_entropy_by_hand():
    # uniform over 4 -> log 4; one-hot (others -inf) -> 0; [1000, 1000] -> log 2 without overflow
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, -math.inf, -math.inf, -math.inf], [1000, 1000, -1e4, -1e4]])
    assert token_entropy(logits).tolist() == pytest.approx([math.log(4), 0.0, math.log(2)], abs=1e-6)
    # p = [.5, .25, .25] from logits log p: H = .5 ln2 + 2 * .25 ln4 = 1.5 ln2 = 1.03972
    lp = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    assert float(token_entropy(lp)) == pytest.approx(1.5 * math.log(2), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_token_entropy_matches_loop_and_is_fp32(seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(2, 3, 11, generator=g) * 4).to(torch.bfloat16)
    h = token_entropy(logits)
    assert h.dtype == torch.float32 and h.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            row = [float(v) for v in logits[i, j].float()]
            mx = max(row)
            z = sum(math.exp(v - mx) for v in row)
            ref = -sum((math.exp(v - mx) / z) * (v - mx - math.log(z)) for v in row)
            assert float(h[i, j]) == pytest.approx(ref, abs=1e-5)


def test_topk_entropy_by_hand():
    lp = torch.log(torch.tensor([0.5, 0.25]))  # tail mass r = 0.25
    # lump: -(.5 ln .5 + .25 ln .25 + .25 ln .25) = .5 ln2 + .5 ln4 = 1.5 ln2 = 1.039721
    assert float(topk_entropy(lp)) == pytest.approx(1.5 * math.log(2), abs=1e-6)
    # renormalize: q = [2/3, 1/3] -> -(2/3 ln 2/3 + 1/3 ln 1/3) = 0.636514
    assert float(topk_entropy(lp, tail="renormalize")) == pytest.approx(0.636514, abs=1e-6)
    # drop: .5 ln2 + .25 ln4 = ln2 = 0.693147
    assert float(topk_entropy(lp, tail="drop")) == pytest.approx(math.log(2), abs=1e-6)
    # -inf padding entries change nothing
    padded = torch.cat([lp, torch.tensor([-math.inf])])
    assert float(topk_entropy(padded)) == pytest.approx(1.5 * math.log(2), abs=1e-6)


def test_topk_entropy_exact_when_k_covers_vocab_and_lower_bounds_otherwise():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 30, generator=g) * 2
    full = torch.log_softmax(logits, -1)
    exact = token_entropy(logits)
    for tail in ("lump", "renormalize", "drop"):
        assert topk_entropy(full, tail=tail).tolist() == pytest.approx(exact.tolist(), abs=1e-5)
    top = full.topk(5, dim=-1).values
    assert (topk_entropy(top, tail="lump") <= exact + 1e-6).all()
    assert (topk_entropy(top, tail="drop") <= topk_entropy(top, tail="lump") + 1e-6).all()


def test_topk_entropy_rejects_logits():
    with pytest.raises(ValueError, match="log-probs"):
        topk_entropy(torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="tail"):
        topk_entropy(torch.log(torch.tensor([0.5])), tail="nope")


# -------------------------------------------------------------------------------- likelihood gain


def loop_omega(cur, anc, m, gamma, eps, mode="valid"):
    T = len(cur)
    out = []
    for t in range(T):
        if not m[t]:
            out.append(1.0)
            continue
        s, d = 0.0, 0
        for k in range(t, T):
            if m[k]:
                s += gamma**d * (cur[k] - anc[k])
            if mode == "all" or m[k]:
                d += 1
        s = min(max(s, -20.0), 20.0)
        out.append(min(max(math.exp(s), 1 - eps), 1 + eps))
    return out


def test_likelihood_gain_by_hand():
    cur = torch.tensor([0.10, -0.05, 0.20])
    anc = torch.zeros(3)
    # gamma 1: S = [.25, .15, .20]; exp -> [1.284, 1.1618, 1.2214]; clip to [.8, 1.2] -> [1.2, 1.1618, 1.2]
    om = likelihood_gain(cur, anc, torch.ones(3))
    assert om.tolist() == pytest.approx([1.2, math.exp(0.15), 1.2], abs=1e-6)
    # mask [1, 0, 1], gamma .5, valid-only: S2 = .2, S0 = .1 + .5*.2 = .2 -> exp(.2) = 1.2214 -> 1.2;
    # with clip_eps .5: [exp(.2), 1.0 (invalid), exp(.2)]
    om = likelihood_gain(cur, anc, torch.tensor([1, 0, 1]), gamma=0.5, clip_eps=0.5)
    assert om.tolist() == pytest.approx([math.exp(0.2), 1.0, math.exp(0.2)], abs=1e-6)
    # discount over all positions: S0 = .1 + .25*.2 = .15
    om = likelihood_gain(cur, anc, torch.tensor([1, 0, 1]), gamma=0.5, clip_eps=0.5, discount_over="all")
    assert float(om[0]) == pytest.approx(math.exp(0.15), abs=1e-6)


def test_likelihood_gain_forms_by_hand():
    cur = torch.tensor([0.10, -0.05, 0.20])
    anc = torch.zeros(3)
    ones = torch.ones(3)
    # sum: S itself, unclipped
    assert likelihood_gain(cur, anc, ones, form="sum").tolist() == pytest.approx([0.25, 0.15, 0.20], abs=1e-6)
    assert suffix_gain(cur, anc, ones).tolist() == pytest.approx([0.25, 0.15, 0.20], abs=1e-7)
    # mean: S / remaining tokens = [.25/3, .15/2, .2/1] -> exp, then clip at 1.2 only the last (exp(.2) = 1.2214)
    om = likelihood_gain(cur, anc, ones, form="mean")
    assert om.tolist() == pytest.approx([math.exp(0.25 / 3), math.exp(0.075), 1.2], abs=1e-6)
    # mean with gamma .5 and a masked middle: W0 = 1 + .5 = 1.5, S0 = .1 + .5*.2 = .2 -> exp(.2/1.5)
    om = likelihood_gain(cur, anc, torch.tensor([1, 0, 1]), gamma=0.5, form="mean")
    assert om.tolist() == pytest.approx([math.exp(0.2 / 1.5), 1.0, 1.2], abs=1e-6)
    assert likelihood_gain(cur, anc, torch.tensor([1, 0, 1]), form="sum")[1] == 0.0  # invalid: no gain
    with pytest.raises(ValueError, match="form"):
        likelihood_gain(cur, anc, ones, form="log")


def test_omega_noise_rows_by_hand():
    m = torch.ones(2, 4)
    anc = torch.zeros(2, 4)
    cur = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.3, -0.1, 0.2, 0.0]])
    # no noise model: only the zero-variance test on S (row 0: S = 0)
    assert omega_noise_rows(cur, anc, m).tolist() == [True, False]
    # rollout anchor: delta IS the measured mismatch -> std(S) = std(S_noise) <= 2 std(S_noise)
    assert omega_noise_rows(cur, anc, m, logp_noise=cur - anc).tolist() == [True, True]
    # a real gain 10x the mismatch passes, a gain equal to 1.5x the mismatch does not (ratio 2)
    assert omega_noise_rows(cur, anc, m, logp_noise=(cur - anc) / 10).tolist() == [True, False]
    assert omega_noise_rows(cur, anc, m, logp_noise=(cur - anc) / 1.5).tolist() == [True, True]
    assert omega_noise_rows(cur, anc, m, logp_noise=(cur - anc) / 1.5, ratio=1.0).tolist() == [True, False]


def test_branching_score_omega_noise_falls_back_to_entropy():
    H = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    O = torch.tensor([[1.0, 1.1, 0.9, 1.05]])
    m = torch.ones(1, 4)
    fallback = branching_score(H, torch.ones(1, 4), m)
    noisy = branching_score(H, O, m, omega_noise=torch.tensor([True]))
    assert noisy.score.tolist() == fallback.score.tolist() and bool(noisy.omega_degenerate)
    assert noisy.z_omega.abs().max() == 0 and noisy.strict.tolist() == fallback.strict.tolist()
    assert branching_score(H, O, m, omega_noise=torch.tensor([False])).score.tolist() != fallback.score.tolist()
    with pytest.raises(ValueError, match="omega_noise"):
        branching_score(H, O, m, omega_noise=torch.tensor([True, False]))


def test_likelihood_gain_clamps_huge_exponents():
    cur = torch.tensor([100.0, -100.0])
    om = likelihood_gain(cur, torch.zeros(2), torch.ones(2), clip_eps=1e9)
    # S = [0, -100] -> clamp [0, -20] -> [1, exp(-20)] (no inf / nan)
    assert om.tolist() == pytest.approx([1.0, math.exp(-20)], rel=1e-5)
    om = likelihood_gain(torch.tensor([100.0]), torch.zeros(1), torch.ones(1), clip_eps=1e9)
    assert float(om[0]) == pytest.approx(math.exp(20), rel=1e-5)


def test_likelihood_gain_rejects_nan_at_valid_positions():
    cur = torch.tensor([0.0, float("nan")])
    assert likelihood_gain(cur, torch.zeros(2), torch.tensor([1, 0])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="NaN"):
        likelihood_gain(cur, torch.zeros(2), torch.ones(2))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("mode", ["valid", "all"])
def test_likelihood_gain_matches_loop(seed, gamma, mode):
    g = torch.Generator().manual_seed(seed)
    cur, anc = torch.randn(2, 3, 25, generator=g) * 0.05, torch.randn(2, 3, 25, generator=g) * 0.05
    m = (torch.rand(2, 3, 25, generator=g) < 0.6).long()
    om = likelihood_gain(cur, anc, m, gamma=gamma, discount_over=mode)
    for i in range(2):
        for j in range(3):
            ref = loop_omega(cur[i, j].tolist(), anc[i, j].tolist(), m[i, j].tolist(), gamma, 0.2, mode)
            assert om[i, j].tolist() == pytest.approx(ref, abs=1e-6)


# ------------------------------------------------------------------------------- branching score


def test_branching_score_by_hand():
    H = torch.tensor([1.0, 2.0, 3.0, 50.0])
    Om = torch.tensor([1.1, 1.0, 1.2, 0.8])
    m = torch.tensor([1, 1, 1, 0])
    bs = branching_score(H, Om, m)
    # Z(H) over [1,2,3] = [-1.2247, 0, 1.2247]; Omega [1.1, 1.0, 1.2]: mean 1.1, pop std .08165
    # -> Z(O) = [0, -1.2247, 1.2247]; BS = [0, 0, 1.5], invalid -inf; strict: only t=2
    assert bs.score.tolist()[:3] == pytest.approx([0.0, 0.0, 1.5], abs=1e-5)
    assert bs.score[3] == -math.inf
    assert bs.strict.tolist() == [False, False, True, False]
    assert not bs.omega_degenerate and not bs.entropy_degenerate


def test_branching_score_degenerate_factors():
    H = torch.tensor([1.0, 2.0, 3.0])
    flat = torch.ones(3)
    # Omega constant (first step): BS = Z(H) = [-1.2247, 0, 1.2247]; strict = Z(H) > 0
    bs = branching_score(H, flat, torch.ones(3))
    assert bool(bs.omega_degenerate)
    assert bs.score.tolist() == pytest.approx([-1.224745, 0.0, 1.224745], abs=1e-5)
    assert bs.strict.tolist() == [False, False, True]
    # entropy constant: BS = Z(Omega)
    bs = branching_score(flat * 2, torch.tensor([0.9, 1.0, 1.1]), torch.ones(3))
    assert bool(bs.entropy_degenerate)
    assert bs.score.tolist() == pytest.approx([-1.224745, 0.0, 1.224745], abs=1e-5)
    # both constant (or a single valid token): BS = 0, no strict candidate
    bs = branching_score(flat, flat, torch.tensor([1, 1, 0]))
    assert bs.score.tolist() == [0.0, 0.0, -math.inf]
    assert not bs.strict.any()


def loop_bs(H, O, m, tol=1e-6):
    def z(x):
        v = [x[t] for t in range(len(x)) if m[t]]
        if not v:
            return [0.0] * len(x), True
        mu = sum(v) / len(v)
        sd = math.sqrt(sum((a - mu) ** 2 for a in v) / len(v))
        if sd <= tol:
            return [0.0] * len(x), True
        return [(x[t] - mu) / sd if m[t] else 0.0 for t in range(len(x))], False

    zh, dh = z(H)
    zo, do = z(O)
    out = []
    for t in range(len(H)):
        if not m[t]:
            out.append(-math.inf)
        elif dh and do:
            out.append(0.0)
        else:
            out.append((1.0 if dh else zh[t]) * (1.0 if do else zo[t]))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_branching_score_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    N, T = 4, 30
    H = torch.rand(N, T, generator=g) * 3
    Om = likelihood_gain(torch.randn(N, T, generator=g) * 0.02, torch.zeros(N, T), torch.ones(N, T))
    m = (torch.rand(N, T, generator=g) < 0.7).long()
    m[3] = 0  # a fully masked rollout
    bs = branching_score(H, Om, m)
    for i in range(N):
        ref = loop_bs(H[i].tolist(), Om[i].tolist(), m[i].tolist())
        assert bs.score[i].tolist() == pytest.approx(ref, abs=1e-4)
    assert (bs.score[3] == -math.inf).all() and not bs.strict[3].any()


# ------------------------------------------------------------------------------------- selection


def test_select_by_hand_strict_then_fill_then_cycle():
    scores = torch.tensor([[0.5, 2.0, -1.0], [3.0, 0.5, 9.0]])
    masks = torch.tensor([[1, 1, 1], [1, 1, 0]])  # (1, 2) is invalid despite its score 9
    strict = torch.tensor([[0, 1, 0], [1, 0, 0]])
    # strict by score: (1,0)=3.0, (0,1)=2.0; fill: (0,0)=.5 and (1,1)=.5 tie -> lower rollout first,
    # then (0,2)=-1.0; then repeat the chosen order from the start
    assert select_branch_points(scores, masks, 2, strict) == [(1, 0), (0, 1)]
    assert select_branch_points(scores, masks, 4, strict) == [(1, 0), (0, 1), (0, 0), (1, 1)]
    assert select_branch_points(scores, masks, 7, strict) == [
        (1, 0), (0, 1), (0, 0), (1, 1), (0, 2), (1, 0), (0, 1)
    ]
    # a strict candidate ranks above a higher-scoring non-strict one
    strict2 = torch.tensor([[0, 0, 1], [0, 0, 0]])
    assert select_branch_points(scores, masks, 2, strict2) == [(0, 2), (1, 0)]


def test_select_ties_break_by_rollout_then_position():
    scores = torch.zeros(3, 3)
    assert select_branch_points(scores, torch.ones(3, 3), 4) == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_select_accepts_ragged_lists_like_padded():
    s = [torch.tensor([0.1, 0.9]), torch.tensor([0.5, 0.2, 0.7, 0.3]), torch.tensor([])]
    m = [torch.ones(2), torch.tensor([1, 1, 0, 1]), torch.ones(0)]
    pad_s = torch.tensor([[0.1, 0.9, 0, 0], [0.5, 0.2, 0.7, 0.3], [0, 0, 0, 0]])
    pad_m = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]])
    # ranking: (0,1)=.9, (1,0)=.5, (1,3)=.3, (1,1)=.2, (0,0)=.1 ; (1,2) invalid
    expect = [(0, 1), (1, 0), (1, 3), (1, 1), (0, 0), (0, 1)]
    assert select_branch_points(s, m, 6) == expect
    assert select_branch_points(pad_s, pad_m, 6) == expect
    assert select_branch_points(torch.tensor([0.3, 0.4]), torch.ones(2), 1) == [(0, 1)]


def test_select_empty_cases_and_errors():
    assert select_branch_points(torch.ones(2, 3), torch.zeros(2, 3), 4) == []
    assert select_branch_points(torch.ones(2, 3), torch.ones(2, 3), 0) == []
    assert select_branch_points([], [], 3) == []
    with pytest.raises(ValueError, match="k="):
        select_branch_points(torch.ones(2, 3), torch.ones(2, 3), -1)
    with pytest.raises(ValueError, match="NaN"):
        select_branch_points(torch.tensor([float("nan")]), torch.ones(1), 1)
    with pytest.raises(ValueError, match="same length"):
        select_branch_points([torch.ones(2)], [torch.ones(3)], 1)


@st.composite
def rollouts(draw):
    n = draw(st.integers(1, 5))
    rows_s, rows_m, rows_st = [], [], []
    for _ in range(n):
        T = draw(st.integers(0, 8))
        s = draw(st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]), min_size=T, max_size=T))
        m = draw(st.lists(st.sampled_from([0, 1]), min_size=T, max_size=T))
        if draw(st.booleans()):
            m = [0] * T  # a fully masked rollout
        stt = draw(st.lists(st.sampled_from([0, 1]), min_size=T, max_size=T))
        rows_s.append(torch.tensor(s, dtype=torch.float32))
        rows_m.append(torch.tensor(m, dtype=torch.float32))
        rows_st.append(torch.tensor(stt, dtype=torch.float32))
    k = draw(st.integers(0, 12))
    return rows_s, rows_m, rows_st, k


def loop_select(rows_s, rows_m, rows_st, k):
    cands = [
        (float(s[t]), i, t, bool(st_[t]))
        for i, (s, m, st_) in enumerate(zip(rows_s, rows_m, rows_st))
        for t in range(len(s))
        if m[t]
    ]
    key = lambda c: (-c[0], c[1], c[2])  # noqa: E731
    strict = sorted([c for c in cands if c[3]], key=key)
    rest = sorted([c for c in cands if not c[3]], key=key)
    chosen = [(c[1], c[2]) for c in strict + rest][:k]
    if not chosen:
        return []
    return [chosen[j % len(chosen)] for j in range(k)]


@HSET
@given(rollouts())
def test_select_properties(data):
    rows_s, rows_m, rows_st, k = data
    pts = select_branch_points(rows_s, rows_m, k, rows_st)
    any_valid = any(bool(m.sum() > 0) for m in rows_m)
    # exactly k points when any valid position exists, else none
    assert len(pts) == (k if any_valid else 0)
    for i, t in pts:
        assert rows_m[i][t] == 1  # invalid positions / fully masked rollouts never selected
    assert pts == select_branch_points(rows_s, rows_m, k, rows_st)  # deterministic
    assert pts == loop_select(rows_s, rows_m, rows_st, k)


@HSET
@given(st.integers(0, 2**31 - 1))
def test_select_on_branching_scores_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    H = torch.rand(3, 12, generator=g)
    Om = torch.rand(3, 12, generator=g) * 0.4 + 0.8
    m = (torch.rand(3, 12, generator=g) < 0.5).long()
    bs = branching_score(H, Om, m)
    pts = select_branch_points(bs.score, m, 8, bs.strict)
    assert pts == loop_select(list(bs.score), list(m), list(bs.strict.long()), 8)


# -------------------------------------------------------------------------------------------- ARPO


def test_arpo_branch_probability():
    # .5 + .2*1 = .7 ; .5 + .2*5 = 1.5 -> 1 ; .5 - .2*3 = -.1 -> 0
    assert arpo_branch_probability(1.0) == pytest.approx(0.7)
    assert arpo_branch_probability(5.0) == 1.0
    assert arpo_branch_probability(-3.0) == 0.0
    assert isinstance(arpo_branch_probability(0.0), float)
    t = arpo_branch_probability(torch.tensor([1.0, 5.0, -3.0]), tau=0.5, beta=0.2)
    assert t.tolist() == pytest.approx([0.7, 1.0, 0.0])
    with pytest.raises(ValueError):
        arpo_branch_probability(float("nan"))
