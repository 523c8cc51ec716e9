"""Supervised fine-tuning on token sequences with a loss mask (the warm start before RL).

Loss (token mean over the trained tokens of a step):
``L = -sum_{b,t} m[b,t] * log p(x[b,t] | x[b,<t]) / sum_{b,t} m[b,t]``, with ``m`` the example's loss mask
(prompt and tool-result tokens 0, model-written tokens 1; position 0 has no prefix and is never trained).
AdamW, global-norm gradient clipping, right padding, seeded shuffling and dropout (the caller's global
RNG state is left untouched), optional gradient accumulation over micro-batches that reproduces the
full-batch token mean exactly. Left out: packing several examples into one row, LR schedules.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from appo.models.precision import compute_autocast

MaskedIds = tuple[Sequence[int], Sequence[int]]
"""One demonstration: (token ids, loss mask per token); not :class:`appo.types.Example`, the question record."""


def masked_nll(
    logits_BLV: torch.Tensor, input_ids_BL: torch.Tensor, loss_mask_BL: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of -log p over trained tokens, number of trained tokens)``: logits at t predict token t + 1,
    counted where ``loss_mask[t + 1] == 1`` (in fp32)."""
    logits = logits_BLV[:, :-1].float()
    targets = input_ids_BL[:, 1:]
    mask = loss_mask_BL[:, 1:].to(logits.dtype)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (nll.view_as(mask) * mask).sum(), mask.sum()


def _pad(examples: Sequence[MaskedIds], rows: Sequence[int], pad_id: int, device: torch.device):
    L = max(len(examples[i][0]) for i in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), L), dtype=torch.long)
    mask = torch.zeros((len(rows), L))
    for j, i in enumerate(rows):
        x, m = examples[i]
        ids[j, : len(x)] = torch.tensor(list(x), dtype=torch.long)
        attn[j, : len(x)] = 1
        mask[j, : len(x)] = torch.tensor(list(m), dtype=torch.float32)
    return ids.to(device), attn.to(device), mask.to(device)


def sft_train(
    model: torch.nn.Module,
    examples: Sequence[MaskedIds],
    *,
    lr: float = 1e-4,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 8,
    micro_batch_size: int | None = None,
    grad_clip: float = 1.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    pad_id: int | None = None,
    log_fn: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train ``model`` in place on ``(input_ids, loss_mask)`` examples; give ``epochs`` or ``steps``.

    Each step takes ``batch_size`` examples in a seeded shuffled order (the last batch of an epoch may be
    smaller), accumulates over ``micro_batch_size`` rows at a time, clips the gradient norm to
    ``grad_clip`` and takes one AdamW step over the parameters that require grad (so LoRA trains only
    its adapters). ``log_fn(step, {"sft/loss", "sft/grad_norm", "sft/tokens", "sft/lr"})`` is called
    after each step. Returns ``{"epoch_loss": [...], "step_loss": [...], "steps", "tokens", "time_s"}``
    where ``epoch_loss`` is the token-weighted mean loss of each (possibly partial) epoch.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("sft_train needs exactly one of epochs=... or steps=...")
    if not examples:
        raise ValueError("sft_train got no examples")
    for i, (x, m) in enumerate(examples):
        if len(x) != len(m) or len(x) < 2:
            raise ValueError(f"example {i}: input_ids ({len(x)}) and loss_mask ({len(m)}) must have the same "
                             "length >= 2")
    if not any(any(m[1:]) for _, m in examples):
        raise ValueError("no example has a trained token (loss_mask is 0 everywhere after position 0)")
    if batch_size < 1 or (micro_batch_size is not None and micro_batch_size < 1):
        raise ValueError(f"batch_size={batch_size} and micro_batch_size={micro_batch_size} must be >= 1")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True")
    if pad_id is None:
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
    device = params[0].device
    n = len(examples)
    per_epoch = math.ceil(n / batch_size)
    total = steps if steps is not None else epochs * per_epoch
    micro = micro_batch_size or batch_size
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train()
    epoch_loss, step_loss = [], []
    tokens_total, t0 = 0, time.perf_counter()
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        step = 0
        while step < total:
            order = torch.randperm(n, generator=gen).tolist()
            ep_nll = ep_tok = 0.0
            for start in range(0, n, batch_size):
                if step >= total:
                    break
                rows = order[start : start + batch_size]
                n_tok = sum(float(sum(examples[i][1][1:])) for i in rows)
                opt.zero_grad(set_to_none=True)
                nll_sum = 0.0
                for ms in range(0, len(rows), micro):
                    ids, attn, mask = _pad(examples, rows[ms : ms + micro], pad_id, device)
                    with compute_autocast(model):  # mixed precision (model.compute_dtype); backward outside
                        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
                    s, _ = masked_nll(logits, ids, mask * attn)
                    if n_tok > 0:
                        (s / n_tok).backward()
                    nll_sum += float(s.detach())
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip)) if n_tok > 0 else 0.0
                if n_tok > 0:
                    opt.step()
                step += 1
                loss = nll_sum / n_tok if n_tok else 0.0
                step_loss.append(loss)
                ep_nll, ep_tok = ep_nll + nll_sum, ep_tok + n_tok
                tokens_total += int(n_tok)
                if log_fn is not None:
                    log_fn(step, {"sft/loss": loss, "sft/grad_norm": grad_norm, "sft/tokens": n_tok, "sft/lr": lr})
            epoch_loss.append(ep_nll / ep_tok if ep_tok else 0.0)
    model.train(was_training)
    return {"epoch_loss": epoch_loss, "step_loss": step_loss, "steps": step, "tokens": tokens_total,
            "time_s": time.perf_counter() - t0}
