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

Batching, ``sdpa`` models (issue 26): the sequences, in the order given, become one token trie per
forward (:func:`appo.models.tree_attention.trie_of_sequences`: a prompt shared by a group's rows, or a
branch's copy of its parent's prefix, is computed once), run as one sequence with depth positions and the
sparse root-path attention of :mod:`appo.models.tree_attention`; only the nodes that predict a response
token reach the LM head. A forward takes rows until it holds :data:`TRIE_MAX_NODES` nodes or
:data:`TRIE_MAX_LOGITS` logits (``kept positions x vocab``), so ``batch_size`` does not apply. Should the
model not pass the layout down to its attention (every layer is counted), the batch is scored again the
padded way. Other attention implementations (``eager``): sequences sorted by length, left-padded into
batches of ``batch_size`` with an explicit 4D mask and per-row positions (pad queries attend only to
themselves, so no mask row is empty), and only the last ``max response length + 1`` positions' logits
are computed (``logits_to_keep``); peak memory of the logits about ``batch_size * max_response_len *
vocab * 4`` bytes. Both give the same numbers to float rounding (tests/engine/test_scoring.py).
"""

from __future__ import annotations

from typing import Sequence

import torch

from appo.core.token_stats import token_stats
from appo.models.lm_logits import keep_logits
from appo.models.tree_attention import layout_from_parents, tree_forward_logits, trie_of_sequences

TRIE_MAX_NODES = 8192
"""Most trie nodes (tokens after sharing) one scoring forward holds."""

TRIE_MAX_LOGITS = 1 << 24
"""Most kept logits (positions x vocabulary, float32: 64 MB) one scoring forward holds."""


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
            batches = [order[b0 : b0 + batch_size] for b0 in range(0, len(order), batch_size)]
            if impl == "sdpa":
                vocab = int(getattr(model.config, "vocab_size", 0) or 1)
                batches = []
                for idx in _trie_batches(sequences, response_starts, vocab):
                    if not _score_trie(model, sequences, response_starts, idx, temp, device, results):
                        batches += [idx[b0 : b0 + batch_size] for b0 in range(0, len(idx), batch_size)]
            for idx in batches:
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


def _trie_batches(sequences, starts, vocab: int) -> list[list[int]]:
    """Sequence indices in order, cut where a forward would pass :data:`TRIE_MAX_NODES` tokens (counted before
    sharing: an upper bound) or :data:`TRIE_MAX_LOGITS` kept logits."""
    out: list[list[int]] = []
    nodes = logits = 0
    for i, (seq, s) in enumerate(zip(sequences, starts)):
        n, k = len(seq), (len(seq) - s) * vocab
        if out and out[-1] and (nodes + n > TRIE_MAX_NODES or logits + k > TRIE_MAX_LOGITS):
            out.append([])
            nodes = logits = 0
        if not out:
            out.append([])
        out[-1].append(i)
        nodes, logits = nodes + n, logits + k
    return out


def _score_trie(model, sequences, starts, idx: list[int], temp: float, device, results) -> bool:
    """Score ``sequences[idx]`` as one trie (module docstring) into ``results``; False when the model did not
    take the sparse path (nothing written)."""
    trie = trie_of_sequences([sequences[i] for i in idx])
    layout = layout_from_parents(trie.parent_S, trie.depth_S)
    nodes_K, targets_K, spans = [], [], []
    for path, i in zip(trie.paths, idx):
        s = starts[i]
        spans.append((i, len(nodes_K), len(path) - s))
        nodes_K += path[s - 1 : len(path) - 1]  # the node before response token t predicts it
        targets_K += list(sequences[i][s:])
    if not nodes_K:
        for i, _, _ in spans:
            results[i] = (torch.zeros(0), torch.zeros(0))
        return True
    keep_U, u_K = torch.unique(torch.tensor(nodes_K), sorted=True, return_inverse=True)
    ids = torch.tensor([trie.ids_S], device=device)
    pos = torch.tensor([trie.depth_S], device=device)
    logits_1UV, sparse = tree_forward_logits(model, keep_U.to(device), ids, pos, None, layout)
    if not sparse:
        return False
    logp_K, ent_K = token_stats(logits_1UV[0, u_K.to(device)], torch.tensor(targets_K, device=device), temp)
    logp_K, ent_K = logp_K.cpu(), ent_K.cpu()
    for i, a, n in spans:
        results[i] = (logp_K[a : a + n].clone(), ent_K[a : a + n].clone())
    return True
