"""Teacher-forced scoring: exact per-token log-probs and entropies of given responses under a model.

For a sequence ``x`` with response start ``s`` and temperature ``T`` this returns, for every response
position ``t`` in ``[s, len(x))``:

- ``logp_t = log softmax(z_{t-1} / T)[x_t]`` where ``z_{t-1}`` are the logits after ``x[:t]``;
- ``H_t = -sum_v pi_v log pi_v`` with ``pi = softmax(z_{t-1} / T)`` (the exact entropy of the distribution
  that produced ``x_t``).

``T == 0`` is scored at temperature 1, matching ``HFEngine`` (greedy rows report the model's own
distribution). This is what the trainer needs for old/anchor/reference log-probs and what the Branching
Score needs for ``delta_k`` and ``H_t``; it runs without gradients (the trainer's differentiable
log-probs come from its own forward).

Batching: sequences are sorted by length, left-padded into batches of ``batch_size`` with an explicit 4D
mask and per-row positions (pad queries attend only to themselves, so no mask row is empty), and only the
last ``max response length + 1`` positions' logits are computed (``logits_to_keep``). Peak memory of the
logits is about ``batch_size * max_response_len * vocab * 4`` bytes.
"""

from __future__ import annotations

from typing import Sequence

import torch

from appo.core.token_stats import token_stats
from appo.models.lm_logits import keep_logits


def score_sequences(
    model,
    sequences: Sequence[Sequence[int]],
    response_starts: Sequence[int],
    temperature: float = 1.0,
    batch_size: int = 8,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per sequence ``(logp_R, entropy_R)`` (float32, CPU) over its response ``sequence[start:]``; see module doc."""
    if len(sequences) != len(response_starts):
        raise ValueError(f"sequences ({len(sequences)}) and response_starts ({len(response_starts)}) differ in length")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, (seq, s) in enumerate(zip(sequences, response_starts)):
        if not 1 <= s <= len(seq):
            raise ValueError(f"response_starts[{i}] = {s} must be in [1, len(sequences[{i}]) = {len(seq)}]: the "
                             "first response token needs at least one token before it")
    params = next(model.parameters())
    device, dtype = params.device, params.dtype if params.is_floating_point() else torch.float32
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    mask_dtype = torch.bool if impl == "sdpa" else dtype
    temp = temperature if temperature > 0 else 1.0

    results: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b0 in range(0, len(order), batch_size):
                idx = order[b0 : b0 + batch_size]
                seqs = [list(sequences[i]) for i in idx]
                T = max(len(s) for s in seqs)
                K = max(len(s) - response_starts[i] for s, i in zip(seqs, idx)) + 1
                K = min(K, T)
                ids_BT = torch.zeros(len(seqs), T, dtype=torch.long)
                real_BT = torch.zeros(len(seqs), T, dtype=torch.bool)
                for b, s in enumerate(seqs):
                    ids_BT[b, T - len(s) :] = torch.tensor(s, dtype=torch.long)
                    real_BT[b, T - len(s) :] = True
                pos_BT = (real_BT.long().cumsum(-1) - 1).clamp(min=0)
                causal_TT = torch.ones(T, T, dtype=torch.bool).tril()
                allowed = (causal_TT[None] & real_BT[:, None, :]) | torch.eye(T, dtype=torch.bool)[None]
                mask = allowed[:, None] if mask_dtype == torch.bool else torch.where(
                    allowed[:, None], torch.zeros((), dtype=mask_dtype), torch.finfo(mask_dtype).min)
                logits = keep_logits(model, K, input_ids=ids_BT.to(device), attention_mask=mask.to(device),
                                     position_ids=pos_BT.to(device), use_cache=False)
                # logits column c (of the last K) predicts the token at padded column T - K + c + 1
                logp_BK, ent_BK = token_stats(logits[:, :-1], ids_BT[:, T - K + 1 :].to(device), temp)
                for b, (s, i) in enumerate(zip(seqs, idx)):
                    n = len(s) - response_starts[i]
                    results[i] = (logp_BK[b, K - 1 - n :].cpu(), ent_BK[b, K - 1 - n :].cpu())
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]
