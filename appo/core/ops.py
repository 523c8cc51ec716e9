"""Masked tensor helpers shared by the algorithm core: discounted suffix sums, masked means, z-scores.

Pure functions on tensors; no config, no logging. Statistics are computed in float64 and returned in
float32 so that results do not depend on summation order at the precision anyone looks at.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

DiscountOver = Literal["valid", "all"]


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}; these inputs must have the same shape [..., T]")


def _reverse_logcumsumexp(x: torch.Tensor) -> torch.Tensor:
    """``out[..., t] = log sum_{k >= t} exp(x[..., k])`` along the last dim."""
    return torch.logcumsumexp(x.flip(-1), dim=-1).flip(-1)


def discounted_suffix_sum(
    x: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    *,
    discount_over: DiscountOver = "valid",
) -> torch.Tensor:
    """Masked discounted suffix sum along the last dim, in float64.

    Implements ``S_t = sum_{k >= t, mask_k = 1} gamma^{d(t, k)} x_k`` where the distance is
    ``d(t, k) = k - t`` for ``discount_over="all"`` (every position counts, as in FIPO's reference
    code) and ``d(t, k) = #{valid j : t <= j < k}`` for ``discount_over="valid"`` (only valid tokens
    count, so a tool result between two model tokens does not decay the sum).

    Invalid positions contribute nothing but still receive a value: the sum of what lies after them
    (discounted once more under ``"all"``); callers overwrite them as they see fit.

    Vectorised as ``S_t = exp(-L_t) * sum_{k >= t} exp(L_k) x_k`` with ``L_t = sum_{j < t} log a_j``,
    ``a_j`` the per-step decay. Positive and negative parts go through separate reverse
    ``logcumsumexp`` scans, so long horizons with small ``gamma`` neither overflow nor underflow.
    ``gamma == 1`` takes an exact reverse cumsum. Leaves out: ``gamma`` outside (0, 1] (raises).
    """
    _check_same_shape(x=x, mask=mask)
    if not (0.0 < float(gamma) <= 1.0):
        raise ValueError(f"gamma={gamma} must be in (0, 1]")
    if discount_over not in ("valid", "all"):
        raise ValueError(f"discount_over={discount_over!r} must be 'valid' or 'all'")
    valid = mask != 0
    xd = torch.where(valid, x.detach().to(torch.float64), torch.zeros((), dtype=torch.float64, device=x.device))
    if gamma == 1.0:
        return xd.flip(-1).cumsum(-1).flip(-1)
    log_g = math.log(gamma)
    step = torch.full_like(xd, log_g) if discount_over == "all" else valid.to(torch.float64) * log_g
    # L_t = sum_{j<t} log a_j  (exclusive prefix sum)
    L = step.cumsum(-1) - step
    neg_inf = torch.tensor(-math.inf, dtype=torch.float64, device=x.device)
    lp = torch.where(xd > 0, torch.log(xd.clamp_min(1e-300)) + L, neg_inf)
    ln = torch.where(xd < 0, torch.log((-xd).clamp_min(1e-300)) + L, neg_inf)
    return torch.exp(_reverse_logcumsumexp(lp) - L) - torch.exp(_reverse_logcumsumexp(ln) - L)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(x * mask) / sum(mask)`` over ``dim`` (all dims when None); 0 where the mask is empty.

    Masked-out entries are excluded with ``where`` (not multiplied), so NaN/inf there cannot leak.
    """
    _check_same_shape(x=x, mask=mask)
    m = mask.to(x.dtype) if x.is_floating_point() else mask.float()
    xs = torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))
    num = (xs * m).sum() if dim is None else (xs * m).sum(dim)
    den = m.sum() if dim is None else m.sum(dim)
    return num / den.clamp_min(1e-8)


def zscore_masked(
    x: torch.Tensor, mask: torch.Tensor, *, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score along the last dim over valid entries: ``Z = (x - mean) / std`` (population std).

    Returns ``(z, degenerate)``: ``z`` float32 like ``x`` with 0 at invalid positions, and
    ``degenerate`` bool ``[...]`` (one per row), True when the row's valid entries have
    ``std <= tol`` (including rows with 0 or 1 valid entries); such rows get ``z = 0`` everywhere.
    Leaves out: any epsilon in the denominator (degenerate rows are detected instead).
    """
    _check_same_shape(x=x, mask=mask)
    valid = mask != 0
    xd = torch.where(valid, x.detach().to(torch.float64), torch.zeros((), dtype=torch.float64, device=x.device))
    if valid.any() and not torch.isfinite(xd[valid]).all():
        raise ValueError("zscore_masked: x has NaN/inf at valid positions; fix the input or mask them out")
    vd = valid.to(torch.float64)
    n = vd.sum(-1, keepdim=True)
    mean = xd.sum(-1, keepdim=True) / n.clamp_min(1.0)
    dev = (xd - mean) * vd
    std = torch.sqrt((dev * dev).sum(-1, keepdim=True) / n.clamp_min(1.0))
    degenerate = std <= tol
    z = torch.where(degenerate, torch.zeros_like(dev), dev / std.clamp_min(tol))
    z = torch.where(valid, z, torch.zeros_like(z))
    return z.to(torch.float32), degenerate.squeeze(-1)


def group_zscore(
    values_N: torch.Tensor,
    group_N: torch.Tensor,
    *,
    select_N: torch.Tensor | None = None,
    eps: float = 1e-6,
    norm_by_std: bool = True,
) -> torch.Tensor:
    """Group-relative score ``(v_i - mean_g) / (std_g + eps)`` with the population std of group g.

    Only rows with ``select_N`` True take part (all rows when None); the others get 0. Rows are in
    the same group when their ``group_N`` ids are equal. A group with a single selected row gets 0
    (``v - mean = 0``). With ``norm_by_std=False`` returns ``v_i - mean_g`` (Dr. GRPO style).
    Computed in float64, returned float32 [N]. Leaves out: verl's single-row rule (mean 0, std 1,
    which would hand a lone row its raw reward) and verl's unbiased (N-1) std.
    """
    if values_N.dim() != 1 or group_N.shape != values_N.shape:
        raise ValueError(
            f"group_zscore: values_N {tuple(values_N.shape)} and group_N {tuple(group_N.shape)} must be [N]"
        )
    N = values_N.shape[0]
    sel = torch.ones(N, dtype=torch.bool, device=values_N.device) if select_N is None else select_N.bool()
    out = torch.zeros(N, dtype=torch.float64, device=values_N.device)
    if N == 0 or not sel.any():
        return out.to(torch.float32)
    v = values_N.detach().to(torch.float64)[sel]
    _, inv = torch.unique(group_N[sel], return_inverse=True)
    G = int(inv.max()) + 1
    cnt = torch.zeros(G, dtype=torch.float64, device=v.device).index_add_(0, inv, torch.ones_like(v))
    mean = torch.zeros(G, dtype=torch.float64, device=v.device).index_add_(0, inv, v) / cnt
    dev = v - mean[inv]
    if norm_by_std:
        var = torch.zeros(G, dtype=torch.float64, device=v.device).index_add_(0, inv, dev * dev) / cnt
        dev = dev / (torch.sqrt(var)[inv] + eps)
    out[sel] = dev
    return out.to(torch.float32)
