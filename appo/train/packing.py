"""Sequence packing (``actor.use_remove_padding``): the rows of a micro-batch as one padding-free sequence.

A padded micro-batch pays ``rows * (P' + R')`` tokens of compute; a packed one pays the real tokens
only. :func:`pack_micro_batches` bins rows by real length (first-fit decreasing under a real-token
budget and/or a row budget) and lays each bin out as one sequence ``[1, S]``: every row's real prompt
tokens then its real response tokens, back to back, with position ids restarting at 0 for each row
(``0..p_i + n_i - 1``, the same positions the padded layout gives, ``cumsum(attention_mask) - 1``).

Attention cannot cross rows: the model is called with ``attention_mask=None`` and these position ids,
and transformers (versions with ``masking_utils.find_packed_sequence_indices``; 5.24 here) reads the
restarts as sequence boundaries: a block-diagonal causal mask for ``sdpa`` / ``eager`` /
``flex_attention`` (an ``S x S`` mask per pack: keep the token budget moderate), and
flash-attention's varlen kernel (``cu_seqlens`` from the position ids) for ``flash_attention_2/3``
(not run here; the in-process engine needs ``sdpa`` or ``eager``, so only a separately loaded training
copy could use it). That holds for the models transformers ships; code loaded with ``trust_remote_code`` may ignore it,
so :func:`check_packing_support` refuses such models (and older transformers) instead of silently
letting rows attend to each other. tests/train/test_packing.py proves, on the tiny Llama, that
packed log-probs and entropies equal the padded computation to 1e-5 and that a row's log-probs do not
move when its neighbour in the pack changes.

Only the logits that predict response tokens reach the LM head (``logits_to_keep`` as an index
tensor); log-prob and entropy come from :func:`appo.core.token_stats.token_stats`, as in
:func:`appo.train.logprobs.compute_logprobs`, and the
results are scattered back into the micro-batch's ``[b, R']`` response layout, so the loss code
never sees the packing. The name ``use_remove_padding`` is verl's (its actor unpads the micro-batch
into one ``total_nnz`` sequence for flash-attention varlen): the meaning is the same.
Left out: several packed sequences per forward (one is enough with a token budget), and packing in
the rollout engine (it keeps its own KV-cache layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from appo.models.lm_logits import keep_logits
from appo.train.batching import Layout, MicroBatch, select_rows
from appo.train.logprobs import scatter_response_stats
from appo.types import Batch


@dataclass(frozen=True)
class PackedMicroBatch(MicroBatch):
    """A :class:`MicroBatch` (rows, trimmed padded layout for the loss) plus its packed layout."""

    layout: ClassVar[Layout] = "packed"

    input_ids_1S: torch.Tensor | None = None
    """The rows' real tokens back to back, long [1, S]."""
    position_ids_1S: torch.Tensor | None = None
    """Position of each token within its own row (restarts at 0 per row), long [1, S]."""
    logit_index_K: torch.Tensor | None = None
    """Packed positions whose logits predict a response token, long [K] (K = real response tokens)."""
    target_row_K: torch.Tensor | None = None
    """Row (within this micro-batch) of each predicted token, long [K]."""
    target_col_K: torch.Tensor | None = None
    """Response column of each predicted token, long [K]."""


def pack_rows(batch: Batch, rows: torch.Tensor | list[int]) -> PackedMicroBatch:
    """Rows ``rows`` of ``batch`` packed into one sequence (see the module docstring)."""
    micro = select_rows(batch, rows)
    b = micro.batch
    R = b.responses_BR.shape[1]
    P = b.input_ids_BL.shape[1] - R
    prompt_len, resp_len = b.prompt_len_B, b.response_len_B
    ids, pos, logit_index, t_row, t_col = [], [], [], [], []
    offset = 0
    for i in range(len(micro.rows)):
        p, n = int(prompt_len[i]), int(resp_len[i])
        ids.append(b.input_ids_BL[i, P - p : P + n])
        pos.append(torch.arange(p + n))
        logit_index.append(offset + p - 1 + torch.arange(n))  # position p - 1 + t predicts response token t
        t_row.append(torch.full((n,), i, dtype=torch.long))
        t_col.append(torch.arange(n))
        offset += p + n
    return PackedMicroBatch(
        batch=b, rows=micro.rows, prompt_offset=micro.prompt_offset,
        input_ids_1S=torch.cat(ids).unsqueeze(0), position_ids_1S=torch.cat(pos).unsqueeze(0),
        logit_index_K=torch.cat(logit_index), target_row_K=torch.cat(t_row), target_col_K=torch.cat(t_col))


