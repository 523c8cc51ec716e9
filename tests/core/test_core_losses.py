"""PPO clip loss, aggregation, future-KL scaling, KL estimators, registry."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from appo.core.losses import (
    POLICY_LOSSES,
    aggregate,
    apply_future_kl,
    future_kl_scale,
    get_policy_loss,
    kl_penalty,
    register_policy_loss,
)


def test_registry():
    assert POLICY_LOSSES["vanilla"] is POLICY_LOSSES["ppo_clip"] is get_policy_loss("ppo_clip")
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("vanilla")(lambda *a, **k: None)
    with pytest.raises(ValueError, match="valid names.*ppo_clip"):
        get_policy_loss("nope")


def test_ppo_clip_by_hand():
    L = math.log
    # token: (log-ratio, A) ->  pg1 = -A r, pg2 = -A clip(r, .8, 1.28), max, then dual clip for A<0 at -A*3
    # 0: r 1.5, A  1: pg1 -1.5, pg2 -1.28 -> -1.28 (clipped)
    # 1: r 1.5, A -1: pg1  1.5, pg2  1.28 -> 1.5; min(1.5, 3) = 1.5
    # 2: r 5,   A -1: pg1  5,   pg2  1.28 -> 5;   min(5, 3) = 3 (dual clip)
    # 3: r .5,  A  1: pg1 -.5,  pg2 -.8   -> -.5
    # 4: r .5,  A -1: pg1  .5,  pg2  .8   -> .8 (clipped); min(.8, 3) = .8
    # token-mean: (-1.28 + 1.5 + 3 - .5 + .8) / 5 = .704; clipfrac 2/5; lower 1/5
    # ppo_kl = mean(-(log-ratio)) = -(2 ln1.5 + ln5 + 2 ln.5)/5 = -0.20680
    lr = torch.tensor([[L(1.5), L(1.5), L(5.0), L(0.5), L(0.5), 7.0]])
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.float32)
    old = torch.full_like(lr, -2.0)
    loss, met = get_policy_loss("vanilla")(old + lr, old, adv, mask)
    assert float(loss) == pytest.approx(0.704, abs=1e-5)
    assert met["actor/pg_clipfrac"] == pytest.approx(0.4)
    assert met["actor/pg_clipfrac_lower"] == pytest.approx(0.2)
    assert met["actor/ppo_kl"] == pytest.approx(-(2 * L(1.5) + L(5) + 2 * L(0.5)) / 5, abs=1e-5)
    assert met["actor/pg_loss"] == pytest.approx(0.704, abs=1e-5)


def test_ppo_clip_log_ratio_clamped_and_options():
    # log-ratio 50 clamps to 20: A = 1 -> pg1 = -e^20, pg2 = -1.28 -> max = -1.28
    loss, _ = get_policy_loss("ppo_clip")(torch.tensor([[50.0]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    assert float(loss) == pytest.approx(-1.28)
    loss, _ = get_policy_loss("ppo_clip")(
        torch.tensor([[50.0]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), clip_ratio_high=0.5
    )
    assert float(loss) == pytest.approx(-1.5)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        get_policy_loss("ppo_clip")(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1),
                                    clip_ratio_c=1.0)
    with pytest.raises(TypeError):
        get_policy_loss("ppo_clip")(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1),
                                    clip_eps=0.1)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["token-mean", "seq-mean-token-sum", "seq-mean-token-mean",
                                                   "seq-mean-token-sum-norm"]))
def test_loss_gradient_is_zero_where_masked(seed, agg):
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 6
    logp = (torch.randn(B, T, generator=g) - 1).requires_grad_()
    old = torch.randn(B, T, generator=g) - 1
    adv = torch.randn(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) < 0.6).float()
    # garbage at masked positions must not leak (padding may hold NaN / inf)
    old = torch.where(mask == 0, torch.tensor(float("nan")), old)
    adv = torch.where(mask == 0, torch.tensor(float("inf")), adv)
    loss, met = get_policy_loss("ppo_clip")(logp, old, adv, mask, agg=agg)
    loss.backward()
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in met.values())
    assert (logp.grad[mask == 0] == 0).all()
    assert torch.isfinite(logp.grad).all()


def test_aggregate_by_hand():
    lm = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)  # last row empty
    # token-mean (1+2+4)/3 = 7/3; seq-mean-token-sum (3 + 4)/2 = 3.5 (empty row not counted);
    # seq-mean-token-mean (1.5 + 4)/2 = 2.75; sum-norm with T = 3: (3/3 + 4/3)/2 = 7/6
    assert float(aggregate(lm, m, "token-mean")) == pytest.approx(7 / 3)
    assert float(aggregate(lm, m, "seq-mean-token-sum")) == pytest.approx(3.5)
    assert float(aggregate(lm, m, "seq-mean-token-mean")) == pytest.approx(2.75)
    assert float(aggregate(lm, m, "seq-mean-token-sum-norm")) == pytest.approx(7 / 6)
    assert float(aggregate(lm, m, "seq-mean-token-sum-norm", norm_constant=7.0)) == pytest.approx(0.5)
    assert float(aggregate(lm, torch.zeros(3, 3), "seq-mean-token-mean")) == 0.0
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(lm, m, "token-sum")


# ----------------------------------------------------------------------------------------- future KL


def test_future_kl_by_hand():
    # d = [.05, .1, 2.0, -.02]; 2.0 > log 3 = 1.0986 is left out of F. gamma .5, all positions:
    # F3 = -.02; F2 = 0 + .5*(-.02) = -.01; F1 = .1 + .5*(-.01) = .095; F0 = .05 + .5*.095 = .0975
    # f = clip(exp F, 1, 1.2) = [1.10241, 1.09966, 1, 1]; masked position -> 1
    d = torch.tensor([[0.05, 0.1, 2.0, -0.02, 0.3]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    adv = torch.ones(1, 5)
    f = future_kl_scale(d - 1.0, torch.full_like(d, -1.0), adv, mask, gamma=0.5)
    assert f.tolist()[0] == pytest.approx([math.exp(0.0975), math.exp(0.095), 1.0, 1.0, 1.0], abs=1e-5)
    # safety: A < 0 where ratio > safety_ratio clamps f to [.8, 1]; token 1 has ratio e^.1 = 1.105
    adv_neg = torch.tensor([[1.0, -1.0, 1.0, 1.0, 1.0]])
    f2 = future_kl_scale(d - 1.0, torch.full_like(d, -1.0), adv_neg, mask, gamma=0.5, safety_ratio=1.05)
    assert float(f2[0, 1]) == pytest.approx(1.0) and float(f2[0, 0]) == pytest.approx(math.exp(0.0975), abs=1e-5)
    # valid-only discount is the same here (no invalid position before a valid one)
    f3 = future_kl_scale(d - 1.0, torch.full_like(d, -1.0), adv, mask, gamma=0.5, discount_over="valid")
    assert torch.allclose(f, f3)
    # A~ = A (1 + b f)
    assert apply_future_kl(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.1, 1.0]])).tolist() == [
        pytest.approx([4.2, -2.0])
    ]
    assert apply_future_kl(torch.ones(1, 1), torch.ones(1, 1) * 1.2, b=0.5).item() == pytest.approx(1.6)


def loop_future_kl(lp, old, adv, m, gamma, thr, lo, hi, safety, mode):
    T = len(lp)
    d = [min(max(lp[t] - old[t], -20.0), 20.0) for t in range(T)]
    out = []
    for t in range(T):
        if not m[t]:
            out.append(1.0)
            continue
        F, dist = 0.0, 0
        for k in range(t, T):
            if m[k] and d[k] <= thr:
                F += gamma**dist * d[k]
            if mode == "all" or m[k]:
                dist += 1
        f = min(max(math.exp(F), lo), hi)
        if adv[t] < 0 and math.exp(d[t]) > safety:
            f = min(max(f, 0.8), 1.0)
        out.append(f)
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", ["all", "valid"])
def test_future_kl_matches_loop(seed, mode):
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 30
    old = torch.randn(B, T, generator=g) - 2
    lp = old + torch.randn(B, T, generator=g) * 0.8
    adv = torch.randn(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) < 0.7).long()
    gamma = 2 ** (-1 / 8)
    f = future_kl_scale(lp, old, adv, mask, gamma=gamma, min_scale=0.7, safety_ratio=2.0, discount_over=mode)
    for i in range(B):
        ref = loop_future_kl(lp[i].tolist(), old[i].tolist(), adv[i].tolist(), mask[i].tolist(), gamma,
                             math.log(3), 0.7, 1.2, 2.0, mode)
        assert f[i].tolist() == pytest.approx(ref, abs=1e-5)
    assert not f.requires_grad


# ---------------------------------------------------------------------------------------------- KL


def test_kl_penalty_by_hand():
    lp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    # d = .5: k1 .5; abs .5; k2 .125; k3: kl = -.5 -> e^-.5 + .5 - 1 = .106531
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(lp, ref, "kl").item() == pytest.approx(0.5)
    assert kl_penalty(ref, lp, "abs").item() == pytest.approx(0.5)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.125)
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(math.exp(-0.5) - 0.5, abs=1e-6)
    assert kl_penalty(lp, ref, "low_var_kl").item() == pytest.approx(math.exp(-0.5) - 0.5, abs=1e-6)
    # d = -30: kl = 30 -> clamp 20 -> e^20 - 21 -> clamp 10
    assert kl_penalty(torch.tensor([-30.0]), torch.tensor([0.0]), "k3").item() == 10.0
    assert kl_penalty(lp, lp, "k3").item() == 0.0
    x = torch.tensor([-1.0], requires_grad=True)
    kl_penalty(x, ref, "k3").sum().backward()
    # d/dlogp (e^-d + d - 1) = 1 - e^-d = 1 - e^-.5 = .393469
    assert x.grad.item() == pytest.approx(1 - math.exp(-0.5), abs=1e-6)
    with pytest.raises(ValueError, match="valid"):
        kl_penalty(lp, ref, "full")
