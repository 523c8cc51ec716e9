"""Sparse attention over a token trie: each node attends to its own root path only, in padded chunks.

A trie layout (:mod:`appo.train.shared_prefix` for the update, :func:`trie_of_sequences` for scoring)
runs the rows of a group as one sequence of nodes, node ``i`` attending to node ``j`` iff ``j`` is
``i`` or an ancestor of ``i``. Dense attention with that mask computes ``S x S`` pairs per group, most of
them masked (the rows' responses do not see each other). This module computes the same attention over
the pairs that count:

- **Runs.** Nodes are numbered in creation order, so a row's new nodes (those no earlier row created)
  are consecutive and each is the child of the previous: a run. A run is cut into chunks of at most
  ``chunk`` nodes.
- **Chunk attention.** The queries of a chunk are its nodes; its keys are the root path of its last
  node (depth ``0 .. d_last``, in depth order, since an ancestor is created before its descendants);
  a query at depth ``d`` sees keys ``0 .. d``. All chunks go through one ``scaled_dot_product_attention``
  call, padded to ``[M, C, K]`` (pad queries see key 0, their output is dropped; pad keys are masked).
- **Roots** (nodes without a parent: a prompt's first token, padding nodes) see only themselves; their
  output is their value vector, with no attention at all.

    out_i = sum_{j in path(i)} softmax_j(q_i . k_j * scale) v_j

is what the dense masked attention computes too, so outputs agree to float rounding (the reduction runs
over a different blocking). Cost: ``M * C * K`` pairs instead of ``G * S^2``; e.g. GRPO on the tiny model
(4 groups of a 57-token prompt and 8 responses of up to 64 tokens) 36 chunks x 64 x 125 = 0.29M
against 4 x 570^2 = 1.3M pairs per head.

How it is reached: :func:`install` wraps transformers' ``sdpa`` attention function once (idempotent) with
a function that takes the layout as the keyword argument ``appo_tree`` (models pass extra forward
keywords down to their attention function) and runs the original ``sdpa`` otherwise, unchanged.
:func:`tree_forward_logits` counts the attention calls that used the layout and reports whether every
layer did; when one did not (a model that drops the keyword), the callers discard that forward and run
their dense path (:func:`tree_response_logits`: the ``[G, S]`` ancestor mask; ``appo.engine.scoring``: the
padded batches), so the numbers never depend on it. Gradient checkpointing recomputes a layer with the
same keywords, so the recompute takes the same path (tested). Left out: ``eager`` attention (callers keep
the dense path), sliding windows, dropout and attention softcapping (the wrapper defers to ``sdpa`` there;
the caller then sees that the layout was not used).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 64
"""Query nodes per chunk (longer runs are cut): a response of up to 64 tokens is one chunk. The tiny grpo update
took about the same time at 32, 64 and 128 (one run under load; not tuned further)."""


@dataclass(frozen=True)
class TreeAttentionLayout:
    """Index tensors of one trie layout ``[G, S]`` (flat node ``n = g * S + s``); see the module docstring."""

    q_idx_MC: torch.Tensor
    """Flat node of each chunk's query slot (0 at padding), long [M, C]."""
    k_idx_MK: torch.Tensor
    """Flat node of each chunk's key slot, the root path of its last node (0 at padding), long [M, K]."""
    mask_M1CK: torch.Tensor
    """``mask[m, 0, c, k]``: query slot c sees key slot k, bool [M, 1, C, K]."""
    src_N: torch.Tensor
    """Per flat node, where its output comes from: ``m * C + c`` (a chunk slot) or ``M * C + n`` (a root:
    its own value), long [G * S]."""
    nodes: int
    """``G * S``."""

    def to(self, device) -> TreeAttentionLayout:
        """The same layout on ``device``."""
        return TreeAttentionLayout(self.q_idx_MC.to(device), self.k_idx_MK.to(device), self.mask_M1CK.to(device),
                                   self.src_N.to(device), self.nodes)


