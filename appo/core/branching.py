"""Where to branch: token entropy, likelihood gain Omega, Branching Score, branch-point selection.

Implements docs/algorithm.md sections 2-4 (APPO) and 9 (ARPO's branch probability). Pure tensor functions.
Token positions are response positions; ``mask`` marks the tokens that may be branched on (model-
sampled tokens; the caller also clears whitespace-only tokens, which needs the tokenizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence, overload

import torch

from appo.core.ops import DiscountOver, _check_same_shape, discounted_suffix_sum, zscore_masked

TopkTail = Literal["lump", "renormalize", "drop"]
OmegaForm = Literal["clipped", "mean", "sum"]
OMEGA_FORMS = ("clipped", "mean", "sum")


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Exact entropy of ``softmax(logits)`` over the last dim: ``H = -sum_v p_v log p_v``.

    Math in float32 via ``log_softmax`` (stable for large logits); vocabulary entries at ``-inf``
    (masked out) contribute 0 instead of NaN. Returns float32 ``logits.shape[:-1]``. Leaves out:
    temperature (divide the logits first) and chunking over the vocabulary (the caller's concern).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def topk_entropy(topk_logprobs: torch.Tensor, *, tail: TopkTail = "lump") -> torch.Tensor:
    """Entropy estimate from the top-k log-probs an engine returns (vLLM ``logprobs=k``).

    ``topk_logprobs`` [..., k] are log-probs under the FULL distribution (so ``sum exp <= 1``),
    entries may be ``-inf`` (padding). With ``p_i = exp(lp_i)`` and tail mass ``r = 1 - sum_i p_i``:

    - ``"lump"`` (default): ``H = -sum_i p_i log p_i - r log r``, the exact entropy of the coarsened
      distribution (top-k tokens + one "other" outcome). A lower bound on the true entropy; exact
      when the tail is empty or a single token.
    - ``"renormalize"``: entropy of ``q_i = p_i / sum_j p_j``, the top-k distribution renormalised.
    - ``"drop"``: ``-sum_i p_i log p_i``, the partial sum (what ARPO's reference computes); the
      smallest of the three.

    ``r`` is computed as ``-expm1(logsumexp(lp))`` and clamped at 0. Raises when the top-k mass
    exceeds 1 by more than 1% (the input is then not log-probs of a distribution). Leaves out: any
    model of how the tail mass spreads (an upper bound would need the vocabulary size).
    """
    lp = topk_logprobs.float()
    if lp.numel() and torch.isnan(lp).any():
        raise ValueError("topk_logprobs contains NaN; pass -inf for missing entries")
    lse = torch.logsumexp(lp, dim=-1)
    if lse.numel() and float(lse.max()) > math.log(1.01):
        raise ValueError(
            f"topk_logprobs sum to {float(lse.exp().max()):.4f} > 1: pass log-probs of the full "
            "distribution (not logits)"
        )
    p = lp.exp()
    plogp = torch.where(p > 0, p * lp, torch.zeros_like(p)).sum(-1)
    if tail == "drop":
        return -plogp
    if tail == "renormalize":
        q_lp = lp - lse.unsqueeze(-1)
        q = q_lp.exp()
        return -torch.where(q > 0, q * q_lp, torch.zeros_like(q)).sum(-1)
    if tail == "lump":
        r = (-torch.expm1(lse)).clamp_min(0.0)
        rlogr = torch.where(r > 0, r * torch.log(r.clamp_min(1e-38)), torch.zeros_like(r))
        return -plogp - rlogr
    raise ValueError(f"tail={tail!r} must be one of 'lump', 'renormalize', 'drop'")


def suffix_gain(
    logp_current: torch.Tensor,
    logp_anchor: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    *,
    discount_over: DiscountOver = "valid",
) -> torch.Tensor:
    """The unclipped log likelihood gain of the continuation after each token, float64 ``[..., T]``.

    ``delta_k = logp_current_k - logp_anchor_k`` on valid tokens (mask 1; invalid tokens contribute 0),
    ``S_t = sum_{k >= t, valid} gamma^{d(t,k)} delta_k`` with ``d`` counting valid tokens only
    (``discount_over="all"`` counts every position; with ``gamma = 1`` the two agree). Detached. Raises
    when a valid position is NaN/inf. Leaves out: the exponent, clip and normalisation (see
    :func:`likelihood_gain`).
    """
    _check_same_shape(logp_current=logp_current, logp_anchor=logp_anchor, mask=mask)
    delta = logp_current.detach().double() - logp_anchor.detach().double()
    valid = mask != 0
    if valid.any() and not torch.isfinite(delta[valid]).all():
        raise ValueError("likelihood_gain: log-probs are NaN/inf at valid positions; mask them out")
    return discounted_suffix_sum(delta, mask, gamma, discount_over=discount_over)


def likelihood_gain(
    logp_current: torch.Tensor,
    logp_anchor: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    clip_eps: float = 0.2,
    *,
    max_exponent: float = 20.0,
    discount_over: DiscountOver = "valid",
    form: OmegaForm = "clipped",
) -> torch.Tensor:
    """Accumulated likelihood gain of the continuation after each token (APPO's Omega, docs/algorithm.md 3).

    With ``S_t`` = :func:`suffix_gain` (``gamma``-discounted sum of ``delta_k = logp_current_k -
    logp_anchor_k`` over the valid tokens k >= t):

    - ``"clipped"`` (the paper): ``Omega_t = clip(exp(clamp(S_t, +-max_exponent)), 1 - clip_eps, 1 + clip_eps)``.
    - ``"mean"`` (length-normalised): the same with ``S_t / W_t``, ``W_t = sum_{k >= t, valid} gamma^{d(t,k)}``,
      the mean gain per remaining token, so long suffixes do not saturate the clip.
    - ``"sum"`` (unclipped): ``Omega_t = S_t`` itself, a log-ratio (no exponent, no clip); the Branching
      Score z-scores it, so this is the z-scored suffix sum.

    Shapes ``[..., T]``; returns float32 ``[..., T]``, detached, with the no-gain value (1.0; 0.0 for
    ``"sum"``) at invalid positions. Leaves out: which anchor policy to use (the caller passes its
    log-probs) and whether the gain is numerical noise (:func:`omega_noise_rows`).
    """
    if not clip_eps >= 0:
        raise ValueError(f"clip_eps={clip_eps} must be >= 0")
    if form not in OMEGA_FORMS:
        raise ValueError(f"form={form!r} must be one of {', '.join(OMEGA_FORMS)}")
    S = suffix_gain(logp_current, logp_anchor, mask, gamma, discount_over=discount_over)
    valid = mask != 0
    if form == "sum":
        return torch.where(valid, S, torch.zeros_like(S)).to(torch.float32)
    if form == "mean":
        W = discounted_suffix_sum(torch.ones_like(S), mask, gamma, discount_over=discount_over)
        S = S / W.clamp_min(1e-12)
    omega = S.clamp(-max_exponent, max_exponent).exp().clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return torch.where(valid, omega, torch.ones_like(omega)).to(torch.float32)


def omega_noise_rows(
    logp_current: torch.Tensor,
    logp_anchor: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    *,
    logp_noise: torch.Tensor | None = None,
    ratio: float = 2.0,
    tol: float = 1e-6,
    discount_over: DiscountOver = "valid",
) -> torch.Tensor:
    """Per row, whether Omega carries no more than numerical noise (docs/algorithm.md 3.2), bool ``[...]``.

    The test is on the unclipped suffix sum ``S`` (:func:`suffix_gain`), not on Omega: a row is noise
    when ``std(S) <= max(tol, ratio * std(S_noise))`` over its valid tokens, where ``S_noise`` is the
    same suffix sum of ``logp_noise``, the measured numerical error of ``delta`` (for the ``rollout``
    anchor: ``logp_current - logp_engine``, the trainer-vs-engine mismatch on the same weights; None
    when the anchor is scored by the trainer's own kernels, then only ``tol`` applies). On the tiny
    fp32 model the mismatch is |delta| < 1e-6 per token, std(S) ~ 1e-6, which the old absolute test on
    Omega (tol 1e-6) flagged on about half the rows only. Leaves out: clipping (a row whose Omega is
    all at one clip bound is caught by :func:`branching_score`'s own zero-variance test).
    """
    if not ratio >= 0 or not tol >= 0:
        raise ValueError(f"ratio={ratio} and tol={tol} must be >= 0")
    S = suffix_gain(logp_current, logp_anchor, mask, gamma, discount_over=discount_over)
    _, deg = zscore_masked(S, mask, tol=tol)
    if logp_noise is None:
        return deg
    _check_same_shape(logp_current=logp_current, logp_noise=logp_noise)
    N = discounted_suffix_sum(logp_noise.detach().double(), mask, gamma, discount_over=discount_over)
    return deg | (_masked_std(S, mask) <= ratio * _masked_std(N, mask))


def _masked_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    valid = (mask != 0).to(torch.float64)
    n = valid.sum(-1).clamp_min(1.0)
    xd = torch.where(mask != 0, x.to(torch.float64), torch.zeros((), dtype=torch.float64))
    mean = xd.sum(-1) / n
    return torch.sqrt((((xd - mean.unsqueeze(-1)) * valid) ** 2).sum(-1) / n)


@dataclass(frozen=True)
class BranchingScore:
    """Branching Score of every token and the pieces it is made of (shapes ``[..., T]`` / ``[...]``)."""

    score: torch.Tensor
    """BS_t = Z(H_t) * Z(Omega_t) (or its fallback, see ``branching_score``), float32; -inf where invalid."""
    z_entropy: torch.Tensor
    """Z(H_t) within the row over valid tokens, float32; 0 where invalid or the row is degenerate."""
    z_omega: torch.Tensor
    """Z(Omega_t) within the row over valid tokens, float32; 0 where invalid or the row is degenerate."""
    strict: torch.Tensor
    """Strict candidates, bool: valid, Z(H) > 0 and Z(Omega) > 0 (a degenerate factor's test is dropped)."""
    entropy_degenerate: torch.Tensor
    """Per row, bool: entropy has (near) zero variance over the row's valid tokens."""
    omega_degenerate: torch.Tensor
    """Per row, bool: Omega has (near) zero variance (first step, identical policies, all clipped)."""


def branching_score(
    entropy: torch.Tensor, omega: torch.Tensor, mask: torch.Tensor, *, tol: float = 1e-6,
    omega_noise: torch.Tensor | None = None,
) -> BranchingScore:
    """APPO Branching Score ``BS_t = Z(H_t) * Z(Omega_t)``, Z = z-score within one rollout.

    Rows are the last-dim slices: a single ``[T]`` rollout or a batch ``[N, T]`` (any ``[..., T]``).
    Z uses the population std over the row's valid tokens (mask != 0). Zero-variance handling
    (std <= ``tol``): a factor with no variation carries no ranking information and is dropped from
    the product, so ``BS = Z(H)`` when Omega is degenerate (the paper's fallback), ``BS = Z(Omega)`` when
    entropy is degenerate, and ``BS = 0`` when both are. ``omega_noise`` (bool per row, e.g. from
    :func:`omega_noise_rows`) marks rows whose Omega is numerical noise: they are degenerate too, with
    Z(Omega) = 0. Strict candidates need a positive z on every non-degenerate factor (none when both are
    degenerate). Invalid positions score ``-inf``. Leaves out: the whitespace-token exclusion (clear
    those tokens in ``mask``).
    """
    _check_same_shape(entropy=entropy, omega=omega, mask=mask)
    valid = mask != 0
    z_h, deg_h = zscore_masked(entropy, mask, tol=tol)
    z_o, deg_o = zscore_masked(omega, mask, tol=tol)
    if omega_noise is not None:
        if tuple(omega_noise.shape) != tuple(deg_o.shape):
            raise ValueError(f"omega_noise has shape {tuple(omega_noise.shape)}; expected one bool per row "
                             f"{tuple(deg_o.shape)}")
        deg_o = deg_o | omega_noise.to(deg_o.device).bool()
        z_o = torch.where(deg_o.unsqueeze(-1), torch.zeros_like(z_o), z_o)
    dh, do = deg_h.unsqueeze(-1), deg_o.unsqueeze(-1)
    one = torch.ones_like(z_h)
    score = torch.where(dh, one, z_h) * torch.where(do, one, z_o)
    score = torch.where(dh & do, torch.zeros_like(score), score)
    score = torch.where(valid, score, torch.full_like(score, -math.inf))
    strict = valid & (dh | (z_h > 0)) & (do | (z_o > 0)) & ~(dh & do)
    return BranchingScore(score, z_h, z_o, strict, deg_h, deg_o)


def _as_rows(x: torch.Tensor | Sequence[torch.Tensor], name: str) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        if x.dim() == 1:
            return [x]
        if x.dim() == 2:
            return list(x.unbind(0))
        raise ValueError(f"{name} must be [T], [N, T] or a list of 1-D tensors; got shape {tuple(x.shape)}")
    rows = list(x)
    for i, r in enumerate(rows):
        if not isinstance(r, torch.Tensor) or r.dim() != 1:
            raise ValueError(f"{name}[{i}] must be a 1-D tensor")
    return rows


def _pad(rows: list[torch.Tensor], T: int, fill: float, dtype: torch.dtype) -> torch.Tensor:
    out = torch.full((len(rows), T), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r.detach().cpu().to(dtype)
    return out


def select_branch_points(
    scores: torch.Tensor | Sequence[torch.Tensor],
    masks: torch.Tensor | Sequence[torch.Tensor],
    k: int,
    strict_masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> list[tuple[int, int]]:
    """Pick exactly ``k`` branch points ``(rollout_index, position)`` for ONE prompt (docs/algorithm.md 4).

    Candidates are pooled over the prompt's rollouts and ranked by score (higher first), ties broken
    by lower rollout index, then lower position. Order of filling: (1) strict candidates
    (``strict_masks``; when None, every valid position is strict), (2) the remaining valid positions,
    (3) when fewer than ``k`` valid positions exist, the chosen points repeated cyclically in their
    chosen order. Several points may come from the same rollout. Returns ``[]`` when ``k == 0`` or no
    position is valid (e.g. every rollout fully masked). Valid means ``mask != 0``; invalid positions
    and fully masked rollouts are never selected, whatever their score.

    ``scores``/``masks`` (and ``strict_masks``) are a padded ``[N, T]`` tensor, one ``[T]`` rollout,
    or a list of 1-D tensors of different lengths. Leaves out: any per-rollout quota or diversity
    rule (the paper has none).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k={k!r} must be a non-negative int")
    s_rows, m_rows = _as_rows(scores, "scores"), _as_rows(masks, "masks")
    if len(s_rows) != len(m_rows):
        raise ValueError(f"scores has {len(s_rows)} rollouts but masks has {len(m_rows)}")
    st_rows = None if strict_masks is None else _as_rows(strict_masks, "strict_masks")
    if st_rows is not None and len(st_rows) != len(s_rows):
        raise ValueError(f"strict_masks has {len(st_rows)} rollouts but scores has {len(s_rows)}")
    for i, (s, m) in enumerate(zip(s_rows, m_rows)):
        if s.shape != m.shape or (st_rows is not None and st_rows[i].shape != s.shape):
            raise ValueError(f"rollout {i}: scores, masks (and strict_masks) must have the same length")
    if k == 0 or not s_rows:
        return []
    T = max(r.shape[0] for r in s_rows)
    score_NT = _pad(s_rows, T, -math.inf, torch.float64)
    valid_NT = _pad(m_rows, T, 0.0, torch.float64) != 0
    if torch.isnan(score_NT[valid_NT]).any():
        raise ValueError("scores has NaN at valid positions; give those positions a number or mask them")
    strict_NT = valid_NT if st_rows is None else valid_NT & (_pad(st_rows, T, 0.0, torch.float64) != 0)
    # Row-major flat order is (rollout, position) ascending, so a stable sort by descending score
    # breaks ties by lower rollout index, then lower position.
    flat_s = score_NT.flatten()
    order = torch.sort(flat_s, descending=True, stable=True).indices
    v, st = valid_NT.flatten()[order], strict_NT.flatten()[order]
    picked = torch.cat([order[st], order[v & ~st]])[:k].tolist()
    if not picked:
        return []
    points = [(idx // T, idx % T) for idx in picked]
    n = len(points)
    return points + [points[i % n] for i in range(k - n)]


@overload
def arpo_branch_probability(delta_entropy: float, tau: float = 0.5, beta: float = 0.2) -> float: ...
@overload
def arpo_branch_probability(delta_entropy: torch.Tensor, tau: float = 0.5, beta: float = 0.2) -> torch.Tensor: ...
def arpo_branch_probability(delta_entropy, tau=0.5, beta=0.2):
    """ARPO's fork probability after a tool result: ``P = clip(tau + beta * dH, 0, 1)``.

    ``dH`` is the normalised entropy change (the caller computes it); works on floats and tensors.
    Leaves out: the sampling itself and the row budget.
    """
    if isinstance(delta_entropy, torch.Tensor):
        return (tau + beta * delta_entropy).clamp(0.0, 1.0)
    x = float(delta_entropy)
    if math.isnan(x):
        raise ValueError("delta_entropy is NaN")
    return min(max(tau + beta * x, 0.0), 1.0)
