"""Masked helpers: discounted suffix sums, z-scores, group z-scores, masked mean."""

from __future__ import annotations

import math

import pytest
import torch

from appo.core.ops import discounted_suffix_sum, group_zscore, masked_mean, zscore_masked


def loop_suffix_sum(x: list[float], m: list[int], gamma: float, mode: str) -> list[float]:
    """Plain reference: S_t = sum_{k>=t, m_k} gamma^d(t,k) x_k, d counting valid (or all) positions."""
    T = len(x)
    out = []
    for t in range(T):
        s, d = 0.0, 0
        for k in range(t, T):
            if m[k]:
                s += gamma**d * x[k]
            if mode == "all" or m[k]:
                d += 1
        out.append(s)
    return out


def test_suffix_sum_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    m = torch.tensor([1, 0, 1, 1])
    # valid-only, gamma 0.5: S3 = 4; S2 = 3 + .5*4 = 5; S1 (invalid) = S2 = 5; S0 = 1 + .5*5 = 3.5
    assert discounted_suffix_sum(x, m, 0.5).tolist() == pytest.approx([3.5, 5.0, 5.0, 4.0])
    # all positions: S3 = 4; S2 = 5; S1 = 0 + .5*5 = 2.5; S0 = 1 + .5*2.5 = 2.25
    assert discounted_suffix_sum(x, m, 0.5, discount_over="all").tolist() == pytest.approx([2.25, 2.5, 5.0, 4.0])
    # gamma 1: reverse cumsum of [1, 0, 3, 4] = [8, 7, 7, 4]
    assert discounted_suffix_sum(x, m, 1.0).tolist() == pytest.approx([8.0, 7.0, 7.0, 4.0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma", [1.0, 0.97, 0.5])
@pytest.mark.parametrize("mode", ["valid", "all"])
def test_suffix_sum_matches_loop(seed, gamma, mode):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 40, generator=g, dtype=torch.float64)
    m = (torch.rand(3, 40, generator=g) < 0.7).long()
    got = discounted_suffix_sum(x, m, gamma, discount_over=mode)
    for i in range(3):
        ref = loop_suffix_sum(x[i].tolist(), m[i].tolist(), gamma, mode)
        assert got[i].tolist() == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_suffix_sum_long_horizon_small_gamma_is_finite():
    # gamma^5000 underflows float64 (0.5^5000 ~ 1e-1505); the log-space scan must stay exact.
    T = 5000
    x = torch.ones(T, dtype=torch.float64)
    s = discounted_suffix_sum(x, torch.ones(T), 0.5, discount_over="all")
    assert torch.isfinite(s).all()
    # geometric series: S_0 = sum_{j<5000} .5^j = 2 (to float precision); S_{T-1} = 1
    assert float(s[0]) == pytest.approx(2.0)
    assert float(s[-1]) == pytest.approx(1.0)


def test_suffix_sum_rejects_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        discounted_suffix_sum(torch.ones(3), torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="gamma"):
        discounted_suffix_sum(torch.ones(3), torch.ones(3), 1.5)
    with pytest.raises(ValueError, match="shape"):
        discounted_suffix_sum(torch.ones(3), torch.ones(4), 1.0)


def test_zscore_masked_by_hand():
    x = torch.tensor([[1.0, 2.0, 99.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    m = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0]])
    z, deg = zscore_masked(x, m)
    # row 0 valid [1, 2, 3]: mean 2, population std sqrt(2/3) = 0.81650 -> z = [-1.22474, 0, 1.22474]
    assert z[0].tolist() == pytest.approx([-1.224745, 0.0, 0.0, 1.224745], abs=1e-5)
    # row 1 is constant over its valid tokens: degenerate, z = 0
    assert deg.tolist() == [False, True]
    assert z[1].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_group_zscore_by_hand():
    v = torch.tensor([1.0, 2.0, 3.0, 7.0, 4.0, 6.0])
    g = torch.tensor([0, 0, 0, 1, 2, 2])
    a = group_zscore(v, g)
    # group 0: mean 2, pop std .8165 -> [-1.2247, 0, 1.2247]; group 1 single row -> 0;
    # group 2: mean 5, pop std 1 -> [-1, 1] (divided by 1 + 1e-6)
    assert a.tolist() == pytest.approx([-1.224743, 0.0, 1.224743, 0.0, -0.999999, 0.999999], abs=1e-5)
    sel = torch.tensor([True, True, False, True, True, True])
    # group 0 restricted to rows 0, 1: mean 1.5, std .5 -> [-1, 1]; row 2 unselected -> 0
    assert group_zscore(v, g, select_N=sel)[:3].tolist() == pytest.approx([-0.999998, 0.999998, 0.0], abs=1e-5)
    assert group_zscore(v, g, norm_by_std=False).tolist() == pytest.approx([-1, 0, 1, 0, -1, 1])


def test_masked_mean_ignores_nan_under_mask():
    x = torch.tensor([1.0, float("nan"), 3.0])
    assert float(masked_mean(x, torch.tensor([1, 0, 1]))) == 2.0
    assert float(masked_mean(x, torch.zeros(3))) == 0.0
    assert math.isfinite(float(masked_mean(x, torch.tensor([1, 0, 0]))))
