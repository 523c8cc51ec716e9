"""Rollout/trainer mismatch: truncated importance sampling of the trainer's over the engine's probabilities.

When rollouts come from an engine whose numerics are not the trainer's (vLLM's kernels, bf16 sampling), the
tokens were drawn from ``mu`` (the engine) while the PPO ratio is taken against ``pi_old`` (the trainer's
recomputed log-probs on the same weights). The token-level correction (TRL's
``vllm_importance_sampling_correction``, verl's rollout correction with ``rollout_is=token``) weights each
token's loss by ``w_t = min(pi_old(y_t) / mu(y_t), C)``, detached. Left out: sequence-level weights and
rejection (masking) variants.
"""

from __future__ import annotations

import torch


def truncated_is_weights(old_logp_BT: torch.Tensor, rollout_logp_BT: torch.Tensor, cap: float) -> torch.Tensor:
    """``w = min(exp(old_logp - rollout_logp), cap)`` per token, detached, float32 ([B, T], same shape).

    ``old_logp`` is the trainer's ``log pi_old``, ``rollout_logp`` the engine's ``log mu`` of the sampled
    tokens. The log-ratio is clamped to [-20, 20] before ``exp``; positions where both are 0 (padding) get 1.
    """
    if old_logp_BT.shape != rollout_logp_BT.shape:
        raise ValueError(f"shape mismatch: old_logp {tuple(old_logp_BT.shape)} vs rollout_logp "
                         f"{tuple(rollout_logp_BT.shape)}")
    if not cap > 0:
        raise ValueError(f"cap={cap} must be > 0 (the truncation C of min(pi/mu, C))")
    log_ratio = (old_logp_BT.detach().double() - rollout_logp_BT.detach().double()).clamp(-20.0, 20.0)
    return log_ratio.exp().clamp(max=cap).to(torch.float32)


def mismatch_metrics(old_logp_BT: torch.Tensor, rollout_logp_BT: torch.Tensor, mask_BT: torch.Tensor,
                     cap: float | None = None) -> dict[str, float]:
    """How far the engine's log-probs are from the trainer's on the tokens of ``mask_BT`` (verl's names).

    ``rollout_corr/logp_abs_diff``: mean ``|log pi_old - log mu|``; ``rollout_corr/kl``: ``KL(mu || pi_old)``
    by the k3 estimator ``E_mu[r - 1 - log r]``, ``r = pi_old / mu``; with ``cap``: ``rollout_corr/is_weight``
    (mean truncated weight) and ``rollout_corr/is_clipped_frac`` (share of tokens with ``r > cap``).
    Empty mask: an empty dict.
    """
    m = mask_BT != 0
    if not bool(m.any()):
        return {}
    d = (old_logp_BT.detach().double() - rollout_logp_BT.detach().double())[m].clamp(-20.0, 20.0)
    out = {"rollout_corr/logp_abs_diff": float(d.abs().mean()), "rollout_corr/kl": float((d.exp() - 1.0 - d).mean())}
    if cap is not None:
        out["rollout_corr/is_weight"] = float(d.exp().clamp(max=cap).mean())
        out["rollout_corr/is_clipped_frac"] = float((d.exp() > cap).double().mean())
    return out
