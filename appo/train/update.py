"""The policy update: PPO mini-batch steps over one collated batch (docs/algorithm.md 8).

:func:`ppo_update` is the only place the trainer's model gets gradients from RL. Per optimizer step
(a mini-batch of ``ppo_mini_batch_size`` prompts' rows) it accumulates over length-grouped
micro-batches, weighting each micro-batch's loss by its share of the mini-batch's loss tokens (or
rows, for the ``seq-mean-*`` modes), so the accumulated gradient equals the gradient of the
mini-batch loss computed in one piece.

Across processes (``dist``, :mod:`appo.distributed.ddp`): each rank holds its prompts' rows; its k-th
mini-batch is its part of the global k-th (``ppo_mini_batch_size / world_size`` prompts), the
normaliser is summed over ranks, each micro-batch's weight is multiplied by the world size (DDP and
FSDP2 average gradients over ranks), and every rank runs the same number of micro-batch passes, so the
gradient is that of the global mini-batch's token-mean loss. With one process nothing changes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from appo.core import aggregate, apply_future_kl, future_kl_scale, get_policy_loss, kl_penalty
from appo.core.rollout_correction import mismatch_metrics, truncated_is_weights
from appo.distributed.ddp import DistEnv
from appo.train.batching import select_rows
from appo.train.layout import Layout, check_layout_support, layout_micro_batches, micro_logprobs
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
    """Tokens per forward/backward (dynamic batch size): padded ones, or real ones in the ``packed`` and
    ``tree`` layouts; None uses ``micro_batch_rows``."""
    layout: Layout = "padded"
    """How each micro-batch's rows reach the model (:mod:`appo.train.layout`): ``padded``, ``packed``
    (``actor.use_remove_padding``) or ``tree`` (``actor.shared_prefix``); the trainer chooses it once per step
    and the old log-prob pass used the same."""
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
    old_logp_from_current: bool = False
    """Exactly on-policy step (one epoch, one mini-batch, rollouts from these weights): the old log-probs are
    the current ones, detached, and ``batch.old_logp_BR`` is not read (see :func:`on_policy_step`)."""
    rollout_is_cap: float = 0.0
    """> 0: weight each token's policy loss by ``min(pi_old / mu, cap)`` (:func:`truncated_is_weights`, ``mu``
    = the engine's ``batch.rollout_logp_BR``); 0: off. ``rollout_corr/*`` metrics are logged either way."""


def _mini_batches(batch: Batch, prompts_per_step: int, by_position: bool = False) -> list[torch.Tensor]:
    """Row indices of each mini-batch: the rows with loss tokens of ``prompts_per_step`` consecutive groups.
    One process: groups without loss tokens are dropped before chunking. ``by_position`` (several ranks):
    every group counts, so the k-th chunk is this rank's part of the global k-th mini-batch (it may be empty)."""
    group_B = batch.group_B
    if group_B is None:
        raise ValueError("the batch has no group_B (prompt index per row); build it with appo.train.batching.collate")
    trained = batch.loss_mask_BR.sum(1) > 0
    groups = sorted(set(group_B.tolist() if by_position else group_B[trained].tolist()))
    out = []
    for i in range(0, len(groups), prompts_per_step):
        chosen = torch.tensor(groups[i : i + prompts_per_step])
        rows = torch.nonzero(trained & torch.isin(group_B, chosen)).flatten()
        if len(rows) or by_position:
            out.append(rows)
    return out


def on_policy_step(opts: UpdateOptions, prompts_per_step: int, engine_shares_weights: bool,
                   model: torch.nn.Module) -> bool:
    """Whether old log-probs equal the update's current ones: one epoch, one mini-batch covering the step's
    ``prompts_per_step`` prompts, rollouts generated with the trainer's weights (``engine_shares_weights``),
    and no active dropout in ``model`` (train-mode forwards would then differ from the rollout's). Then
    ``pi_old = pi_theta`` at the only optimizer step, and a recomputed pass would only repeat the update's
    own forward (to float rounding)."""
    if opts.ppo_epochs != 1 or opts.ppo_mini_batch_size < prompts_per_step or not engine_shares_weights:
        return False
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return False
    config = getattr(getattr(model, "module", model), "config", None)
    rates = [v for k, v in (vars(config).items() if config is not None else ()) if k.endswith("dropout")]
    return not any(isinstance(v, (int, float)) and v > 0 for v in rates)


def _loss_units(mask_BR: torch.Tensor, seq_mode: bool) -> float:
    """What the loss averages over: trained rows (``seq-mean-*``) or loss tokens."""
    return float((mask_BR.sum(1) > 0).sum()) if seq_mode else float(mask_BR.sum())


