"""Advantage estimators: a registry of ``fn(inputs: AdvantageInputs, **options) -> (adv_NT, metrics)``.

Every estimator returns token-level advantages float32 [N, T], exactly 0 where ``mask_NT == 0``, and a
metrics dict of floats. Group statistics use the population std and ``eps = 1e-6`` (docs/algorithm.md 6); a
group with a single row gets advantage 0. Options are explicit keywords, so a misspelled option
raises ``TypeError`` instead of being ignored.
"""

from __future__ import annotations

from typing import Callable

import torch

from appo.core.ops import group_zscore
from appo.plugins import register_unique
from appo.types import AdvantageInputs

AdvantageFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}
"""Registered estimators by name: ``grpo``, ``appo``, ``arpo``, ``tree_grpo``."""


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator registering an estimator under ``name``; refuses a name already taken."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        return register_unique(ADVANTAGE_ESTIMATORS, name, fn, "advantage estimator")

    return deco


def get_advantage_estimator(name: str) -> AdvantageFn:
    """The estimator registered under ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; valid names: {sorted(ADVANTAGE_ESTIMATORS)}"
        ) from None


# ---------------------------------------------------------------------------------------- helpers


def _check(inputs: AdvantageInputs) -> tuple[int, int]:
    r, g, m = inputs.rewards_N, inputs.group_N, inputs.mask_NT
    if r.dim() != 1 or g.shape != r.shape:
        raise ValueError(f"rewards_N {tuple(r.shape)} and group_N {tuple(g.shape)} must both be [N]")
    if m.dim() != 2 or m.shape[0] != r.shape[0]:
        raise ValueError(f"mask_NT {tuple(m.shape)} must be [N, T] with N = {r.shape[0]}")
    if not torch.isfinite(r.double()).all():
        raise ValueError("rewards_N has NaN/inf; the reward function must return finite numbers")
    N = r.shape[0]
    for name in ("is_branch_N", "parent_N", "split_N", "tree_N", "branch_score_N"):
        t = getattr(inputs, name)
        if t is not None and tuple(t.shape) != (N,):
            raise ValueError(f"{name} has shape {tuple(t.shape)}; expected [N] = [{N}]")
    return N, m.shape[1]


def _tokens(adv_N: torch.Tensor, mask_NT: torch.Tensor) -> torch.Tensor:
    return torch.where(mask_NT != 0, adv_N.to(torch.float32)[:, None], torch.zeros((), device=mask_NT.device))


def _metrics(adv_NT: torch.Tensor, mask_NT: torch.Tensor) -> dict[str, float]:
    vals = adv_NT[mask_NT != 0].double()
    if vals.numel() == 0:
        return {"advantages/mean": 0.0, "advantages/std": 0.0, "advantages/max": 0.0, "advantages/min": 0.0}
    return {
        "advantages/mean": float(vals.mean()),
        "advantages/std": float(vals.std(unbiased=False)),
        "advantages/max": float(vals.max()),
        "advantages/min": float(vals.min()),
    }


def _branch_structure(inputs: AdvantageInputs, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(is_branch_N, parent_N, split_N)`` checked for consistency; parents in the same group."""
    dev = inputs.rewards_N.device
    parent, split = inputs.parent_N, inputs.split_N
    if (parent is None) != (split is None):
        raise ValueError("parent_N and split_N must be given together")
    if parent is None:
        is_branch = (
            torch.zeros(N, dtype=torch.bool, device=dev) if inputs.is_branch_N is None else inputs.is_branch_N.bool()
        )
        if is_branch.any():
            raise ValueError("is_branch_N marks branch rows but parent_N/split_N are None; give the tree")
        neg = torch.full((N,), -1, dtype=torch.long, device=dev)
        return is_branch, neg, neg.clone()
    parent, split = parent.long(), split.long()
    has_parent = parent >= 0
    is_branch = has_parent if inputs.is_branch_N is None else inputs.is_branch_N.bool()
    if not torch.equal(is_branch, has_parent):
        bad = torch.nonzero(is_branch != has_parent).flatten().tolist()
        raise ValueError(f"rows {bad}: is_branch_N must be True exactly where parent_N >= 0")
    if has_parent.any():
        p = parent[has_parent]
        idx = torch.nonzero(has_parent).flatten()
        if (p >= N).any() or (p == idx).any():
            raise ValueError("parent_N must index another row (0 <= parent < N, parent != row)")
        if (inputs.group_N[p] != inputs.group_N[idx]).any():
            raise ValueError("parent_N points to a row of another prompt (group_N differs)")
        if (split[has_parent] < 0).any():
            raise ValueError("split_N must be >= 0 for branch rows")
    return is_branch, parent, split