def layout_from_parents(parent_N: list[int], depth_N: list[int], chunk: int = DEFAULT_CHUNK) -> TreeAttentionLayout:
    """The chunked layout of flat nodes with ``parent_N[n]`` (flat index, -1 for a root) and ``depth_N[n]``.

    Requires creation order (a parent before its children, so ``parent_N[n] < n``) and ``depth`` = the
    parent's depth + 1; raises ``ValueError`` otherwise."""
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    N = len(parent_N)
    chunks: list[list[int]] = []
    for n in range(N):
        p = parent_N[n]
        if p < 0:
            continue
        if not p < n or depth_N[n] != depth_N[p] + 1:
            raise ValueError(f"node {n}: parent {p} must come before it and be one level up (creation order)")
        if p == n - 1 and parent_N[p] >= 0 and chunks and chunks[-1][-1] == p and len(chunks[-1]) < chunk:
            chunks[-1].append(n)
        else:
            chunks.append([n])
    paths = []
    for ch in chunks:
        path, n = [], ch[-1]
        while n >= 0:
            path.append(n)
            n = parent_N[n]
        paths.append(path[::-1])
    M = len(chunks)
    C = max((len(c) for c in chunks), default=1)
    K = max((len(p) for p in paths), default=1)
    q_idx = torch.tensor([c + [0] * (C - len(c)) for c in chunks] or [[0]], dtype=torch.long)[:M]
    k_idx = torch.tensor([p + [0] * (K - len(p)) for p in paths] or [[0]], dtype=torch.long)[:M]
    n_M = torch.tensor([len(c) for c in chunks], dtype=torch.long)
    first_M = torch.tensor([len(p) - len(c) for c, p in zip(chunks, paths)], dtype=torch.long)  # first query's slot
    c_C, k_K = torch.arange(C), torch.arange(K)
    real_MC = c_C[None, :] < n_M[:, None]
    # a real query slot c sees key slots 0 .. first + c (keys are in depth order); a pad slot sees key slot 0
    mask = torch.where(real_MC[:, :, None], k_K[None, None, :] <= (first_M[:, None] + c_C[None, :])[:, :, None],
                       k_K[None, None, :] == 0)
    src_list = list(range(M * C, M * C + N))
    for m, ch in enumerate(chunks):
        for c, n in enumerate(ch):
            src_list[n] = m * C + c
    src = torch.tensor(src_list, dtype=torch.long)
    return TreeAttentionLayout(q_idx, k_idx, mask[:, None], src, N)


def _flat_parents(allowed_GSS: torch.Tensor, position_ids_GS: torch.Tensor) -> torch.Tensor | None:
    """Flat parent index of every node of a ``[G, S]`` trie (-1 for a root) read off its ancestor mask, or None
    when the mask is not a trie with ``depth = number of ancestors`` (see :func:`layout_from_mask`)."""
    G, S, _ = allowed_GSS.shape
    a = allowed_GSS.cpu()
    pos = position_ids_GS.cpu()
    parent_cand = a & (pos[:, None, :] == pos[:, :, None] - 1)  # [G, S, S]: the ancestor one level up
    has = parent_cand.any(-1)
    if (parent_cand.sum(-1) > 1).any() or (a.sum(-1) != torch.where(has, pos + 1, 1)).any():
        return None
    local = parent_cand.to(torch.uint8).argmax(-1)
    return torch.where(has, local + torch.arange(G)[:, None] * S, torch.full_like(local, -1)).reshape(-1)


def layout_from_mask(allowed_GSS: torch.Tensor, position_ids_GS: torch.Tensor,
                     chunk: int = DEFAULT_CHUNK) -> TreeAttentionLayout | None:
    """The layout of a trie given as its ancestor mask (``allowed[g, i, j]``: j is i or an ancestor of i) and
    node depths; None when the mask is not a creation-ordered trie (the caller keeps dense attention)."""
    parent = _flat_parents(allowed_GSS, position_ids_GS)
    if parent is None:
        return None
    try:
        return layout_from_parents(parent.tolist(), position_ids_GS.cpu().reshape(-1).tolist(), chunk)
    except ValueError:
        return None


