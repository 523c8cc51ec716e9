"""Rollouts -> one collated :class:`~appo.types.Batch` (verl layout), and length-grouped micro-batches.

Layout (verl's): ``input_ids_BL = cat(prompt_BP, response_BR)``, prompts left-padded to the longest
prompt P, responses right-padded to the longest response R, so every response starts at column P and
``logits[:, P - 1 : P + R - 1]`` predict the response. Position ids count real tokens only
(``cumsum(attention_mask) - 1``, clamped at 0 on the left padding).

Micro-batches (:func:`split_micro_batches`) group rows of similar length (sorted by real length,
packed greedily under a padded-token and/or row budget) and re-trim the padding of each group, which
cuts the wasted compute that a plain split of a length-mixed batch pays. :func:`padding_stats` reports
real tokens / padded tokens for benchmarks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence

import torch

from appo.types import AdvantageInputs, Batch, Rollout


def collate(
    rollouts: Sequence[Rollout],
    pad_id: int,
    trained_B: Sequence[bool] | None = None,
    advantages_NT: torch.Tensor | None = None,
) -> Batch:
    """Collate rows in order into a :class:`Batch` (B = N = len(rollouts)).

    ``loss_mask_BR = rollout.loss_mask * trained_B``: ``trained_B`` says per row whether the loss trains on
    it (the algorithm's rule, :meth:`appo.algorithms.Algorithm.trained_rows`); None trains every row. A
    trained branch row is trained on its whole response, shared prefix included, with its own advantage
    (ARPO's convention: a fork copies its parent's loss mask). ``old_logp_BR`` is filled with the behaviour log-probs
    the engine returned (recompute it with :func:`appo.train.layout.batched_logprobs` when the trainer's
    numerics differ); ``rollout_logp_BR`` keeps them. ``advantages_NT``: see :func:`with_advantages`; None
    gives zeros (the trainer collates first and adds them after the estimator, whose token mask is this
    batch's ``response_mask_BR``). The per-row fields ``trained_B``, ``is_branch_B``, ``num_tool_calls_B`` and
    ``model_mask_BR`` (the rollout's own loss mask) are filled too.
    """
    if not rollouts:
        raise ValueError("collate needs at least one rollout")
    B = len(rollouts)
    trained_B = [True] * B if trained_B is None else [bool(x) for x in trained_B]
    if len(trained_B) != B:
        raise ValueError(f"trained_B has {len(trained_B)} entries for {B} rollouts; give one bool per row")
    P = max(len(r.prompt_ids) for r in rollouts)
    R = max(1, max(len(r.response_ids) for r in rollouts))
    if P == 0:
        raise ValueError("every rollout has an empty prompt; a prompt needs at least one token")
    input_ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attention = torch.zeros((B, P + R), dtype=torch.long)
    response_mask = torch.zeros((B, R))
    model_mask = torch.zeros((B, R))
    logp = torch.zeros((B, R))
    for i, r in enumerate(rollouts):
        p, n = len(r.prompt_ids), len(r.response_ids)
        input_ids[i, P - p : P] = torch.tensor(r.prompt_ids, dtype=torch.long)
        attention[i, P - p : P] = 1
        if n:
            input_ids[i, P : P + n] = torch.tensor(r.response_ids, dtype=torch.long)
            attention[i, P : P + n] = 1
            response_mask[i, :n] = 1
            model_mask[i, :n] = torch.tensor(r.loss_mask, dtype=torch.float32)
            logp[i, :n] = torch.tensor(r.logprobs, dtype=torch.float32)
    trained = torch.tensor(trained_B, dtype=torch.bool)
    batch = Batch(
        input_ids_BL=input_ids,
        attention_mask_BL=attention,
        position_ids_BL=(attention.cumsum(1) - 1).clamp(min=0),
        responses_BR=input_ids[:, P:].clone(),
        response_mask_BR=response_mask,
        loss_mask_BR=model_mask * trained[:, None].float(),
        old_logp_BR=logp,
        advantages_BR=torch.zeros((B, R)),
        group_B=torch.tensor([r.group for r in rollouts]),
        trained_B=trained,
        is_branch_B=torch.tensor([r.origin == "branch" for r in rollouts]),
        num_tool_calls_B=torch.tensor([r.num_tool_calls for r in rollouts]),
        model_mask_BR=model_mask,
        rollout_logp_BR=logp.clone(),
    )
    return batch if advantages_NT is None else with_advantages(batch, advantages_NT)


def with_advantages(batch: Batch, advantages_NT: torch.Tensor) -> Batch:
    """``batch`` with ``advantages_BR = advantages_NT[:, :R] * response_mask_BR``: ``advantages_NT`` (float
    [N = B, T >= R], e.g. from an advantage estimator, rows in the batch's order) cut to R columns and zeroed
    outside the response."""
    B, R = batch.responses_BR.shape
    if advantages_NT.dim() != 2 or advantages_NT.shape[0] != B or advantages_NT.shape[1] < R:
        raise ValueError(f"advantages_NT has shape {tuple(advantages_NT.shape)}; expected [N={B}, T>={R}] "
                         "(one row per rollout, in the same order)")
    return dataclasses.replace(batch, advantages_BR=advantages_NT[:, :R].to(torch.float32) * batch.response_mask_BR)


def advantage_inputs(rollouts: Sequence[Rollout], rewards_N: torch.Tensor | Sequence[float],
                     mask_NT: torch.Tensor | None = None) -> AdvantageInputs:
    """The :class:`AdvantageInputs` for ``rollouts`` (rows in the same order as :func:`collate`'s):
    parents and tree roots are resolved from ``(group, uid)`` to row indices; ``mask_NT`` marks real
    response tokens (T = the longest response): pass the collated batch's ``response_mask_BR`` (the same
    tensor), or None to build it here."""
    N = len(rollouts)
    row = {(r.group, r.uid): i for i, r in enumerate(rollouts)}
    if len(row) != N:
        raise ValueError("two rollouts share a (group, uid); uids must be unique within a group")

    def find(group: int, uid: int, what: str, i: int) -> int:
        if (group, uid) not in row:
            raise ValueError(f"rollout {i} (group {group}) names {what} uid {uid}, which is not among the rows")
        return row[(group, uid)]

    if mask_NT is None:
        T = max(1, max((len(r.response_ids) for r in rollouts), default=1))
        mask_NT = torch.zeros((N, T))
        for i, r in enumerate(rollouts):
            mask_NT[i, : len(r.response_ids)] = 1
    elif mask_NT.shape[0] != N:
        raise ValueError(f"mask_NT has {mask_NT.shape[0]} rows for {N} rollouts; pass the collated batch's "
                         "response_mask_BR")
    parent = [find(r.group, r.parent, "parent", i) if r.parent is not None else -1 for i, r in enumerate(rollouts)]
    tree = [find(r.group, r.tree, "root", i) for i, r in enumerate(rollouts)]
    nan = float("nan")
    return AdvantageInputs(
        rewards_N=torch.as_tensor(rewards_N, dtype=torch.float32).reshape(N),
        group_N=torch.tensor([r.group for r in rollouts], dtype=torch.long),
        mask_NT=mask_NT,
        is_branch_N=torch.tensor([r.parent is not None for r in rollouts]),
        parent_N=torch.tensor(parent, dtype=torch.long),
        split_N=torch.tensor([-1 if r.split is None else r.split for r in rollouts], dtype=torch.long),
        tree_N=torch.tensor(tree, dtype=torch.long),
        branch_score_N=torch.tensor([nan if r.branch_score is None else r.branch_score for r in rollouts]),
    )


# ------------------------------------------------------------------------------------- micro-batches
Layout = Literal["padded", "packed", "tree"]
"""How a micro-batch's rows reach the model: padded rows, one packed sequence, or per-group token tries
(:mod:`appo.train.layout` chooses one per step and dispatches on it)."""


@dataclass(frozen=True)
class MicroBatch:
    """A slice of a batch's rows with its padding re-trimmed (the ``padded`` layout)."""

    layout: ClassVar[Layout] = "padded"
    """The layout that built this micro-batch and computes its log-probs (subclasses: ``packed``, ``tree``)."""

    batch: Batch
    """The rows, collated with the smallest P' and R' that hold them."""
    rows: torch.Tensor
    """Row indices into the full batch, long [b]."""
    prompt_offset: int
    """P - P': columns of prompt padding dropped on the left."""


def select_rows(batch: Batch, rows: torch.Tensor | Sequence[int]) -> MicroBatch:
    """Rows ``rows`` of ``batch``, with all-padding prompt columns (left) and response columns (right)
    dropped. Every field is sliced by its shape suffix: ``_BL`` rows and kept columns, ``_BR`` rows and the
    first R' columns, ``_B`` rows."""
    rows = torch.as_tensor(rows, dtype=torch.long)
    R = batch.responses_BR.shape[1]
    P = batch.input_ids_BL.shape[1] - R
    P2 = int(batch.prompt_len_B[rows].max()) if len(rows) else 0
    R2 = max(1, int(batch.response_len_B[rows].max())) if len(rows) else 1
    cols = {"_BL": slice(P - P2, P + R2), "_BR": slice(0, R2), "_B": slice(None)}

    def take(name: str, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        suffix = name[name.rindex("_"):]
        return t[rows][:, cols[suffix]] if suffix != "_B" else t[rows]

    sub = Batch(**{f.name: take(f.name, getattr(batch, f.name)) for f in dataclasses.fields(Batch)})
    return MicroBatch(batch=sub, rows=rows, prompt_offset=P - P2)


def split_micro_batches(
    batch: Batch,
    max_tokens: int | None = None,
    max_rows: int | None = None,
    sort_by_length: bool = True,
) -> list[MicroBatch]:
    """Split ``batch`` into micro-batches of at most ``max_rows`` rows whose padded size
    ``rows * (P' + R')`` stays within ``max_tokens`` (a single row longer than that gets its own).

    With ``sort_by_length`` rows are ordered by real length (stable), so each micro-batch holds rows of
    similar length and is trimmed tightly; without it rows keep their order (a plain split). Neither
    budget given: one micro-batch. Gradient accumulation over micro-batches must weight each by its
    share of the loss tokens to reproduce the full-batch token mean (the trainer's job).
    """
    if max_tokens is not None and max_tokens < 1 or max_rows is not None and max_rows < 1:
        raise ValueError(f"max_tokens={max_tokens} and max_rows={max_rows} must be >= 1 (or None)")
    B = batch.responses_BR.shape[0]
    prompt_len, resp_len = batch.prompt_len_B, batch.response_len_B
    order = torch.argsort(prompt_len + resp_len, stable=True) if sort_by_length else torch.arange(B)
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_p = cur_r = 0
    for i in order.tolist():
        p, r = int(prompt_len[i]), max(1, int(resp_len[i]))
        new_p, new_r = max(cur_p, p), max(cur_r, r)
        fits_rows = max_rows is None or len(cur) < max_rows
        fits_tokens = max_tokens is None or (len(cur) + 1) * (new_p + new_r) <= max_tokens
        if cur and not (fits_rows and fits_tokens):
            groups.append(cur)
            cur, new_p, new_r = [], p, r
        cur.append(i)
        cur_p, cur_r = new_p, new_r
    if cur:
        groups.append(cur)
    return [select_rows(batch, g) for g in groups]


def merge_micro_outputs(
    parts: Sequence[torch.Tensor], micro: Sequence[MicroBatch], like_BR: torch.Tensor
) -> torch.Tensor:
    """Scatter per-micro-batch response tensors ([b, R'] each) back into a zero tensor shaped like
    ``like_BR`` ([B, R]), rows in the full batch's order."""
    out = torch.zeros_like(like_BR, dtype=parts[0].dtype if parts else like_BR.dtype)
    for t, m in zip(parts, micro):
        out[m.rows.to(out.device), : t.shape[1]] = t.to(out.device)
    return out


def padding_stats(batches: Batch | Sequence[Batch | MicroBatch]) -> dict[str, float]:
    """Real tokens, padded tokens (the compute actually paid) and their ratio ``efficiency`` over one
    batch or a list of (micro-)batches."""
    items = [batches] if isinstance(batches, Batch) else list(batches)
    real = padded = 0
    for b in items:
        b = b.batch if isinstance(b, MicroBatch) else b
        real += int(b.attention_mask_BL.sum())
        padded += b.attention_mask_BL.numel()
    return {"real_tokens": float(real), "padded_tokens": float(padded),
            "efficiency": real / padded if padded else 1.0}


def with_fields(batch: Batch, **fields) -> Batch:
    """A copy of ``batch`` with some fields replaced (e.g. recomputed ``old_logp_BR``, ``advantages_BR``)."""
    return dataclasses.replace(batch, **fields)