def ppo_update(model, optimizer, batch: Batch, opts: UpdateOptions, scheduler=None,
               dist: DistEnv | None = None) -> dict[str, float]:
    """Run ``ppo_epochs`` passes of PPO mini-batch steps on ``batch``; returns mean metrics.

    Per micro-batch: ``logp = log pi_theta`` (with grad) -> advantages, optionally future-KL scaled
    (``A~ = A (1 + b f)``, f from ``future_kl_scale``, detached) -> ``loss = policy_loss(logp, old_logp,
    A~) + kl_coef * agg(kl(logp, ref_logp)) - entropy_coeff * agg(H)``, scaled by the micro-batch's share
    of the mini-batch. After each mini-batch: clip the global grad norm, ``optimizer.step()``. The
    scheduler (if any) steps once per call, i.e. once per training step as in verl. ``dist`` (several
    ranks; ``model`` then DDP- or FSDP2-wrapped): see the module docstring.
    The rollout/trainer mismatch (``batch.rollout_logp_BR``, the engine's log-probs, vs the
    trainer's old ones) is logged as ``rollout_corr/*``; ``opts.rollout_is_cap > 0`` multiplies the advantages
    by the truncated IS weight ``min(pi_old / mu, cap)`` (for ``ppo_clip`` exactly the token loss times w).
    """
    loss_fn = get_policy_loss(opts.policy_loss)
    dist = dist or DistEnv()
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, list[float]] = defaultdict(list)
    seq_mode = opts.loss_agg_mode.startswith("seq-mean")
    max_rows = None if opts.max_tokens else opts.micro_batch_rows
    check_layout_support(model, opts.layout)
    model.train()
    for _ in range(opts.ppo_epochs):
        for rows in _mini_batches(batch, opts.ppo_mini_batch_size // dist.world_size, by_position=dist.enabled):
            mini = select_rows(batch, rows).batch if len(rows) else None
            micro = [] if mini is None else layout_micro_batches(mini, opts.layout, opts.max_tokens, max_rows)
            total = dist.all_sum(_loss_units(mini.loss_mask_BR, seq_mode) if mini is not None else 0.0)
            if total == 0:  # no rank has loss tokens here (several ranks only: one process never builds it)
                continue
            optimizer.zero_grad(set_to_none=True)
            micro = dist.lockstep(micro)  # the same number of passes on every rank (None: none left here)
            for i, m in enumerate(micro):
                with dist.grad_sync(model, last=i == len(micro) - 1):  # DDP: all-reduce on the last pass only
                    units = 0.0 if m is None else _loss_units(m.batch.loss_mask_BR, seq_mode)
                    share = units / total * dist.loss_scale()  # x world size: ranks' gradients are averaged
                    if share > 0:
                        (_micro_loss(model, m, opts, loss_fn, sums) * share).backward()
                    elif dist.enabled:  # a zero-weight pass: the collectives need this rank all the same
                        _idle_pass(model, batch)
            norm = torch.nn.utils.clip_grad_norm_(params, opts.grad_clip if opts.grad_clip > 0 else float("inf"))
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: a DTensor
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


def _micro_loss(model, m, opts: UpdateOptions, loss_fn, sums: dict[str, list[float]]) -> torch.Tensor:
    """The loss of one micro-batch (its own aggregation over its tokens/rows); appends its metrics to ``sums``."""
    b = m.batch
    logp, ent = micro_logprobs(model, m, opts.temperature, with_entropy=True, entropy_grad=opts.entropy_coeff != 0)
    dev = logp.device  # the batch is collated on the CPU; the loss runs where the model is (CUDA: move it there)
    mask, adv = b.loss_mask_BR.to(dev), b.advantages_BR.to(dev)
    old_logp = logp.detach() if opts.old_logp_from_current else b.old_logp_BR.to(dev)
    if opts.future_kl:
        f = future_kl_scale(logp.detach(), old_logp, adv, mask)
        adv = apply_future_kl(adv, f, opts.future_kl_coef)
        sums["actor/future_kl_scale"].append(float((f * mask).sum() / mask.sum().clamp(min=1)))
    rollout_logp = b.rollout_logp_BR
    if rollout_logp is not None:  # the trainer-vs-engine mismatch; scaling A by w > 0 scales ppo_clip's token loss by w
        rollout_logp = rollout_logp.to(dev)
        cap = opts.rollout_is_cap if opts.rollout_is_cap > 0 else None
        for k, v in mismatch_metrics(old_logp, rollout_logp, mask, cap).items():
            sums[k].append(v)
        if cap is not None:
            adv = adv * truncated_is_weights(old_logp, rollout_logp, cap).to(adv.dtype)
    loss, metrics = loss_fn(logp, old_logp, adv, mask, agg=opts.loss_agg_mode, clip_ratio_low=opts.clip_ratio_low,
                            clip_ratio_high=opts.clip_ratio_high, clip_ratio_c=opts.clip_ratio_c)
    if opts.kl_loss_coef and b.ref_logp_BR is not None:
        kl = aggregate(kl_penalty(logp, b.ref_logp_BR.to(dev), opts.kl_loss_type), mask, opts.loss_agg_mode)
        loss = loss + opts.kl_loss_coef * kl
        sums["actor/kl_loss"].append(float(kl.detach()))
    if opts.entropy_coeff:
        loss = loss - opts.entropy_coeff * aggregate(ent, mask, opts.loss_agg_mode)
    sums["actor/entropy"].append(float((ent.detach() * mask).sum() / mask.sum().clamp(min=1)))
    for k, v in metrics.items():
        sums[k].append(v)
    return loss


def _idle_pass(model: torch.nn.Module, batch: Batch) -> None:
    """A zero-weight forward/backward over the shortest row of ``batch``: it takes part in the
    collectives of a micro-batch this rank does not have (DDP, FSDP2), and adds nothing to any gradient."""
    lengths = batch.attention_mask_BL.sum(1)
    row = select_rows(batch, [int(torch.argmin(lengths))])
    logp, _ = compute_logprobs(model, row)
    (logp.sum() * 0.0).backward()