def tree_attention(query_BHSD: torch.Tensor, key_BHSD: torch.Tensor, value_BHSD: torch.Tensor,
                   layout: TreeAttentionLayout, scaling: float | None) -> torch.Tensor:
    """Attention of every trie node over its root path (module docstring); returns ``[G, S, H, D]`` (the
    layout transformers' attention functions return)."""
    G, H, S, D = query_BHSD.shape
    Hk = key_BHSD.shape[1]
    own = value_BHSD.transpose(1, 2).reshape(G * S, Hk, -1)
    own = own if H == Hk else own.repeat_interleave(H // Hk, dim=1)  # a root's output: its value
    if layout.q_idx_MC.shape[0] == 0:  # roots only
        return own.view(G, S, H, -1)
    q_N = query_BHSD.transpose(1, 2).reshape(G * S, H, D)
    k_N = key_BHSD.transpose(1, 2).reshape(G * S, Hk, D)
    v_N = value_BHSD.transpose(1, 2).reshape(G * S, Hk, D)
    q = q_N[layout.q_idx_MC].transpose(1, 2)  # [M, H, C, D]
    k = k_N[layout.k_idx_MK].transpose(1, 2)  # [M, Hk, K, D]
    v = v_N[layout.k_idx_MK].transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.mask_M1CK, scale=scaling, enable_gqa=H != Hk)
    M, _, C, _ = o.shape
    out = torch.cat([o.transpose(1, 2).reshape(M * C, H, D), own]).index_select(0, layout.src_N)
    return out.view(G, S, H, D)


_STATE = {"installed": False, "calls": 0}


def install() -> None:
    """Wrap transformers' ``sdpa`` attention once so a forward given ``appo_tree=<layout>`` runs
    :func:`tree_attention`; without that keyword the original function runs, unchanged."""
    if _STATE["installed"]:
        return
    from transformers.modeling_utils import AttentionInterface

    original = AttentionInterface._global_mapping["sdpa"]

    def sdpa_or_tree(module, query, key, value, attention_mask, *args, **kwargs):
        layout = kwargs.pop("appo_tree", None)
        if layout is None:  # every other caller: the original, with its arguments as given
            return original(module, query, key, value, attention_mask, *args, **kwargs)
        dropout = args[0] if args else kwargs.get("dropout", 0.0)
        scaling = args[1] if len(args) > 1 else kwargs.get("scaling")
        if dropout or kwargs.get("softcap") is not None or getattr(module, "sliding_window", None):
            return original(module, query, key, value, attention_mask, *args, **kwargs)
        _STATE["calls"] += 1
        return tree_attention(query, key, value, layout, scaling), None

    sdpa_or_tree.appo_original = original
    AttentionInterface.register("sdpa", sdpa_or_tree)
    _STATE["installed"] = True


