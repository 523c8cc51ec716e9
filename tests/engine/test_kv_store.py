"""PrefixKVStore: longest-common-prefix lookup, LRU eviction under a token budget, release."""

from __future__ import annotations

import numpy as np
import torch

from appo.engine.kv_store import PrefixKVStore, chunk_hashes, common_prefix_len


def kv(n: int, layers: int = 2, fill: float = 0.0):
    return [(torch.full((2, n, 4), fill), torch.full((2, n, 4), fill)) for _ in range(layers)]


def test_lookup_finds_longest_common_prefix_among_entries():
    store = PrefixKVStore(budget_tokens=1000, chunk=4)
    base = list(range(100, 120))
    store.put("a", base, kv(20))
    store.put("b", base[:10] + [7, 7, 7], kv(13))
    store.put("c", [1, 2, 3], kv(3))
    entry, n = store.lookup(base[:15] + [9, 9])
    assert entry.key == "a" and n == 15
    entry, n = store.lookup(base[:10] + [7, 7, 5])
    assert entry.key == "b" and n == 12
    entry, n = store.lookup([1, 2, 9])  # shorter than one chunk: found by direct comparison
    assert entry.key == "c" and n == 2
    entry, n = store.lookup([5, 5, 5, 5, 5, 5])
    assert entry is None and n == 0


def test_lookup_extends_past_the_last_full_chunk():
    store = PrefixKVStore(budget_tokens=100, chunk=8)
    seq = list(range(30))
    store.put("a", seq, kv(30))
    entry, n = store.lookup(seq[:21] + [99])  # 2 full chunks match, exact LCP is 21
    assert entry.key == "a" and n == 21
    entry, n = store.lookup(seq + [1, 2, 3])  # prefix longer than the entry
    assert n == 30


def test_lru_eviction_keeps_within_budget_and_evicts_least_recent():
    store = PrefixKVStore(budget_tokens=30, chunk=4)
    store.put("a", list(range(10)), kv(10))
    store.put("b", list(range(50, 60)), kv(10))
    store.put("c", list(range(70, 80)), kv(10))
    store.lookup(list(range(10)))  # touch a: b is now least recent
    store.put("d", list(range(90, 100)), kv(10))
    assert set(store.keys()) == {"a", "c", "d"}
    assert store.total_tokens == 30 and store.evictions == 1
    assert not store.put("huge", list(range(31)), kv(31))  # larger than the whole budget: not kept
    assert "huge" not in store and store.total_tokens == 30


def test_put_replaces_same_key_and_release_frees():
    store = PrefixKVStore(budget_tokens=100, chunk=4)
    store.put("a", list(range(10)), kv(10))
    store.put("a", list(range(20, 32)), kv(12))
    assert len(store) == 1 and store.total_tokens == 12
    assert store.lookup(list(range(10)))[0] is None  # the old sequence is gone from the index
    store.put("b", list(range(40, 45)), kv(5))
    store.release(["a", "unknown"])
    assert store.keys() == ["b"] and store.total_tokens == 5
    store.release()
    assert len(store) == 0 and store.total_tokens == 0 and not store._index


def test_put_rejects_kv_of_the_wrong_length():
    store = PrefixKVStore(budget_tokens=100)
    try:
        store.put("a", [1, 2, 3], kv(4))
    except ValueError as e:
        assert "a" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_helpers():
    assert chunk_hashes([1, 2, 3, 4, 5], 2) == chunk_hashes([1, 2, 3, 4, 9], 2)
    assert chunk_hashes([1, 2, 3, 4], 2)[1] != chunk_hashes([1, 2, 3, 5], 2)[1]
    a, b = np.array([1, 2, 3, 4]), np.array([1, 2, 5])
    assert common_prefix_len(a, b) == 2 and common_prefix_len(a, a) == 4
