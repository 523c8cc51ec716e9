"""Policy losses (registry), loss aggregation, future-KL advantage scaling, KL estimators.

A policy loss is ``fn(logp_BT, old_logp_BT, adv_BT, mask_BT, *, agg="token-mean", **its options)
-> (loss, metrics)``: a scalar tensor to minimise and a dict of floats. Masked positions (mask 0)
are removed with ``where`` before any arithmetic, so their gradient is exactly 0 even when the
inputs there are NaN or inf (padding).
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch

from appo.core.ops import DiscountOver, _check_same_shape, discounted_suffix_sum, masked_mean
from appo.plugins import register_unique

AggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

POLICY_LOSSES: dict[str, PolicyLossFn] = {}
"""Registered policy losses by name: ``ppo_clip`` (alias ``vanilla``, verl's name)."""


def register_policy_loss(*names: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator registering a loss under one or more names; refuses a name already taken."""
    if not names:
        raise ValueError("register_policy_loss needs at least one name")

    def deco(fn: PolicyLossFn) -> PolicyLossFn:
        staged = dict(POLICY_LOSSES)  # all names or none
        for name in names:
            register_unique(staged, name, fn, "policy loss")
        POLICY_LOSSES.update(staged)
        return fn

    return deco


def get_policy_loss(name: str) -> PolicyLossFn:
    """The loss registered under ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss {name!r}; valid names: {sorted(POLICY_LOSSES)}") from None


def aggregate(
    loss_mat_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    mode: AggMode = "token-mean",
    *,
    norm_constant: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss matrix to a scalar over the valid tokens (verl's ``agg_loss`` modes).

    - ``token-mean``: ``sum_{b,t} m l / sum_{b,t} m`` (every token weighs the same; DAPO, docs/algorithm.md 8.4).
    - ``seq-mean-token-sum``: mean over rows of ``sum_t m l``. Not length-normalised, so the loss
      (and gradient) scale grows with response length.
    - ``seq-mean-token-mean``: mean over rows of ``sum_t m l / sum_t m`` (original GRPO).
    - ``seq-mean-token-sum-norm``: mean over rows of ``sum_t m l / norm_constant`` (Dr. GRPO; the
      constant defaults to T = ``mask_BT.shape[-1]`` and should stay fixed across training). verl's
      version divides the micro-batch TOTAL by T without dividing by the row count, so its scale
      depends on the micro-batch size; ours takes the row mean.

    The ``seq-mean-*`` modes average over rows with at least one valid token (an empty row does not
    dilute the mean; older verl averaged over all rows, making an empty row count as 0 and giving
    NaN for ``seq-mean-token-mean``). An all-empty batch gives 0 (with a graph). Leaves out: verl's
    global normalisation across data-parallel ranks and gradient-accumulation steps (the trainer
    scales by its micro-batch share).
    """
    _check_same_shape(loss_mat_BT=loss_mat_BT, mask_BT=mask_BT)
    m = mask_BT.to(loss_mat_BT.dtype)
    lm = torch.where(mask_BT != 0, loss_mat_BT, torch.zeros((), dtype=loss_mat_BT.dtype, device=loss_mat_BT.device))
    lm = lm * m
    if mode == "token-mean":
        return lm.sum() / m.sum().clamp_min(1e-8)
    row_sum, row_cnt = lm.sum(-1), m.sum(-1)
    nonempty = row_cnt > 0
    n_rows = nonempty.sum().clamp_min(1)
    if mode == "seq-mean-token-sum":
        return row_sum.sum() / n_rows
    if mode == "seq-mean-token-mean":
        return (row_sum / row_cnt.clamp_min(1e-8)).sum() / n_rows
    if mode == "seq-mean-token-sum-norm":
        c = float(mask_BT.shape[-1]) if norm_constant is None else float(norm_constant)
        if not c > 0:
            raise ValueError(f"norm_constant={norm_constant} must be > 0")
        return (row_sum / c).sum() / n_rows
    raise ValueError(
        f"unknown aggregation {mode!r}; valid: token-mean, seq-mean-token-sum, seq-mean-token-mean, "
        "seq-mean-token-sum-norm"
    )


def _prepare(
    logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_same_shape(logp_BT=logp_BT, old_logp_BT=old_logp_BT, adv_BT=adv_BT, mask_BT=mask_BT)
    valid = mask_BT != 0
    zero = torch.zeros((), dtype=torch.float32, device=logp_BT.device)
    logp = torch.where(valid, logp_BT.float(), zero)
    old = torch.where(valid, old_logp_BT.detach().float(), zero)
    adv = torch.where(valid, adv_BT.detach().float(), zero)
    return logp, old, adv, valid


@register_policy_loss("ppo_clip", "vanilla")
def ppo_clip(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    agg: AggMode = "token-mean",
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.28,
    clip_ratio_c: float = 3.0,
    norm_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with clip-higher and dual-clip (verl's "vanilla" loss, docs/algorithm.md 8.1).

    ``r = exp(clamp(logp - old_logp, +-20))``; ``l1 = -A r``, ``l2 = -A clip(r, 1-eps_low, 1+eps_high)``,
    ``l = max(l1, l2)``; for ``A < 0`` (dual-clip, Ye et al. 2020): ``l = min(max(l1, l2), -A c)``.
    Aggregated with ``aggregate(l, mask, agg)``. Metrics (token means over valid tokens):
    ``actor/pg_loss``, ``actor/pg_clipfrac`` (fraction where ``l2 > l1``), ``actor/pg_clipfrac_lower``
    (``A < 0`` and the dual clip binds), ``actor/ppo_kl`` (mean of ``old_logp - logp``).
    Leaves out: KL penalty and entropy bonus (add ``aggregate(kl_penalty(...))`` yourself), future-KL
    scaling (scale ``adv_BT`` with ``future_kl_scale``/``apply_future_kl`` first), rollout IS weights.
    """
    if not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c={clip_ratio_c} must be > 1 for dual-clip PPO")
    if not (clip_ratio_low >= 0 and clip_ratio_high >= 0):
        raise ValueError("clip_ratio_low and clip_ratio_high must be >= 0")
    logp, old, adv, valid = _prepare(logp_BT, old_logp_BT, adv_BT, mask_BT)
    log_ratio = (logp - old).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clip1 = torch.maximum(pg1, pg2)
    pg3 = -adv * clip_ratio_c
    clip2 = torch.minimum(clip1, pg3)
    neg = adv < 0
    loss_mat = torch.where(neg, clip2, clip1)
    loss = aggregate(loss_mat, mask_BT, agg, norm_constant=norm_constant)
    m = valid.float()
    with torch.no_grad():
        metrics = {
            "actor/pg_loss": float(loss.detach()),
            "actor/pg_clipfrac": float(masked_mean((pg2 > pg1).float(), m)),
            "actor/pg_clipfrac_lower": float(masked_mean(((clip1 > pg3) & neg).float(), m)),
            "actor/ppo_kl": float(masked_mean(-log_ratio, m)),
        }
    return loss, metrics


def future_kl_scale(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    gamma: float = 2 ** (-1 / 64),
    threshold: float = math.log(3.0),
    max_scale: float = 1.2,
    *,
    min_scale: float = 1.0,
    safety_ratio: float = 6.0,
    safety_clip: tuple[float, float] = (0.8, 1.0),
    discount_over: DiscountOver = "all",
) -> torch.Tensor:
    """Future-KL influence weight ``f_t`` per token (FIPO, as used by APPO; docs/algorithm.md 8.2).

    ``d_k = clamp(logp_k - old_k, +-20)``, ``m_k = 1[d_k <= threshold]`` (threshold ``log 3`` =
    log of the dual-clip constant), ``F_t = sum_{k >= t, valid} gamma^(k-t) m_k d_k``,
    ``f_t = clip(exp(F_t), min_scale, max_scale)``; then where ``A_t < 0`` and ``exp(d_t) >
    safety_ratio``, ``f_t`` is clamped to ``safety_clip``. Returns float32 [B, T], detached, with
    ``f = 1`` at invalid positions. Use ``apply_future_kl`` for ``A~ = A (1 + b f)``.

    What the reference (FIPO's verl loss) does: the distance ``k - t`` counts every position (the
    mask zeroes contributions but not the decay), so ``discount_over="all"`` is our default
    (``"valid"`` counts only valid tokens, which matters when tool results sit in between); it sums
    with a chunked matmul, we use an exact log-space scan (``discounted_suffix_sum``, float64); its
    safety threshold is a config value (4 in FIPO's release; APPO's notes say 6, our default); it drops
    whole sequences with more than one dual-clipped token and multiplies A by f directly (``A f``);
    we leave the sequence dropping out and expose ``b`` in ``apply_future_kl``. With the defaults
    ``f`` is in [1, 1.2] and the safety clamp to [0.8, 1] therefore simply resets ``f`` to 1.
    """
    _check_same_shape(logp_BT=logp_BT, old_logp_BT=old_logp_BT, adv_BT=adv_BT, mask_BT=mask_BT)
    if not min_scale <= max_scale:
        raise ValueError(f"min_scale={min_scale} must be <= max_scale={max_scale}")
    valid = mask_BT != 0
    zero = torch.zeros((), dtype=torch.float64, device=logp_BT.device)
    d = torch.where(valid, logp_BT.detach().double() - old_logp_BT.detach().double(), zero).clamp(-20.0, 20.0)
    x = torch.where(d <= threshold, d, zero)
    F = discounted_suffix_sum(x, mask_BT, gamma, discount_over=discount_over)
    f = F.clamp(max=50.0).exp().clamp(min_scale, max_scale)
    adv = torch.where(valid, adv_BT.detach().double(), zero)
    unsafe = (adv < 0) & (d.exp() > safety_ratio)
    f = torch.where(unsafe, f.clamp(safety_clip[0], safety_clip[1]), f)
    return torch.where(valid, f, torch.ones_like(f)).to(torch.float32)


def apply_future_kl(adv_BT: torch.Tensor, f_BT: torch.Tensor, b: float = 1.0) -> torch.Tensor:
    """APPO's future-KL-scaled advantage ``A~_t = A_t * (1 + b * f_t)`` (docs/algorithm.md 8.2, b = 1).

    Note: with b = 1 and f in [1, 1.2], ``A~`` is 2x to 2.2x ``A``. Under Adam the constant factor 2 does
    not change the step (Adam normalises the gradient's scale; only its epsilon and the gradient-norm clip
    see it); what remains is a per-token weight ``(1 + f_t) / 2`` in [1, 1.1].
    """
    _check_same_shape(adv_BT=adv_BT, f_BT=f_BT)
    return adv_BT * (1.0 + b * f_BT.detach().to(adv_BT.dtype))


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    """Per-token KL estimator between the policy and a reference (verl's ``kl_penalty`` semantics).

    With ``d = logp - ref_logp``: ``"k1"``/``"kl"``: ``d``; ``"abs"``: ``|d|``; ``"k2"``/``"mse"``:
    ``d^2 / 2``; ``"k3"``/``"low_var_kl"``: ``exp(-d) + d - 1`` with ``-d`` clamped to [-20, 20] and
    the result clamped to [-10, 10] (Schulman's k3; unbiased for KL(pi||ref) under samples of pi).
    Returns a tensor like the inputs, differentiable w.r.t. ``logp``; mask and aggregate it with
    ``aggregate``. Leaves out: the full-vocabulary KL and straight-through ("k3+") variants.
    """
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    d = logp - ref_logp
    if kind in ("k1", "kl"):
        return d
    if kind == "abs":
        return d.abs()
    if kind in ("k2", "mse"):
        return 0.5 * d.square()
    if kind in ("k3", "low_var_kl"):
        kl = (-d).clamp(-20.0, 20.0)
        return (kl.exp() - kl - 1.0).clamp(-10.0, 10.0)
    raise ValueError(f"unknown KL kind {kind!r}; valid: k1/kl, abs, k2/mse, k3/low_var_kl")