def tree_forward_logits(model: torch.nn.Module, keep: torch.Tensor, input_ids_GS: torch.Tensor,
                        position_ids_GS: torch.Tensor, mask, layout: TreeAttentionLayout | None
                        ) -> tuple[torch.Tensor, bool]:
    """``(logits [G, len(keep), V], sparse)``: the model's forward over a trie (dense ``mask`` given too, see
    the module docstring), through :func:`tree_attention` when ``layout`` is given; ``sparse`` says whether
    every attention layer took the sparse path."""
    from appo.models.lm_logits import keep_logits

    if layout is None:
        return keep_logits(model, keep, input_ids=input_ids_GS, position_ids=position_ids_GS, attention_mask=mask,
                           use_cache=False), False
    install()
    before = _STATE["calls"]
    logits = keep_logits(model, keep, input_ids=input_ids_GS, position_ids=position_ids_GS, attention_mask=mask,
                         use_cache=False, appo_tree=layout.to(input_ids_GS.device))
    config = getattr(getattr(model, "module", model), "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    return logits, layers is not None and _STATE["calls"] - before == layers


SPARSE_PAIR_COST = 2.5
"""Cost of one attention pair of :func:`tree_attention` (padded chunk slot, with its gathers and their
scatter-add backward) relative to one pair of dense flash attention under the ancestor mask; measured on the
tiny model's trie (``perf/tree_attention_kernels.py``: 4.0x fewer pairs took 0.62x the time)."""


def sparse_pays(layout: TreeAttentionLayout, groups: int, nodes: int) -> bool:
    """Whether the chunked attention (``M x C x K`` slots, each :data:`SPARSE_PAIR_COST`) is cheaper than dense
    attention over ``groups`` rows of ``nodes`` nodes (``G x S^2`` pairs). Long responses under a shared
    prompt win (the tiny bench's 4 x 8 x 64 tokens: 0.29M slots against 1.3M pairs); short ones padded to a
    chunk do not (the study's 4 x 8 x ~30 tokens under a 53-token prompt: 0.19M slots against 0.18M pairs,
    where the sparse update measured slower), and the dense ``[G, S]`` path runs."""
    M, C = layout.q_idx_MC.shape
    return SPARSE_PAIR_COST * M * C * layout.k_idx_MK.shape[1] < groups * nodes * nodes


def tree_response_logits(model: torch.nn.Module, tree, mask, sparse: bool) -> torch.Tensor:
    """The logits ``[K, V]`` that predict a shared-prefix micro-batch's K response tokens
    (:class:`appo.train.shared_prefix.TreeMicroBatch`: ``logit_group_K``, ``logit_u_K`` into
    ``logit_cols_U`` of its ``[G, S]`` layout).

    ``sparse`` (sdpa models), where :func:`sparse_pays`: every group's real nodes in one sequence (the
    ``[G, S]`` layout's padding nodes dropped; groups never attend to each other here, so they need not be
    separate rows) through :func:`tree_attention`; otherwise, or if the model does not pass the layout to
    every attention layer, or the mask is not a trie, the dense forward over ``[G, S]`` with ``mask``. Same
    numbers either way, to float rounding."""
    from appo.models.lm_logits import keep_logits

    device = next(model.parameters()).device
    G, S = tree.input_ids_GS.shape
    flat_K = tree.logit_group_K * S + tree.logit_cols_U[tree.logit_u_K]
    parent = _flat_parents(tree.allowed_GSS, tree.position_ids_GS) if sparse else None
    if parent is not None:
        seen_by_other = tree.allowed_GSS.cpu().sum(-2).reshape(-1) > 1  # has a descendant
        real = (parent >= 0) | seen_by_other
        real[flat_K] = True
        keep_N = torch.nonzero(real).flatten()
        new_of = torch.full((G * S,), -1, dtype=torch.long)
        new_of[keep_N] = torch.arange(len(keep_N))
        par = parent[keep_N]
        par = torch.where(par >= 0, new_of[par.clamp(min=0)], par)
        depth = tree.position_ids_GS.cpu().reshape(-1)[keep_N]
        try:
            layout = layout_from_parents(par.tolist(), depth.tolist())
        except ValueError:
            layout = None
        if layout is not None and sparse_pays(layout, G, S):
            cols_U, u_K = torch.unique(new_of[flat_K], sorted=True, return_inverse=True)
            ids = tree.input_ids_GS.reshape(-1)[keep_N][None].to(device)
            logits, ok = tree_forward_logits(model, cols_U.to(device), ids, depth[None].to(device), None, layout)
            if ok:
                return logits[0, u_K.to(device)]
    z_GUV = keep_logits(model, tree.logit_cols_U.to(device), input_ids=tree.input_ids_GS.to(device),
                        position_ids=tree.position_ids_GS.to(device), attention_mask=mask, use_cache=False)
    return z_GUV[tree.logit_group_K.to(device), tree.logit_u_K.to(device)]


@dataclass(frozen=True)
class SequenceTrie:
    """Sequences as one trie (:func:`trie_of_sequences`)."""

    ids_S: list[int]
    """Token of each node, creation order."""
    parent_S: list[int]
    """Parent node (-1 for a root)."""
    depth_S: list[int]
    """Depth (position) of each node."""
    paths: list[list[int]]
    """Node of each token of each sequence."""


def trie_of_sequences(sequences) -> SequenceTrie:
    """All ``sequences`` (token id lists) as one trie: a token shared with an earlier sequence at the same
    position after the same prefix is one node."""
    ids, parent, depth, paths = [], [], [], []
    child: dict[tuple[int, int], int] = {}
    for seq in sequences:
        path, p = [], -1
        for d, tok in enumerate(seq):
            node = child.get((p, tok))
            if node is None:
                node = child[(p, tok)] = len(ids)
                ids.append(int(tok))
                parent.append(p)
                depth.append(d)
            path.append(node)
            p = node
        paths.append(path)
    return SequenceTrie(ids, parent, depth, paths)