def pack_micro_batches(
    batch: Batch, max_tokens: int | None = None, max_rows: int | None = None
) -> list[PackedMicroBatch]:
    """Bin the rows of ``batch`` into packed micro-batches of at most ``max_tokens`` real tokens and
    ``max_rows`` rows (first-fit decreasing by real length ``p + n``; a row longer than ``max_tokens``
    gets a bin of its own). Neither budget: one pack. Bins keep their rows in batch order."""
    if max_tokens is not None and max_tokens < 1 or max_rows is not None and max_rows < 1:
        raise ValueError(f"max_tokens={max_tokens} and max_rows={max_rows} must be >= 1 (or None)")
    prompt_len, resp_len = batch.prompt_len_B, batch.response_len_B
    length = (prompt_len + resp_len.clamp(min=1)).tolist()
    order = sorted(range(len(length)), key=lambda i: -length[i])  # stable: ties keep batch order
    bins: list[list[int]] = []
    used: list[int] = []
    for i in order:
        for j, members in enumerate(bins):
            fits_tokens = max_tokens is None or used[j] + length[i] <= max_tokens
            fits_rows = max_rows is None or len(members) < max_rows
            if fits_tokens and fits_rows:
                members.append(i)
                used[j] += length[i]
                break
        else:
            bins.append([i])
            used.append(length[i])
    return [pack_rows(batch, sorted(members)) for members in bins]


def check_packing_support(model: torch.nn.Module) -> None:
    """Raise, naming the fix, unless ``model`` is a transformers model whose attention honours packed
    position ids (transformers' own model code with sdpa / eager / flex / flash attention)."""
    import transformers.masking_utils as masking

    base = getattr(model, "module", model)  # DDP
    base = base.get_base_model() if hasattr(base, "get_base_model") else base  # PEFT
    impl = getattr(getattr(base, "config", None), "_attn_implementation", None)
    cls = next(c for c in type(base).__mro__ if not c.__module__.startswith("torch."))  # past FSDP2's class
    native = cls.__module__.startswith("transformers.models.")
    known = impl in ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")
    if not (hasattr(masking, "find_packed_sequence_indices") and native and known):
        raise ValueError(f"actor.use_remove_padding=true needs a model whose attention reads packed position ids "
                         f"(transformers' own model code, with sdpa/eager/flex/flash attention); this one is "
                         f"{cls.__module__}.{cls.__name__} with attention {impl!r}, where rows could "
                         "attend to each other; fix: actor.use_remove_padding=false")


def packed_logprobs(
    model: torch.nn.Module,
    packed: PackedMicroBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logp_bR, entropy_bR or None)`` of a packed micro-batch in its trimmed ``[b, R']`` response
    layout, 0 at response padding; the same numbers as :func:`appo.train.logprobs.compute_logprobs`
    on the padded rows (differentiable when grad is enabled)."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (log-probs of greedy decoding are undefined)")
    device = next(model.parameters()).device
    index = packed.logit_index_K.to(device)
    z_1KV = keep_logits(model, index, input_ids=packed.input_ids_1S.to(device),
                        position_ids=packed.position_ids_1S.to(device), attention_mask=None, use_cache=False)
    b = packed.batch
    rows, cols = packed.target_row_K.to(device), packed.target_col_K.to(device)
    return scatter_response_stats(z_1KV[0], b.responses_BR, rows, cols, temperature, with_entropy, entropy_grad)
