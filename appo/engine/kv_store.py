"""Kept KV caches for prefix reuse: an LRU store bounded by a token budget, with longest-common-prefix lookup.

An entry is the KV of one finished sequence, trimmed to its real tokens (no padding): per model layer a
pair ``(keys_HLD, values_HLD)`` where ``L`` is the number of tokens whose KV was computed. After a
generation that is ``prefix + generated[:-1]`` (the last sampled token was never fed to the model).

Lookup finds, for a request prefix, the kept entry sharing the longest common prefix (LCP) with it.
Entries are indexed by a rolling hash over fixed-size token chunks (``h_k = hash((h_{k-1}, chunk_k))``),
so the deepest chunk boundary that some entry shares is found in O(prefix / chunk) dict look-ups; the
few entries at that depth are then compared token by token (numpy) to get the exact LCP, which also
guards against hash collisions. When no chunk matches (an LCP shorter than one chunk), the most
recently used entries are compared directly, so short prompts are still reused.

Chosen: full copies per entry (simple accounting, eviction frees memory at once) rather than sharing
the parent's tensors between forks; dropped: partial eviction of an entry's tail.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

KVPairs = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer ``(keys_HLD, values_HLD)``: heads x tokens x head_dim, no batch dimension."""


@dataclass
class KVEntry:
    """One kept sequence: its tokens and their KV."""

    key: str
    """The request's ``cache_key``."""
    tokens: np.ndarray
    """int64 ids of the tokens whose KV is held (length ``n_tokens``)."""
    kv: KVPairs
    """Per layer (keys, values), each ``[heads, n_tokens, head_dim]``."""
    chain: list[int] = field(default_factory=list)
    """Rolling chunk hashes of ``tokens`` (one per full chunk)."""
    last_used: int = 0
    """Store clock at the last put or lookup hit (ties between equally long matches go to the latest)."""

    @property
    def n_tokens(self) -> int:
        """Number of tokens with KV."""
        return int(self.tokens.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the KV tensors."""
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)


def chunk_hashes(tokens: Sequence[int], chunk: int, limit: int | None = None) -> list[int]:
    """Rolling hashes ``h_k = hash((h_{k-1}, tokens[(k-1)C : kC]))`` for every full chunk (at most ``limit``)."""
    n = len(tokens) // chunk if limit is None else min(len(tokens) // chunk, limit)
    out, h = [], 0
    for k in range(n):
        h = hash((h, tuple(tokens[k * chunk : (k + 1) * chunk])))
        out.append(h)
    return out


def common_prefix_len(a: np.ndarray, b: np.ndarray, start: int = 0) -> int:
    """Length of the longest common prefix of two int arrays, checking from ``start`` (assumed equal before)."""
    n = min(a.shape[0], b.shape[0])
    if start >= n:
        return n
    diff = np.flatnonzero(a[start:n] != b[start:n])
    return start + int(diff[0]) if diff.size else n


class PrefixKVStore:
    """LRU store of kept KV caches, bounded by ``budget_tokens`` (the sum of the entries' token counts).

    ``put`` replaces an entry with the same key and evicts least recently used entries until the new one
    fits; an entry longer than the whole budget is not kept. ``lookup`` marks the entry it returns as
    recently used.
    """

    def __init__(self, budget_tokens: int, chunk: int = 8, fallback_candidates: int = 64):
        if budget_tokens < 0:
            raise ValueError(f"budget_tokens must be >= 0, got {budget_tokens}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.budget_tokens = budget_tokens
        self.chunk = chunk
        self.fallback_candidates = fallback_candidates
        self._entries: OrderedDict[str, KVEntry] = OrderedDict()
        self._index: dict[int, set[str]] = {}
        self.total_tokens = 0
        self.evictions = 0
        self._clock = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        """Kept keys, least recently used first."""
        return list(self._entries)

    def get(self, key: str) -> KVEntry | None:
        """The entry kept under ``key`` (without touching its LRU position), or None."""
        return self._entries.get(key)

    @property
    def nbytes(self) -> int:
        """Bytes held by all kept KV tensors."""
        return sum(e.nbytes for e in self._entries.values())

    def put(self, key: str, tokens: Sequence[int] | np.ndarray, kv: KVPairs) -> bool:
        """Keep ``kv`` (already trimmed copies) for ``tokens`` under ``key``; returns whether it was kept."""
        tokens_arr = np.asarray(tokens, dtype=np.int64)
        n = int(tokens_arr.shape[0])
        for k, v in kv:
            if k.shape[-2] != n or v.shape[-2] != n:
                raise ValueError(f"kv for key {key!r} holds {k.shape[-2]} tokens, tokens has {n}")
        self._drop(key)
        if n == 0 or n > self.budget_tokens:
            return False
        while self.total_tokens + n > self.budget_tokens and self._entries:
            self._drop(next(iter(self._entries)))
            self.evictions += 1
        self._clock += 1
        entry = KVEntry(key=key, tokens=tokens_arr, kv=kv, chain=chunk_hashes(tokens_arr.tolist(), self.chunk),
                        last_used=self._clock)
        self._entries[key] = entry
        for h in entry.chain:
            self._index.setdefault(h, set()).add(key)
        self.total_tokens += n
        return True

    def lookup(self, prefix: Sequence[int]) -> tuple[KVEntry | None, int]:
        """The entry with the longest common prefix with ``prefix``, and that length (0 and None if none)."""
        if not self._entries or not prefix:
            return None, 0
        depth, h, candidates = 0, 0, None
        for k in range(len(prefix) // self.chunk):
            h = hash((h, tuple(prefix[k * self.chunk : (k + 1) * self.chunk])))
            hit = self._index.get(h)
            if not hit:
                break
            depth, candidates = k + 1, hit
        if candidates is None:
            recent = reversed(self._entries)
            candidates = [key for _, key in zip(range(self.fallback_candidates), recent)]
        prefix_arr = np.asarray(prefix, dtype=np.int64)
        best, best_len = None, 0
        start = depth * self.chunk
        for key in candidates:
            entry = self._entries[key]
            if start and not np.array_equal(entry.tokens[:start], prefix_arr[:start]):
                continue  # hash collision
            n = common_prefix_len(prefix_arr, entry.tokens, start)
            if n > best_len or (n == best_len and n > 0 and entry.last_used > best.last_used):
                best, best_len = entry, n
        if best is not None:
            self._clock += 1
            best.last_used = self._clock
            self._entries.move_to_end(best.key)
        return best, best_len

    def release(self, keys: Iterable[str] | None = None) -> None:
        """Drop the entries of ``keys`` (unknown keys are ignored), or all entries when None."""
        if keys is None:
            self._entries.clear()
            self._index.clear()
            self.total_tokens = 0
            return
        for key in keys:
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.total_tokens -= entry.n_tokens
        for h in entry.chain:
            bucket = self._index.get(h)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._index[h]
