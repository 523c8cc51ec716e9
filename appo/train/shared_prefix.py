"""Shared-prefix training (``actor.shared_prefix``): each token a group's rows share is computed once.

The rows of one group share their prompt, and an APPO/ARPO/Tree-GRPO branch shares its parent's
response up to the branch point. :func:`tree_rows` lays every group of a micro-batch out as a token
trie: row ``r``'s real tokens (prompt then response) are a root-to-node path, a token shared with an
earlier row at the same depth after the same parent is the same node. The group becomes one
sequence of its ``S_g`` nodes (a row of a ``[G, S]`` batch, right-padded to the longest group):

- ``position_ids[g, s]`` = the node's depth (the position the padded layout gives that token);
- attention: node ``i`` sees node ``j`` iff ``j`` is ``i`` or an ancestor of ``i`` (a 4D mask,
  boolean for ``sdpa`` and additive for ``eager``, as :mod:`appo.engine.scoring` passes it); a pad
  node sees only itself.

Every node's hidden state then equals the one each row containing it computes in the padded layout
(same tokens before it, same positions), so log-probs, losses and gradients are those of the padded
path (to float rounding; tests/train/test_shared_prefix.py checks 1e-5 on grpo, arpo, tree_grpo and
appo batches), while the forward and the backward process ``sum_g S_g`` tokens instead of every
row's. The logit that predicts row ``r``'s response token ``t`` is node ``path_r[p_r + t - 1]``'s; a
node shared by several rows serves each of them (its gradient sums theirs, as autograd does through
the padded rows' copies).

Cost: with ``eager`` attention, attention is dense over a group's nodes (``S_g^2`` pairs per layer instead
of ``sum_r L_r^2`` over its rows); with ``sdpa`` every node attends to its root path only
(:mod:`appo.models.tree_attention`, all groups as one sequence without the padding nodes), so sharing
pays where the shared part is large (long prompts, branches from late points); :func:`tree_wins` compares a
flop estimate of both layouts with dense attention (``actor.shared_prefix=auto``; conservative for ``sdpa``).
Left out: sharing across groups (a common system prompt), flash-attention (no arbitrary masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from appo.models.tree_attention import tree_response_logits
from appo.train.batching import Layout, MicroBatch, select_rows
from appo.train.logprobs import scatter_response_stats
from appo.types import Batch


@dataclass(frozen=True)
class TreeMicroBatch(MicroBatch):
    """A :class:`MicroBatch` (rows, trimmed padded layout for the loss) plus its shared-prefix layout."""

    layout: ClassVar[Layout] = "tree"

    input_ids_GS: torch.Tensor | None = None
    """Each group's trie nodes (token ids), right-padded, long [G, S]."""
    position_ids_GS: torch.Tensor | None = None
    """Depth of each node (0 at the first prompt token; 0 at padding), long [G, S]."""
    allowed_GSS: torch.Tensor | None = None
    """``allowed[g, i, j]``: node i attends to node j (ancestor or itself), bool [G, S, S]."""
    logit_cols_U: torch.Tensor | None = None
    """Node columns whose logits are needed by any group, long [U] (ascending)."""
    logit_group_K: torch.Tensor | None = None
    """Group (row of the [G, S] layout) of the logit that predicts each response token, long [K]."""
    logit_u_K: torch.Tensor | None = None
    """Index into ``logit_cols_U`` of that logit, long [K]."""
    target_row_K: torch.Tensor | None = None
    """Row (within this micro-batch) of each predicted token, long [K]."""
    target_col_K: torch.Tensor | None = None
    """Response column of each predicted token, long [K]."""


def _real_tokens(b: Batch, i: int, P: int) -> tuple[list[int], int]:
    """Row ``i``'s real tokens (prompt then response) and its real prompt length."""
    p = int(b.attention_mask_BL[i, :P].sum())
    n = int(b.response_mask_BR[i].sum())
    return b.input_ids_BL[i, P - p : P + n].tolist(), p