# ------------------------------------------------------------------------------------- estimators


@register_advantage("grpo")
def grpo_advantage(
    inputs: AdvantageInputs, *, norm_by_std: bool = True, eps: float = 1e-6
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO: ``A_i = (R_i - mean_g) / (std_g + eps)`` over all rows of the prompt, on every token.

    Population std (docs/algorithm.md 6.1; verl uses the unbiased ``torch.std``, which shrinks |A| by
    ``sqrt((n-1)/n)``). ``norm_by_std=False`` gives ``R_i - mean_g``. A one-row group gets 0 (verl
    would give it its raw reward). Leaves out: tree fields (ignored) and any cross-prompt whitening.
    """
    N, _ = _check(inputs)
    adv_N = group_zscore(inputs.rewards_N, inputs.group_N, eps=eps, norm_by_std=norm_by_std)
    adv_NT = _tokens(adv_N, inputs.mask_NT)
    return adv_NT, _metrics(adv_NT, inputs.mask_NT)


@register_advantage("arpo")
def arpo_advantage(
    inputs: AdvantageInputs, *, norm_by_std: bool = True, eps: float = 1e-6
) -> tuple[torch.Tensor, dict[str, float]]:
    """ARPO: GRPO over all rows of the prompt, initial and forked alike (ARPO paper, Eq. 6).

    Shared prefixes are trained with each row's own advantage (the rows are independent sequences
    to the loss). Leaves out: ARPO's variant that averages advantages over shared tokens.
    """
    return grpo_advantage(inputs, norm_by_std=norm_by_std, eps=eps)


@register_advantage("appo")
def appo_advantage(
    inputs: AdvantageInputs,
    *,
    proximity_scaling: bool = False,
    decay: float = 0.9,
    redraw_contrast: bool = False,
    prefix_combine: str = "sum",
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, float]]:
    """APPO dual-group advantage (docs/algorithm.md 6.2) with its options (6.3-6.5).

    ``A_init_i`` = z-score of R over the prompt's initial rows, ``A_branch_b`` = z-score over the
    prompt's branch rows (each group separately; population std, ``eps``; one-row group -> 0).
    Every row r gets on token t:  ``A_{r,t} = A_own_r + mean_{c in C(r), t <= split_c} A_branch_c``
    where ``A_own`` is ``A_init`` or ``A_branch`` and ``C(r)`` are r's DIRECT children; tokens after
    every child's split keep ``A_own_r``. For depth 1 (the paper) this is exactly the paper's rule for
    initial rows, and branch rows get their own ``A_branch_b``. For depth > 1 credit goes to the
    direct parent only (a grandchild does not reach the initial row), and all branch rows of a
    prompt, whatever their depth, form one branch group.

    ``prefix_combine="mean"`` renormalises the shared-prefix tokens (those with an active child):
    ``A_{r,t} = (A_own_r + mean_c A_branch_c) / 2``, so they carry the same scale as the tokens after
    every split instead of up to twice it; ``"sum"`` (default) is the paper's sum.

    ``redraw_contrast=True`` (for ``fork=redraw``, where a child c re-samples the parent's token
    ``d_c = split_c + 1`` and so does not share it) adds to the parent's token d the contrast of the
    choice it made against its re-draws there: ``(R_r - mean_{c: d_c = d} R_c) / (std_prompt + eps)``
    (``std_prompt`` = population std of all the prompt's rewards, initial and branch rows, GRPO's scale;
    without ``norm_by_std`` no division; 0 when the prompt has fewer than 2 branch rows). Until issue 24 the
    divisor was the branch rows' std, which is 0 whenever every branch scores the same while a parent differs:
    the contrast was then ``+-1 / eps = +-1e6`` (measured: grad norms 4e3-5e4 before clipping on the depth task).
    The prompt's std is > 0 whenever the numerator is not 0, so ``|contrast| <= max |R - R'| / std_prompt``.

    ``proximity_scaling=True`` multiplies the token advantage of every row with children by
    ``M_t = mean_{c in C(r), t <= split_c} [1 + rho_c * decay^(split_c - t)]`` (1 where no child is
    active), ``rho_c = clamp(BS_c / max BS, 0, 1)``, max over the prompt's branch rows with a finite
    score. When that max is <= 0 (only fill points), rho = 0 for the prompt (no scaling); a NaN
    score gives rho = 0. The clamp keeps ``M`` in [1, 2] so that a negative BS can never flip an
    advantage's sign; with strict candidates (BS > 0) it is the plain ratio. Needs ``branch_score_N``.

    Leaves out: which rows are trained on (``appo.algorithms.Algorithm.trained_rows``), and the reference code's
    application of M to a last-token reward (where it has no effect).
    """
    N, T = _check(inputs)
    if not decay > 0:
        raise ValueError(f"decay={decay} must be > 0")
    if prefix_combine not in ("sum", "mean"):
        raise ValueError(f"prefix_combine={prefix_combine!r} must be 'sum' or 'mean'")
    is_branch, parent, split = _branch_structure(inputs, N)
    R, g, mask = inputs.rewards_N, inputs.group_N, inputs.mask_NT
    dev = R.device
    a_init = group_zscore(R, g, select_N=~is_branch, eps=eps, norm_by_std=norm_by_std)
    a_branch = group_zscore(R, g, select_N=is_branch, eps=eps, norm_by_std=norm_by_std)
    own_N = torch.where(is_branch, a_branch, a_init).double()
    adv_NT = own_N[:, None].expand(N, T).clone()

    kids = torch.nonzero(parent >= 0).flatten()
    metrics: dict[str, float] = {}
    if kids.numel():
        pos_T = torch.arange(T, device=dev)
        par_B, split_B = parent[kids], split[kids]
        active_BT = (pos_T[None, :] <= split_B[:, None]).double()
        cnt_NT = torch.zeros(N, T, dtype=torch.float64, device=dev).index_add_(0, par_B, active_BT)
        sum_NT = torch.zeros(N, T, dtype=torch.float64, device=dev).index_add_(
            0, par_B, active_BT * own_N[kids][:, None]
        )
        has = cnt_NT > 0
        branch_term_NT = torch.where(has, sum_NT / cnt_NT.clamp_min(1.0), torch.zeros_like(sum_NT))
        if prefix_combine == "mean":
            adv_NT = torch.where(has, (adv_NT + branch_term_NT) / 2.0, adv_NT)
        else:
            adv_NT = adv_NT + branch_term_NT
        if redraw_contrast:
            adv_NT = adv_NT + _redraw_contrast(R, g, is_branch, par_B, split_B, kids, N, T, eps, norm_by_std)
        if proximity_scaling:
            if inputs.branch_score_N is None:
                raise ValueError("proximity_scaling=True needs branch_score_N (the BS at each branch's split)")
            bs_N = inputs.branch_score_N.double()
            finite = torch.isfinite(bs_N) & is_branch
            gid = torch.unique(g, return_inverse=True)[1]
            max_G = torch.full((int(gid.max()) + 1,), -torch.inf, dtype=torch.float64, device=dev)
            max_G = max_G.scatter_reduce(0, gid[finite], bs_N[finite], reduce="amax")
            max_B = max_G[gid[kids]]
            bs_B = bs_N[kids]
            ok = torch.isfinite(bs_B) & (max_B > 0)
            rho_B = torch.where(ok, (bs_B / torch.where(ok, max_B, 1.0)).clamp(0.0, 1.0), 0.0)
            dist_BT = (split_B[:, None] - pos_T[None, :]).clamp_min(0).double()
            term_BT = active_BT * rho_B[:, None] * torch.pow(torch.tensor(decay, dtype=torch.float64), dist_BT)
            msum_NT = torch.zeros(N, T, dtype=torch.float64, device=dev).index_add_(0, par_B, term_BT)
            M_NT = 1.0 + torch.where(has, msum_NT / cnt_NT.clamp_min(1.0), torch.zeros_like(msum_NT))
            adv_NT = adv_NT * M_NT
            with_kids = has & (mask != 0)
            metrics["appo/proximity_scale_mean"] = float(M_NT[with_kids].mean()) if with_kids.any() else 1.0
    adv_NT = torch.where(mask != 0, adv_NT, torch.zeros_like(adv_NT)).to(torch.float32)
    metrics.update(_metrics(adv_NT, mask))
    metrics["appo/branch_rows"] = float(is_branch.sum())
    metrics["appo/initial_rows"] = float((~is_branch).sum())
    return adv_NT, metrics


def _redraw_contrast(R: torch.Tensor, g: torch.Tensor, is_branch: torch.Tensor, par_B: torch.Tensor,
                     split_B: torch.Tensor, kids: torch.Tensor, N: int, T: int, eps: float,
                     norm_by_std: bool) -> torch.Tensor:
    """``[N, T]`` float64: on each parent's re-drawn token ``d = split + 1``, ``(R_parent - mean R of the
    children re-drawn there) / (std of all the prompt's rewards + eps)``; 0 elsewhere and for prompts
    with fewer than 2 branch rows."""
    Rd = R.double()
    out = torch.zeros(N, T, dtype=torch.float64, device=R.device)
    d_B = split_B + 1
    keep = d_B < T
    for p, d in {(int(p), int(d)) for p, d, k in zip(par_B.tolist(), d_B.tolist(), keep.tolist()) if k}:
        sel = (par_B == p) & (d_B == d)
        br = is_branch & (g == g[p])
        if int(br.sum()) < 2:
            continue
        diff = Rd[p] - Rd[kids[sel]].mean()
        if norm_by_std:
            diff = diff / (Rd[g == g[p]].std(unbiased=False) + eps)
        out[p, d] = diff
    return out


def tree_roots(parent_N: torch.Tensor) -> torch.Tensor:
    """Root row of every row by following ``parent_N`` (-1 = root); raises on a cycle."""
    N = parent_N.shape[0]
    idx = torch.arange(N, device=parent_N.device)
    anc = torch.where(parent_N >= 0, parent_N.long(), idx)
    for _ in range(max(1, N.bit_length()) + 1):
        anc = anc[anc]
    if N and (parent_N[anc] >= 0).any():
        raise ValueError("parent_N contains a cycle; every chain of parents must end at a root (-1)")
    return anc


@register_advantage("tree_grpo")
def tree_grpo_advantage(
    inputs: AdvantageInputs, *, norm_by_std: bool = True, eps: float = 1e-6
) -> tuple[torch.Tensor, dict[str, float]]:
    """Tree-GRPO (Ji et al. 2025, "Tree Search for LLM Agent RL"): ``A_i = A_intra_i + A_inter_i``.

    ``A_intra`` = z-score of R among the rows of the same tree (rows sharing ``tree_N`` within the
    prompt), ``A_inter`` = z-score over all rows of the prompt; population std, ``eps``; a one-row
    tree contributes 0 intra-tree advantage. The sum is not re-normalised (the paper adds the two
    terms). Trees come from ``tree_N``; when None, from ``parent_N`` (roots), else every row is its
    own tree (then this equals GRPO). Leaves out: per-node (step-level) advantages for the shared
    prefixes; each row's advantage applies to all of its tokens.
    """
    N, _ = _check(inputs)
    if inputs.tree_N is not None:
        tree = inputs.tree_N.long()
    elif inputs.parent_N is not None:
        tree = tree_roots(inputs.parent_N)
    else:
        tree = torch.arange(N, device=inputs.rewards_N.device)
    g = inputs.group_N.long()
    key = torch.unique(torch.stack([g, tree], dim=1), dim=0, return_inverse=True)[1]  # (prompt, tree) id
    intra = group_zscore(inputs.rewards_N, key, eps=eps, norm_by_std=norm_by_std)
    inter = group_zscore(inputs.rewards_N, g, eps=eps, norm_by_std=norm_by_std)
    adv_NT = _tokens(intra + inter, inputs.mask_NT)
    metrics = _metrics(adv_NT, inputs.mask_NT)
    metrics["tree_grpo/num_trees"] = float(torch.unique(key).numel())
    return adv_NT, metrics
