"""The KV cache of one decoding batch: preallocated per-layer buffers with a dense, right-aligned row layout.

Layout. After the prefill every row's tokens end at the same column ``T0`` (the longest prefix): row ``b``
holds its prefix in columns ``[start_b, T0)`` with ``start_b = T0 - P_b`` and nothing valid before
``start_b`` (left padding). A row that reuses ``r_b`` kept tokens gets their KV copied into
``[start_b, start_b + r_b)``; its remaining ``s_b = P_b - r_b`` prefix tokens are prefilled into
``[T0 - s_b, T0)``. Decoding then appends one column per step for all rows, so each row's real tokens
always form one contiguous slice ``[start_b, length)`` (extracted without padding for the store).

Prefill input is the batch of suffixes left-padded to ``S = max s_b``; query slot ``j`` of every row sits
at column ``T0 - S + j``. Pad slots of a row that reuses KV would land on its reused columns, so the
prefill writes by scatter: real slots to their column, pad slots to a spare "dump" column past the
capacity that no attention ever reads. Attention masks are built here too (4D, handed to the model as
is): a key column is visible to a query when it is a real column of the row (``>= start_b``) and not
after the query's column. Pad queries see the row's whole real range (their output is discarded; this
only keeps every mask row non-empty, so sdpa never produces NaN).

Buffers grow by doubling (one copy per doubling) instead of ``torch.cat`` per step as ``DynamicCache``
does, which would copy the whole cache at every step.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from appo.engine.kv_store import KVPairs


class _BufferLayer(DynamicLayer):
    """One model layer's keys/values for the batch: ``[B, heads, capacity + 1, head_dim]`` (last column = dump)."""

    def __init__(self, owner: BatchKVCache, layer_idx: int):
        super().__init__()
        self.owner = owner
        self.layer_idx = layer_idx
        self.k_buf: torch.Tensor | None = None
        self.v_buf: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        o = self.owner
        B, H, _, D = key_states.shape
        self.device = key_states.device
        self.k_buf = torch.zeros(B, H, o.capacity + 1, D, dtype=key_states.dtype, device=key_states.device)
        self.v_buf = torch.zeros(B, H, o.capacity + 1, value_states.shape[-1], dtype=value_states.dtype,
                                 device=value_states.device)
        for row, kv, n, dest in o.reuse:
            k, v = kv[self.layer_idx]
            self.k_buf[row, :, dest : dest + n] = k[:, :n]
            self.v_buf[row, :, dest : dest + n] = v[:, :n]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self.k_buf is None:
            self.lazy_initialization(key_states, value_states)
        o = self.owner
        if o.write_cols_BS is None:
            col = o.length
            end = col + key_states.shape[-2]
            self.k_buf[:, :, col:end] = key_states
            self.v_buf[:, :, col:end] = value_states
        else:
            B, H, S, _ = key_states.shape
            idx = o.write_cols_BS[:, None, :, None]
            self.k_buf.scatter_(2, idx.expand(B, H, S, key_states.shape[-1]), key_states)
            self.v_buf.scatter_(2, idx.expand(B, H, S, value_states.shape[-1]), value_states)
            end = o.write_end
        self.keys = self.k_buf[:, :, :end]
        self.values = self.v_buf[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.owner.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.length + query_length, 0

    def resize(self, capacity: int) -> None:
        """Reallocate to ``capacity`` columns (+ dump), keeping the first ``owner.length`` columns."""
        if self.k_buf is None:
            return
        n = self.owner.length
        for name in ("k_buf", "v_buf"):
            old = getattr(self, name)
            new = torch.zeros(old.shape[0], old.shape[1], capacity + 1, old.shape[3], dtype=old.dtype,
                              device=old.device)
            new[:, :, :n] = old[:, :, :n]
            setattr(self, name, new)

    def select_rows(self, idx_B: torch.Tensor) -> None:
        """Keep (or repeat) the rows ``idx_B`` of the batch."""
        if self.k_buf is not None:
            self.k_buf = self.k_buf.index_select(0, idx_B)
            self.v_buf = self.v_buf.index_select(0, idx_B)


class BatchKVCache(Cache):
    """A transformers ``Cache`` whose layers are ``_BufferLayer``s sharing one layout (see module docstring)."""

    def __init__(self, num_layers: int, starts: list[int], capacity: int, device: torch.device,
                 mask_dtype: torch.dtype, reuse: list[tuple[int, KVPairs, int, int]] = ()):
        super().__init__(layers=[_BufferLayer(self, i) for i in range(num_layers)])
        self.device = device
        self.capacity = capacity
        self.length = 0
        """Columns written so far (all rows)."""
        self.reuse = list(reuse)
        """``(row, kept kv, n tokens, first column)`` copied into each layer when it is first written."""
        self.starts_B = torch.tensor(starts, dtype=torch.long, device=device)
        self.mask_dtype = mask_dtype
        self.write_cols_BS: torch.Tensor | None = None
        self.write_end = 0
        self._rebuild_valid()

    # -- layout -------------------------------------------------------------------------------------------------
    def _rebuild_valid(self) -> None:
        cols_C = torch.arange(self.capacity, device=self.device)
        self.valid_BC = cols_C[None, :] >= self.starts_B[:, None]
        self._decode_mask = self._as_mask(self.valid_BC)[:, None, None, :]

    def _as_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """bool (sdpa: True = attend) or additive float (eager: 0 / dtype min) mask."""
        if self.mask_dtype == torch.bool:
            return allowed
        zero = torch.zeros((), dtype=self.mask_dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(self.mask_dtype).min)

    def ensure_capacity(self, needed: int) -> None:
        """Grow all buffers (by doubling) so that ``needed`` columns fit."""
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity)
        for layer in self.layers:
            layer.resize(capacity)
        self.capacity = capacity
        self._rebuild_valid()

    def select_rows(self, idx_B: torch.Tensor) -> None:
        """Keep (drop finished rows) or repeat (expand de-duplicated prefixes) batch rows."""
        for layer in self.layers:
            layer.select_rows(idx_B)
        self.starts_B = self.starts_B.index_select(0, idx_B)
        self.valid_BC = self.valid_BC.index_select(0, idx_B)
        self._decode_mask = self._decode_mask.index_select(0, idx_B)

    # -- forward inputs -----------------------------------------------------------------------------------------
    def prefill_inputs(self, slot_cols_S: torch.Tensor, real_BS: torch.Tensor, positions_BS: torch.Tensor):
        """Set up a prefill chunk whose query slots sit at columns ``slot_cols_S``; returns (mask, position_ids).

        ``real_BS`` marks real (non-pad) slots; ``positions_BS`` are their absolute positions.
        """
        dump = self.capacity
        self.write_cols_BS = torch.where(real_BS, slot_cols_S[None, :], dump)
        self.write_end = int(slot_cols_S[-1]) + 1
        cols_K = torch.arange(self.write_end, device=self.device)
        valid_BK = self.valid_BC[:, : self.write_end]
        causal_SK = cols_K[None, :] <= slot_cols_S[:, None]
        allowed_BSK = valid_BK[:, None, :] & (causal_SK[None] | ~real_BS[:, :, None])
        return self._as_mask(allowed_BSK)[:, None], torch.where(real_BS, positions_BS, 0)

    def finish_prefill(self) -> None:
        """Mark the prefill done: later forwards append one column per step at ``length``."""
        self.length = self.write_end
        self.write_cols_BS = None

    def decode_mask(self) -> torch.Tensor:
        """``[B, 1, 1, length + 1]`` mask for a one-token step."""
        return self._decode_mask[..., : self.length + 1]

    def extract(self, row: int, start: int, end: int, device: torch.device | None = None) -> KVPairs:
        """Copies of row ``row``'s columns ``[start, end)`` per layer, ``[heads, end - start, head_dim]`` each."""
        out = []
        for layer in self.layers:
            k = layer.k_buf[row, :, start:end]
            v = layer.v_buf[row, :, start:end]
            k = k.clone(memory_format=torch.contiguous_format)
            v = v.clone(memory_format=torch.contiguous_format)
            if device is not None and torch.device(device) != k.device:
                k, v = k.to(device), v.to(device)
            out.append((k, v))
        return out