def tree_rows(batch: Batch, rows: torch.Tensor | list[int]) -> TreeMicroBatch:
    """Rows ``rows`` of ``batch`` as one trie per group (``Batch.group_B``; see the module docstring)."""
    micro = select_rows(batch, rows)
    b = micro.batch
    R = b.responses_BR.shape[1]
    P = b.input_ids_BL.shape[1] - R
    group_of = b.group_B.tolist() if b.group_B is not None else list(range(len(micro.rows)))
    groups = list(dict.fromkeys(group_of))
    nodes: list[list[int]] = [[] for _ in groups]  # token id per node
    depth: list[list[int]] = [[] for _ in groups]
    paths: list[list[int]] = []  # node index per token of each row
    child: list[dict] = [{} for _ in groups]  # (parent node, token) -> node
    for i in range(len(micro.rows)):
        g = groups.index(group_of[i])
        toks, _ = _real_tokens(b, i, P)
        path, parent = [], -1
        for d, tok in enumerate(toks):
            key = (parent, tok)
            node = child[g].get(key)
            if node is None:
                node = child[g][key] = len(nodes[g])
                nodes[g].append(tok)
                depth[g].append(d)
            path.append(node)
            parent = node
        paths.append(path)
    G, S = len(groups), max(len(n) for n in nodes)
    ids_GS = torch.zeros(G, S, dtype=torch.long)
    pos_GS = torch.zeros(G, S, dtype=torch.long)
    allowed = torch.eye(S, dtype=torch.bool).repeat(G, 1, 1)
    for g in range(G):
        ids_GS[g, : len(nodes[g])] = torch.tensor(nodes[g])
        pos_GS[g, : len(nodes[g])] = torch.tensor(depth[g])
    logit_g, logit_s, t_row, t_col = [], [], [], []
    for i, path in enumerate(paths):
        g = groups.index(group_of[i])
        p_t = torch.tensor(path, dtype=torch.long)
        L = len(path)
        allowed[g, p_t[:, None], p_t[None, :]] |= torch.ones(L, L, dtype=torch.bool).tril()
        p = int(b.attention_mask_BL[i, :P].sum())
        n = L - p
        logit_g.append(torch.full((n,), g, dtype=torch.long))
        logit_s.append(p_t[p - 1 : L - 1])  # node at path position p - 1 + t predicts response token t
        t_row.append(torch.full((n,), i, dtype=torch.long))
        t_col.append(torch.arange(n))
    s_K = torch.cat(logit_s)
    cols_U, u_K = torch.unique(s_K, sorted=True, return_inverse=True)
    return TreeMicroBatch(
        batch=b, rows=micro.rows, prompt_offset=micro.prompt_offset, input_ids_GS=ids_GS, position_ids_GS=pos_GS,
        allowed_GSS=allowed, logit_cols_U=cols_U, logit_group_K=torch.cat(logit_g), logit_u_K=u_K,
        target_row_K=torch.cat(t_row), target_col_K=torch.cat(t_col))


def tree_micro_batches(batch: Batch, max_tokens: int | None = None,
                       max_rows: int | None = None) -> list[TreeMicroBatch]:
    """Micro-batches that keep each group's rows together where the budgets allow: rows in (group, row)
    order, cut when ``max_rows`` rows or ``max_tokens`` real tokens (an upper bound of the nodes) are reached."""
    if max_tokens is not None and max_tokens < 1 or max_rows is not None and max_rows < 1:
        raise ValueError(f"max_tokens={max_tokens} and max_rows={max_rows} must be >= 1 (or None)")
    R = batch.responses_BR.shape[1]
    P = batch.input_ids_BL.shape[1] - R
    length = (batch.attention_mask_BL[:, :P].sum(1) + batch.response_mask_BR.sum(1).clamp(min=1)).tolist()
    group = batch.group_B.tolist() if batch.group_B is not None else list(range(len(length)))
    order = sorted(range(len(length)), key=lambda i: (group[i], i))
    bins: list[list[int]] = []
    used = 0
    for i in order:
        full = bins and ((max_rows is not None and len(bins[-1]) >= max_rows) or
                         (max_tokens is not None and used + length[i] > max_tokens))
        if not bins or full:
            bins.append([])
            used = 0
        bins[-1].append(i)
        used += int(length[i])
    return [tree_rows(batch, sorted(members)) for members in bins]


