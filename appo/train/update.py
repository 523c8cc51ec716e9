"""The policy update: PPO mini-batch steps over one collated batch (DESIGN 1.7-1.8).

:func:`ppo_update` is the only place the trainer's model gets gradients from RL. Per optimizer step
(a mini-batch of ``ppo_mini_batch_size`` prompts' rows) it accumulates over length-grouped
micro-batches, weighting each micro-batch's loss by its share of the mini-batch's loss tokens (or
rows, for the ``seq-mean-*`` modes), so the accumulated gradient equals the gradient of the
mini-batch loss computed in one piece.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from appo.core import aggregate, apply_future_kl, future_kl_scale, get_policy_loss, kl_penalty
from appo.train.batching import select_rows, split_micro_batches
from appo.train.logprobs import compute_logprobs
from appo.types import Batch


@dataclass(frozen=True)
class UpdateOptions:
    """What the update needs to know besides the batch (a flat view of ``actor`` + ``algorithm``)."""

    ppo_mini_batch_size: int = 8
    """Prompts per optimizer step (verl's meaning: rows = this many prompts' rows)."""
    ppo_epochs: int = 1
    """Passes over the batch."""
    micro_batch_rows: int = 4
    """Rows per forward/backward (ignored with ``max_tokens``)."""
    max_tokens: int | None = None
    """Padded tokens per forward/backward (dynamic batch size); None uses ``micro_batch_rows``."""
    loss_agg_mode: str = "token-mean"
    """Aggregation of the per-token loss."""
    policy_loss: str = "ppo_clip"
    """Name in ``appo.core.POLICY_LOSSES``."""
    clip_ratio_low: float = 0.2
    """PPO lower clip eps."""
    clip_ratio_high: float = 0.28
    """PPO upper clip eps (clip-higher)."""
    clip_ratio_c: float = 3.0
    """Dual-clip constant for negative advantages."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = no clipping)."""
    kl_loss_coef: float = 0.0
    """Weight of the KL-to-reference term (0 = off; needs ``ref_logp_BR``)."""
    kl_loss_type: str = "low_var_kl"
    """KL estimator (k1, k2, low_var_kl)."""
    entropy_coeff: float = 0.0
    """Entropy bonus weight (0 = off, the paper's setting)."""
    future_kl: bool = False
    """Scale advantages with APPO's future-KL factor: ``A * (1 + b f)``."""
    future_kl_coef: float = 1.0
    """b in ``A * (1 + b f)``."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are of ``softmax(logits / temperature)``."""


def _mini_batches(batch: Batch, prompts_per_step: int) -> list[torch.Tensor]:
    """Row indices of each mini-batch: rows of ``prompts_per_step`` consecutive groups that have loss tokens."""
    group_B = batch.extras["group_B"]
    trained = batch.loss_mask_BR.sum(1) > 0
    groups = sorted(set(group_B[trained].tolist()))
    out = []
    for i in range(0, len(groups), prompts_per_step):
        chosen = torch.tensor(groups[i : i + prompts_per_step])
        rows = torch.nonzero(trained & torch.isin(group_B, chosen)).flatten()
        if len(rows):
            out.append(rows)
    return out


def ppo_update(model, optimizer, batch: Batch, opts: UpdateOptions, scheduler=None) -> dict[str, float]:
    """Run ``ppo_epochs`` passes of PPO mini-batch steps on ``batch``; returns mean metrics.

    Per micro-batch: ``logp = log pi_theta`` (with grad) -> advantages, optionally future-KL scaled
    (``A~ = A (1 + b f)``, f from ``future_kl_scale``, detached) -> ``loss = policy_loss(logp, old_logp,
    A~) + kl_coef * agg(kl(logp, ref_logp)) - entropy_coeff * agg(H)``, scaled by the micro-batch's share
    of the mini-batch. After each mini-batch: clip the global grad norm, ``optimizer.step()``. The
    scheduler (if any) steps once per call, i.e. once per training step as in verl.
    Leaves out: rollout importance-sampling corrections (engine and trainer share the model here).
    """
    loss_fn = get_policy_loss(opts.policy_loss)
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, list[float]] = defaultdict(list)
    seq_mode = opts.loss_agg_mode.startswith("seq-mean")
    model.train()
    for _ in range(opts.ppo_epochs):
        for rows in _mini_batches(batch, opts.ppo_mini_batch_size):
            mini = select_rows(batch, rows).batch
            micro = split_micro_batches(mini, max_tokens=opts.max_tokens,
                                        max_rows=None if opts.max_tokens else opts.micro_batch_rows)
            total = float((mini.loss_mask_BR.sum(1) > 0).sum()) if seq_mode else float(mini.loss_mask_BR.sum())
            optimizer.zero_grad(set_to_none=True)
            for m in micro:
                b = m.batch
                mask = b.loss_mask_BR
                share = (float((mask.sum(1) > 0).sum()) if seq_mode else float(mask.sum())) / total
                if share == 0:
                    continue
                logp, ent = compute_logprobs(model, b, opts.temperature, with_entropy=True,
                                             entropy_grad=opts.entropy_coeff != 0)
                adv = b.advantages_BR
                if opts.future_kl:
                    f = future_kl_scale(logp.detach(), b.old_logp_BR, adv, mask)
                    adv = apply_future_kl(adv, f, opts.future_kl_coef)
                    sums["actor/future_kl_scale"].append(float((f * mask).sum() / mask.sum().clamp(min=1)))
                loss, metrics = loss_fn(logp, b.old_logp_BR, adv, mask, agg=opts.loss_agg_mode,
                                        clip_ratio_low=opts.clip_ratio_low, clip_ratio_high=opts.clip_ratio_high,
                                        clip_ratio_c=opts.clip_ratio_c)
                if opts.kl_loss_coef and b.ref_logp_BR is not None:
                    kl = aggregate(kl_penalty(logp, b.ref_logp_BR, opts.kl_loss_type), mask, opts.loss_agg_mode)
                    loss = loss + opts.kl_loss_coef * kl
                    sums["actor/kl_loss"].append(float(kl.detach()))
                if opts.entropy_coeff:
                    loss = loss - opts.entropy_coeff * aggregate(ent, mask, opts.loss_agg_mode)
                (loss * share).backward()
                sums["actor/entropy"].append(float((ent.detach() * mask).sum() / mask.sum().clamp(min=1)))
                for k, v in metrics.items():
                    sums[k].append(v)
            norm = torch.nn.utils.clip_grad_norm_(params, opts.grad_clip if opts.grad_clip > 0 else float("inf"))
            sums["actor/grad_norm"].append(float(norm))
            if torch.isfinite(norm):
                optimizer.step()
            else:
                sums["actor/skipped_steps"].append(1.0)
            optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    out = {k: sum(v) / len(v) for k, v in sums.items()}
    out["actor/lr"] = float(optimizer.param_groups[0]["lr"])
    return out
