"""Advantage estimators: registry, GRPO, ARPO, APPO dual-group (+ proximity scaling), Tree-GRPO."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.core.advantages import ADVANTAGE_ESTIMATORS, get_advantage_estimator, register_advantage, tree_roots
from appo.types import AdvantageInputs

NAN = float("nan")


def test_registry():
    assert {"grpo", "appo", "arpo", "tree_grpo"} <= set(ADVANTAGE_ESTIMATORS)
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda inputs: None)
    with pytest.raises(ValueError, match="valid names.*grpo"):
        get_advantage_estimator("nope")


def test_unknown_option_raises():
    inp = AdvantageInputs(torch.ones(2), torch.zeros(2, dtype=torch.long), torch.ones(2, 3))
    with pytest.raises(TypeError):
        get_advantage_estimator("grpo")(inp, norm_by_sdt=False)


# ---------------------------------------------------------------------------------------------- GRPO


def test_grpo_by_hand():
    R = torch.tensor([1.0, 2.0, 3.0, 5.0])
    g = torch.tensor([0, 0, 0, 1])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.float32)
    adv, met = get_advantage_estimator("grpo")(AdvantageInputs(R, g, mask))
    # group 0: mean 2, population std sqrt(2/3) = .81650 -> [-1.22474, 0, 1.22474]; group 1 alone -> 0
    z = 1 / math.sqrt(2 / 3)
    expect = [[-z, -z, 0], [0, 0, 0], [z, z, z], [0, 0, 0]]
    assert adv.tolist() == [pytest.approx(r, abs=1e-5) for r in expect]
    assert met["advantages/max"] == pytest.approx(z, abs=1e-5)
    adv, _ = get_advantage_estimator("grpo")(AdvantageInputs(R, g, mask), norm_by_std=False)
    assert adv[:, 0].tolist() == pytest.approx([-1, 0, 1, 0])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.floats(-5, 5, allow_nan=False)), min_size=1, max_size=20),
    st.booleans(),
)
def test_grpo_sums_to_zero_per_group(rows, norm):
    g = torch.tensor([r[0] for r in rows])
    R = torch.tensor([r[1] for r in rows])
    adv, _ = get_advantage_estimator("grpo")(AdvantageInputs(R, g, torch.ones(len(rows), 2)), norm_by_std=norm)
    for gid in set(g.tolist()):
        assert float(adv[g == gid, 0].sum()) == pytest.approx(0.0, abs=1e-4)


def test_arpo_is_grpo_over_all_rows():
    R = torch.tensor([1.0, 0.0, 1.0, 1.0])
    g = torch.zeros(4, dtype=torch.long)
    inp = AdvantageInputs(
        R, g, torch.ones(4, 3), is_branch_N=torch.tensor([False, False, True, True]),
        parent_N=torch.tensor([-1, -1, 0, 1]), split_N=torch.tensor([-1, -1, 0, 1]),
    )
    a_arpo, _ = get_advantage_estimator("arpo")(inp)
    a_grpo, _ = get_advantage_estimator("grpo")(AdvantageInputs(R, g, torch.ones(4, 3)))
    assert torch.equal(a_arpo, a_grpo)


# ---------------------------------------------------------------------------------------------- APPO


def appo_hand_inputs():
    # prompt 0: initial rows 0, 1 (R = 1, 0); branches 2 (of 0 at split 1, R 1, BS 1) and 3 (of 0 at
    # split 3, R 0, BS 2). Prompt 1: initial rows 4, 5 (R = 2, 2), no branches. T = 5.
    return AdvantageInputs(
        rewards_N=torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0]),
        group_N=torch.tensor([0, 0, 0, 0, 1, 1]),
        mask_NT=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0] * 5, [1] * 5, [1] * 5]).float(),
        is_branch_N=torch.tensor([False, False, True, True, False, False]),
        parent_N=torch.tensor([-1, -1, 0, 0, -1, -1]),
        split_N=torch.tensor([-1, -1, 1, 3, -1, -1]),
        branch_score_N=torch.tensor([NAN, NAN, 1.0, 2.0, NAN, NAN]),
    )


def test_appo_dual_group_by_hand():
    adv, met = get_advantage_estimator("appo")(appo_hand_inputs())
    e = 1e-5
    # A_init over rows 0, 1: [1, -1]; A_branch over rows 2, 3: [1, -1] (each /(1 + 1e-6)).
    # Row 0: t <= 1 both branches active: 1 + mean(1, -1) = 1; t = 2, 3 only branch 3: 1 + (-1) = 0;
    #        t = 4 after every split: 1.
    assert adv[0].tolist() == pytest.approx([1, 1, 0, 0, 1], abs=e)
    assert adv[1].tolist() == pytest.approx([-1, -1, -1, 0, 0], abs=e)  # no branches; mask zeros
    assert adv[2].tolist() == pytest.approx([0, 0, 1, 1, 1], abs=e)  # branch rows: own A_branch
    assert adv[3].tolist() == [0.0] * 5  # fully masked
    assert adv[4:].abs().max() == 0  # equal rewards -> 0
    assert met["appo/branch_rows"] == 2 and met["appo/initial_rows"] == 4


def test_appo_prefix_mean_by_hand():
    adv, _ = get_advantage_estimator("appo")(appo_hand_inputs(), prefix_combine="mean")
    # row 0: t <= 1: (1 + mean(1, -1)) / 2 = .5; t = 2, 3: (1 + (-1)) / 2 = 0; t = 4 (after every split): 1
    assert adv[0].tolist() == pytest.approx([0.5, 0.5, 0, 0, 1], abs=1e-5)
    assert adv[1].tolist() == pytest.approx([-1, -1, -1, 0, 0], abs=1e-5)  # no children: unchanged
    assert adv[2].tolist() == pytest.approx([0, 0, 1, 1, 1], abs=1e-5)  # branch rows: unchanged
    with pytest.raises(ValueError, match="prefix_combine"):
        get_advantage_estimator("appo")(appo_hand_inputs(), prefix_combine="max")


def test_appo_prefix_mean_keeps_prefix_scale_of_suffix():
    # a parent with R = 1 whose 3 redraw-free branches all score 1 too (A_branch = +1 each after z-scoring
    # against a 0-reward branch elsewhere): sum gives 2x on the prefix, mean gives 1x
    inp = AdvantageInputs(
        rewards_N=torch.tensor([1.0, 0.0, 1.0, 0.0]),
        group_N=torch.zeros(4, dtype=torch.long),
        mask_NT=torch.ones(4, 4),
        parent_N=torch.tensor([-1, -1, 0, 1]),
        split_N=torch.tensor([-1, -1, 1, 1]),
    )
    s, _ = get_advantage_estimator("appo")(inp)
    m, _ = get_advantage_estimator("appo")(inp, prefix_combine="mean")
    assert s[0].tolist() == pytest.approx([2, 2, 1, 1], abs=1e-5)
    assert m[0].tolist() == pytest.approx([1, 1, 1, 1], abs=1e-5)


def test_appo_redraw_contrast_by_hand():
    # prompt 0: initial rows 0 (R 1), 1 (R 0). Redraw forks of row 0 at token d = split + 1 = 2: rows 2 (R 0)
    # and 3 (R 1); of row 1 at d = 1: row 4 (R 1). The prompt's rewards [1, 0, 0, 1, 1]: std sqrt(.24) = .4899.
    inp = AdvantageInputs(
        rewards_N=torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0]),
        group_N=torch.zeros(5, dtype=torch.long),
        mask_NT=torch.ones(5, 4),
        parent_N=torch.tensor([-1, -1, 0, 0, 1]),
        split_N=torch.tensor([-1, -1, 1, 1, 0]),
    )
    base, _ = get_advantage_estimator("appo")(inp)
    adv, _ = get_advantage_estimator("appo")(inp, redraw_contrast=True)
    sd = math.sqrt(0.24)
    # row 0's token 2: (R_0 - mean(R_2, R_3)) / sd = (1 - .5) / .4899 = 1.0206; other tokens unchanged
    delta = (adv - base).tolist()
    assert delta[0] == pytest.approx([0, 0, 0.5 / sd, 0], abs=1e-5)
    # row 1's token 1: (0 - 1) / sd = -2.0412
    assert delta[1] == pytest.approx([0, -1 / sd, 0, 0], abs=1e-5)
    assert delta[2:] == [[0.0] * 4] * 3  # branch rows: unchanged
    adv_raw, _ = get_advantage_estimator("appo")(inp, redraw_contrast=True, norm_by_std=False)
    base_raw, _ = get_advantage_estimator("appo")(inp, norm_by_std=False)
    assert float(adv_raw[0, 2] - base_raw[0, 2]) == pytest.approx(0.5, abs=1e-6)


def test_appo_redraw_contrast_stays_bounded_when_every_branch_scores_the_same():
    # issue 24: initial rows [1, 0, 1, 0], each re-drawn once at its token 2, every re-draw scores 0. The branch
    # rows' std is 0, so the old divisor (std_branch + eps) made the parents' contrast 1 / 1e-6 = 1e6; the
    # prompt's std over all 8 rows, sqrt(.25 - .0625) = .4330, gives (1 - 0) / .4330 = 2.3094.
    inp = AdvantageInputs(
        rewards_N=torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        group_N=torch.zeros(8, dtype=torch.long),
        mask_NT=torch.ones(8, 4),
        parent_N=torch.tensor([-1, -1, -1, -1, 0, 1, 2, 3]),
        split_N=torch.tensor([-1, -1, -1, -1, 1, 1, 1, 1]),
    )
    delta = get_advantage_estimator("appo")(inp, redraw_contrast=True)[0] - get_advantage_estimator("appo")(inp)[0]
    sd = math.sqrt(0.25 - 0.0625)
    assert delta[0].tolist() == pytest.approx([0, 0, 1 / sd, 0], abs=1e-5)  # the right choice, its re-draw failed
    assert delta[1].abs().max() == 0  # parent and re-draw both failed: no contrast
    assert delta.abs().max() == pytest.approx(1 / sd, abs=1e-5)


def test_appo_redraw_contrast_needs_two_branch_rows():
    inp = AdvantageInputs(
        rewards_N=torch.tensor([1.0, 0.0, 0.0]),
        group_N=torch.zeros(3, dtype=torch.long),
        mask_NT=torch.ones(3, 3),
        parent_N=torch.tensor([-1, -1, 0]),
        split_N=torch.tensor([-1, -1, 0]),
    )
    a, _ = get_advantage_estimator("appo")(inp, redraw_contrast=True)
    b, _ = get_advantage_estimator("appo")(inp)
    assert torch.equal(a, b)


def test_appo_proximity_scaling_by_hand():
    adv, met = get_advantage_estimator("appo")(appo_hand_inputs(), proximity_scaling=True)
    # max BS over prompt 0's branches = 2 -> rho = [.5, 1]. Row 0:
    # t=0: M = 1 + mean(.5 * .9^(1-0), 1 * .9^(3-0)) = 1 + (.45 + .729)/2 = 1.5895; A = 1 * 1.5895
    # t=1: M = 1 + mean(.5, .9^2=.81) = 1.655;  t=2,3: A = 0 (times anything);  t=4: M = 1 -> 1
    assert adv[0].tolist() == pytest.approx([1.5895, 1.655, 0, 0, 1], abs=1e-5)
    assert adv[1].tolist() == pytest.approx([-1, -1, -1, 0, 0], abs=1e-5)  # no children: M = 1
    # decay .5: t=0: 1 + (.5*.5 + 1*.125)/2 = 1.1875
    adv, _ = get_advantage_estimator("appo")(appo_hand_inputs(), proximity_scaling=True, decay=0.5)
    assert float(adv[0, 0]) == pytest.approx(1.1875, abs=1e-5)


def test_appo_proximity_nonpositive_max_means_no_scaling():
    inp = appo_hand_inputs()
    neg = AdvantageInputs(**{**inp.__dict__, "branch_score_N": torch.tensor([NAN, NAN, -1.0, -2.0, NAN, NAN])})
    a0, _ = get_advantage_estimator("appo")(inp)
    a1, _ = get_advantage_estimator("appo")(neg, proximity_scaling=True)
    assert torch.allclose(a0, a1)
    with pytest.raises(ValueError, match="branch_score_N"):
        get_advantage_estimator("appo")(
            AdvantageInputs(**{**inp.__dict__, "branch_score_N": None}), proximity_scaling=True
        )


def test_appo_without_branches_is_grpo():
    R, g = torch.tensor([1.0, 3.0, 0.0, 2.0]), torch.tensor([0, 0, 1, 1])
    a, _ = get_advantage_estimator("appo")(AdvantageInputs(R, g, torch.ones(4, 3)))
    b, _ = get_advantage_estimator("grpo")(AdvantageInputs(R, g, torch.ones(4, 3)))
    assert torch.allclose(a, b)


def test_appo_depth2_credits_direct_parent_only():
    # 0, 1 initial (R 1, 0); 2 branch of 0 at 2 (R 1); 3 branch of 2 at 3 (R 0).
    inp = AdvantageInputs(
        rewards_N=torch.tensor([1.0, 0.0, 1.0, 0.0]), group_N=torch.zeros(4, dtype=torch.long),
        mask_NT=torch.ones(4, 5), parent_N=torch.tensor([-1, -1, 0, 2]), split_N=torch.tensor([-1, -1, 2, 3]),
    )
    adv, _ = get_advantage_estimator("appo")(inp)
    # A_init [1, -1]; A_branch over rows 2, 3: [1, -1].
    # row 0: t<=2 -> 1 + 1 = 2, else 1.  row 2: t<=3 -> 1 + (-1) = 0, t=4 -> 1.  row 3: -1.
    assert adv[0].tolist() == pytest.approx([2, 2, 2, 1, 1], abs=1e-5)
    assert adv[2].tolist() == pytest.approx([0, 0, 0, 0, 1], abs=1e-5)
    assert adv[3].tolist() == pytest.approx([-1] * 5, abs=1e-5)


def test_appo_rejects_inconsistent_trees():
    base = dict(rewards_N=torch.zeros(3), group_N=torch.tensor([0, 0, 1]), mask_NT=torch.ones(3, 2))
    est = get_advantage_estimator("appo")
    with pytest.raises(ValueError, match="parent_N"):
        est(AdvantageInputs(**base, is_branch_N=torch.tensor([False, True, False])))
    with pytest.raises(ValueError, match="another prompt"):
        est(AdvantageInputs(**base, parent_N=torch.tensor([-1, -1, 0]), split_N=torch.tensor([-1, -1, 0])))
    with pytest.raises(ValueError, match="is_branch_N"):
        est(AdvantageInputs(**base, is_branch_N=torch.tensor([False, False, False]),
                            parent_N=torch.tensor([-1, 0, -1]), split_N=torch.tensor([-1, 0, -1])))
    with pytest.raises(ValueError, match="split_N"):
        est(AdvantageInputs(**base, parent_N=torch.tensor([-1, 0, -1]), split_N=torch.tensor([-1, -1, -1])))
    with pytest.raises(ValueError, match="rewards_N"):
        est(AdvantageInputs(torch.tensor([NAN]), torch.zeros(1, dtype=torch.long), torch.ones(1, 2)))


def loop_z(vals: list[float], eps: float = 1e-6) -> list[float]:
    mu = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
    return [(v - mu) / (sd + eps) for v in vals]


def loop_appo(R, grp, mask, parent, split, bs, proximity, decay):
    """Straight loop reference of docs/algorithm.md 6.2/6.5 (direct-parent rule, rho = clamp(BS/maxBS, 0, 1))."""
    N, T = len(R), len(mask[0])
    own = [0.0] * N
    for gid in set(grp):
        for kind in (False, True):
            rows = [i for i in range(N) if grp[i] == gid and (parent[i] >= 0) == kind]
            if rows:
                for i, a in zip(rows, loop_z([R[i] for i in rows])):
                    own[i] = a
    maxbs = {}
    for b in range(N):
        if parent[b] >= 0 and math.isfinite(bs[b]):
            maxbs[grp[b]] = max(maxbs.get(grp[b], -math.inf), bs[b])
    out = [[0.0] * T for _ in range(N)]
    for r in range(N):
        kids = [c for c in range(N) if parent[c] == r]
        for t in range(T):
            if not mask[r][t]:
                continue
            act = [c for c in kids if t <= split[c]]
            a = own[r] + (sum(own[c] for c in act) / len(act) if act else 0.0)
            if proximity and act:
                terms = []
                for c in act:
                    mx = maxbs.get(grp[c], -math.inf)
                    rho = min(max(bs[c] / mx, 0.0), 1.0) if (mx > 0 and math.isfinite(bs[c])) else 0.0
                    terms.append(1 + rho * decay ** (split[c] - t))
                a *= sum(terms) / len(terms)
            out[r][t] = a
    return out


def random_forest(rng: random.Random, T: int):
    R, grp, parent, split, bs = [], [], [], [], []
    for gid in range(rng.randint(1, 3)):
        n_init = rng.randint(1, 4)
        start = len(R)
        for _ in range(n_init):
            R.append(float(rng.choice([0, 0.5, 1, -1])))
            grp.append(gid)
            parent.append(-1)
            split.append(-1)
            bs.append(NAN)
        for _ in range(rng.randint(0, 5)):
            p = rng.randrange(start, len(R))  # any earlier row of the prompt: depth may exceed 1
            R.append(float(rng.choice([0, 0.5, 1, -1])))
            grp.append(gid)
            parent.append(p)
            split.append(rng.randrange(0, T + 2))
            bs.append(rng.choice([rng.uniform(-1, 3), NAN]))
    mask = [[1 if rng.random() < 0.8 else 0 for _ in range(T)] for _ in R]
    return R, grp, mask, parent, split, bs


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("proximity", [False, True])
def test_appo_matches_loop(seed, proximity):
    rng = random.Random(seed)
    T = 9
    R, grp, mask, parent, split, bs = random_forest(rng, T)
    inp = AdvantageInputs(
        rewards_N=torch.tensor(R), group_N=torch.tensor(grp), mask_NT=torch.tensor(mask, dtype=torch.float32),
        parent_N=torch.tensor(parent), split_N=torch.tensor(split), branch_score_N=torch.tensor(bs),
    )
    adv, _ = get_advantage_estimator("appo")(inp, proximity_scaling=proximity, decay=0.8)
    ref = loop_appo(R, grp, mask, parent, split, bs, proximity, 0.8)
    for i in range(len(R)):
        assert adv[i].tolist() == pytest.approx(ref[i], abs=1e-5)


# ----------------------------------------------------------------------------------------- Tree-GRPO


def test_tree_grpo_by_hand():
    inp = AdvantageInputs(
        rewards_N=torch.tensor([1.0, 0.0, 1.0, 0.0]), group_N=torch.zeros(4, dtype=torch.long),
        mask_NT=torch.ones(4, 2), parent_N=torch.tensor([-1, -1, 0, 0]), split_N=torch.tensor([-1, -1, 1, 3]),
    )
    adv, met = get_advantage_estimator("tree_grpo")(inp)
    # trees {0, 2, 3} (R 1, 1, 0) and {1}. intra tree 0: mean 2/3, std sqrt(2)/3 = .4714 ->
    # [.7071, .7071, -1.4142]; tree 1 alone -> 0. inter over [1, 0, 1, 0]: [1, -1, 1, -1].
    # sum: row 0 1.7071, row 1 -1, row 2 1.7071, row 3 -2.4142
    assert adv[:, 0].tolist() == pytest.approx([1.70711, -1.0, 1.70711, -2.41421], abs=1e-4)
    assert met["tree_grpo/num_trees"] == 2
    explicit = AdvantageInputs(**{**inp.__dict__, "tree_N": torch.tensor([0, 1, 0, 0])})
    assert torch.equal(get_advantage_estimator("tree_grpo")(explicit)[0], adv)
    # without any tree information every row is its own tree: GRPO
    flat = AdvantageInputs(inp.rewards_N, inp.group_N, inp.mask_NT)
    assert torch.allclose(get_advantage_estimator("tree_grpo")(flat)[0], get_advantage_estimator("grpo")(flat)[0])


def test_tree_roots():
    assert tree_roots(torch.tensor([-1, 0, 1, 2, -1, 4])).tolist() == [0, 0, 0, 0, 4, 4]
    with pytest.raises(ValueError, match="cycle"):
        tree_roots(torch.tensor([1, 0]))


@pytest.mark.parametrize("name", ["grpo", "arpo", "appo", "tree_grpo"])
def test_masked_tokens_are_exactly_zero(name):
    rng = random.Random(3)
    R, grp, mask, parent, split, bs = random_forest(rng, 7)
    inp = AdvantageInputs(
        rewards_N=torch.tensor(R), group_N=torch.tensor(grp), mask_NT=torch.tensor(mask, dtype=torch.float32),
        parent_N=torch.tensor(parent), split_N=torch.tensor(split), branch_score_N=torch.tensor(bs),
    )
    adv, met = get_advantage_estimator(name)(inp)
    assert adv.dtype == torch.float32 and adv.shape == inp.mask_NT.shape
    assert (adv[inp.mask_NT == 0] == 0).all()
    assert all(math.isfinite(v) for v in met.values())