def check_tree_support(model: torch.nn.Module) -> None:
    """Raise, naming the fix, unless ``model`` takes a 4D attention mask (``sdpa`` or ``eager`` attention)."""
    base = getattr(model, "module", model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    impl = getattr(getattr(base, "config", None), "_attn_implementation", None) or "eager"
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"actor.shared_prefix=true needs sdpa or eager attention (a 4D tree mask); this model uses "
                         f"{impl!r}; fix: actor.shared_prefix=false")


def tree_logprobs(
    model: torch.nn.Module,
    tree: TreeMicroBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logp_bR, entropy_bR or None)`` of a tree micro-batch in its ``[b, R']`` response layout, 0 at
    response padding; the numbers of :func:`appo.train.logprobs.compute_logprobs` on the padded rows
    (differentiable when grad is enabled)."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (log-probs of greedy decoding are undefined)")
    device = next(model.parameters()).device
    params = next(model.parameters())
    config = getattr(getattr(model, "module", model), "config", None)  # DDP wraps the model
    impl = getattr(config, "_attn_implementation", None) or "eager"
    allowed = tree.allowed_GSS.to(device)[:, None]
    if impl == "sdpa":
        mask = allowed
    else:
        dtype = params.dtype if params.is_floating_point() else torch.float32
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    z_KV = tree_response_logits(model, tree, mask, sparse=impl == "sdpa")  # sdpa: sparse trie attention (issue 26)
    b = tree.batch
    rows, cols = tree.target_row_K.to(device), tree.target_col_K.to(device)
    return scatter_response_stats(z_KV, b.responses_BR, rows, cols, temperature, with_entropy, entropy_grad)


def layout_costs(batch: Batch, model_config) -> tuple[float, float]:
    """Estimated flops of one forward over ``batch`` as padded rows and as per-group tries: ``tokens x
    per-token linear flops + attention pairs x per-pair flops`` (dense attention in both layouts; the
    padded layout's micro-batches are ignored, the whole batch is one). Per token: the layers' matrix
    products ``2 H (H + 2 H_kv) + 2 H^2 + 6 H I`` and the LM head ``2 H V``; per pair ``4 H`` per layer. A group
    of more than :data:`TREE_MAX_NODES` nodes makes the tree's cost infinite."""
    c = model_config
    H, layers = c.hidden_size, c.num_hidden_layers
    heads = c.num_attention_heads
    kv = (getattr(c, "num_key_value_heads", None) or heads) * (getattr(c, "head_dim", None) or H // heads)
    inter = getattr(c, "intermediate_size", 4 * H)
    per_token = layers * (2 * H * (H + 2 * kv) + 2 * H * H + 6 * H * inter) + 2 * H * c.vocab_size
    per_pair = layers * 4 * H
    R = batch.responses_BR.shape[1]
    P = batch.input_ids_BL.shape[1] - R
    B, L = batch.input_ids_BL.shape
    padded = B * L * per_token + B * L * L * per_pair
    group = batch.group_B.tolist() if batch.group_B is not None else list(range(B))
    child: dict[int, dict] = {}
    for i in range(B):
        toks, _ = _real_tokens(batch, i, P)
        trie, parent = child.setdefault(group[i], {}), -1
        for tok in toks:
            parent = trie.setdefault((parent, tok), len(trie))
    tree = sum(len(t) * per_token + len(t) ** 2 * per_pair for t in child.values())
    if max(len(t) for t in child.values()) > TREE_MAX_NODES:
        tree = float("inf")  # the [S, S] mask alone would not fit
    return float(padded), float(tree)


TREE_MAX_NODES = 8192
"""``auto`` never picks a trie of more nodes than this (its dense ``[S, S]`` mask: 64 MiB as booleans)."""

TREE_MARGIN = 0.8
"""``auto`` uses the tree layout when its estimated cost is below this fraction of the padded one (the
tree pays for its mask and gathers beyond the flop estimate)."""


def tree_wins(batch: Batch, model_config) -> bool:
    """``actor.shared_prefix=auto``: whether the tree layout's estimated cost beats the padded one's by
    :data:`TREE_MARGIN`."""
    padded, tree = layout_costs(batch, model_config)
    return tree < TREE_MARGIN * padded
