"""Sparse trie attention (appo.models.tree_attention): the chunked root-path attention equals dense
attention under the ancestor mask (outputs and gradients), with GQA heads and any chunk size; the update's
shared-prefix layout really takes the sparse path and keeps the dense path's logits and gradients."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from appo.models.tree_attention import (
    layout_from_mask,
    layout_from_parents,
    tree_attention,
    tree_forward_logits,
    trie_of_sequences,
)


def _sequences(seed: int = 0, groups: int = 3) -> list[list[int]]:
    """Groups sharing a prompt, with rows that branch off each other at random points."""
    rng = random.Random(seed)
    out = []
    for _ in range(groups):
        prompt = [rng.randrange(50) for _ in range(rng.randint(1, 9))]
        rows = []
        for _ in range(rng.randint(1, 5)):
            base = rng.choice(rows)[: rng.randint(len(prompt), len(rows[0]))] if rows and rng.random() < 0.5 else prompt
            rows.append(base + [rng.randrange(50) for _ in range(rng.randint(0, 12))])
        out += rows
    return out


def _dense_mask(parent: list[int]) -> torch.Tensor:
    N = len(parent)
    allowed = torch.eye(N, dtype=torch.bool)
    for n in range(N):
        p = parent[n]
        while p >= 0:
            allowed[n, p] = True
            p = parent[p]
    return allowed


@pytest.mark.parametrize("chunk", [1, 3, 64])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)])
def test_chunked_attention_equals_dense_masked(chunk, heads):
    trie = trie_of_sequences(_sequences(seed=chunk))
    N = len(trie.ids_S)
    Hq, Hk = heads
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, Hq, N, 8, generator=g, requires_grad=True)
    k = torch.randn(1, Hk, N, 8, generator=g, requires_grad=True)
    v = torch.randn(1, Hk, N, 8, generator=g, requires_grad=True)
    layout = layout_from_parents(trie.parent_S, trie.depth_S, chunk)
    got = tree_attention(q, k, v, layout, 0.3)  # [1, N, H, D]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=_dense_mask(trie.parent_S)[None, None], scale=0.3,
                                         enable_gqa=Hq != Hk).transpose(1, 2)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    w = torch.randn(ref.shape, generator=g)
    grads = [torch.autograd.grad((x * w).sum(), (q, k, v)) for x in (got, ref)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_layout_from_mask_reads_the_trie_and_refuses_other_masks():
    trie = trie_of_sequences(_sequences(seed=5))
    allowed = _dense_mask(trie.parent_S)[None]
    depth = torch.tensor(trie.depth_S)[None]
    a = layout_from_mask(allowed, depth)
    b = layout_from_parents(trie.parent_S, trie.depth_S)
    for x, y in ((a.q_idx_MC, b.q_idx_MC), (a.k_idx_MK, b.k_idx_MK), (a.mask_M1CK, b.mask_M1CK), (a.src_N, b.src_N)):
        assert torch.equal(x, y)
    causal = torch.ones(1, 6, 6, dtype=torch.bool).tril()  # plain causal: node 5 sees 0..4 at depth 0 - not a trie
    assert layout_from_mask(causal, torch.zeros(1, 6, dtype=torch.long)) is None
    with pytest.raises(ValueError, match="creation order"):
        layout_from_parents([-1, 2, 0], [0, 2, 1])


@pytest.fixture()
def tree_batch(tiny_tokenizer):
    from appo.train.shared_prefix import tree_micro_batches
    from tests.train.test_shared_prefix import _batch

    return tree_micro_batches(_batch(tiny_tokenizer, "appo", True, seed=4))[0]


def test_model_forward_sparse_equals_dense(tiny_model, tree_batch):
    t = tree_batch
    tiny_model.train()
    out = []
    for layout in (None, layout_from_mask(t.allowed_GSS, t.position_ids_GS, chunk=5)):
        tiny_model.zero_grad(set_to_none=True)
        z, sparse = tree_forward_logits(tiny_model, t.logit_cols_U, t.input_ids_GS, t.position_ids_GS,
                                        t.allowed_GSS[:, None], layout)
        assert sparse == (layout is not None)
        (z.float() ** 2).mean().backward()
        out.append((z.detach(), {k: p.grad.clone() for k, p in tiny_model.named_parameters()}))
    (z0, g0), (z1, g1) = out
    torch.testing.assert_close(z1, z0, atol=1e-5, rtol=0)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=0, msg=k)


def test_shared_prefix_logprobs_run_the_sparse_path(tiny_model, tree_batch, monkeypatch):
    from appo.models import tree_attention
    from appo.train.shared_prefix import tree_logprobs

    monkeypatch.setattr(tree_attention, "SPARSE_PAIR_COST", 0.0)

    before = tree_attention._STATE["calls"]
    with torch.no_grad():
        tree_logprobs(tiny_model, tree_batch)
    assert tree_attention._STATE["calls"] - before == tiny_model.config.num_hidden_layers


def test_response_logits_one_sequence_without_padding_nodes(tiny_model, tree_batch, monkeypatch):
    from appo.models import tree_attention
    from appo.models.tree_attention import tree_response_logits

    monkeypatch.setattr(tree_attention, "SPARSE_PAIR_COST", 0.0)  # take the sparse path on this small batch

    t = tree_batch
    G, S = t.input_ids_GS.shape
    real = int((t.allowed_GSS.sum(-1) > 1).sum()) + G  # non-root nodes plus one root per group
    assert real < G * S  # the groups differ in size: the [G, S] layout pads
    shapes = []
    forward = tree_attention.tree_forward_logits

    def spy(model, keep, ids, *a):
        shapes.append(tuple(ids.shape))
        return forward(model, keep, ids, *a)

    monkeypatch.setattr(tree_attention, "tree_forward_logits", spy)
    tiny_model.train()
    out = []
    for sparse in (False, True):
        tiny_model.zero_grad(set_to_none=True)
        z = tree_response_logits(tiny_model, t, t.allowed_GSS[:, None], sparse=sparse)
        (z.float() ** 2).mean().backward()
        out.append((z.detach(), {k: p.grad.clone() for k, p in tiny_model.named_parameters()}))
    assert shapes == [(1, real)]
    (z0, g0), (z1, g1) = out
    assert z0.shape == (len(t.logit_group_K), tiny_model.config.vocab_size)
    torch.testing.assert_close(z1, z0, atol=1e-5, rtol=0)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=0, msg=k)


def test_sparse_path_under_gradient_checkpointing(tiny_model, tree_batch, monkeypatch):
    """The recomputed forward of a checkpointed layer gets the same keywords, so it takes the sparse path too."""
    from appo.models import tree_attention
    from appo.models.tree_attention import tree_response_logits

    monkeypatch.setattr(tree_attention, "SPARSE_PAIR_COST", 0.0)

    t = tree_batch
    out = []
    for sparse, ckpt in ((False, False), (True, True)):
        if ckpt:
            tiny_model.gradient_checkpointing_enable()
        tiny_model.train()
        tiny_model.zero_grad(set_to_none=True)
        before = tree_attention._STATE["calls"]
        z = tree_response_logits(tiny_model, t, t.allowed_GSS[:, None], sparse=sparse)
        (z.float() ** 2).mean().backward()
        calls = tree_attention._STATE["calls"] - before
        out.append({k: p.grad.clone() for k, p in tiny_model.named_parameters()})
    assert calls == 2 * tiny_model.config.num_hidden_layers  # forward, then the recompute in the backward
    for k in out[0]:
        torch.testing.assert_close(out[1][k], out[0][k], atol=1e-6, rtol=0, msg=k)


def test_roots_only_trie_outputs_the_values():
    layout = layout_from_parents([-1, -1, -1], [0, 0, 0])
    v = torch.randn(1, 2, 3, 4)
    out = tree_attention(torch.randn(1, 4, 3, 4), torch.randn(1, 2, 3, 4), v, layout, None)
    torch.testing.assert_close(out, v.repeat_interleave(2, dim=1).transpose(1, 2))


def test_sparse_pays_for_long_responses_under_a_prompt_only():
    from appo.models.tree_attention import sparse_pays

    def group(prompt: int, rows: int, n: int) -> tuple:
        seqs = [[1] * prompt + [2 + r] + [0] * (n - 1) for r in range(rows)]  # rows diverge at their first token
        t = trie_of_sequences(seqs)
        return layout_from_parents(t.parent_S, t.depth_S), len(t.ids_S)

    long_layout, S = group(57, 8, 64)  # the bench's shape: one group
    assert sparse_pays(long_layout, 1, S)
    short_layout, S = group(53, 8, 20)  # short responses padded to a chunk: dense is cheaper
    assert not sparse_pays(short_layout, 1, S)


def test_the_sdpa_wrapper_passes_other_calls_through_unchanged(tiny_model):
    """Installed once, the wrapper leaves a plain forward (no layout keyword) exactly as transformers' sdpa."""
    from transformers.modeling_utils import AttentionInterface

    from appo.models import tree_attention

    ids = torch.tensor([[5, 6, 7, 8, 9]])
    tree_attention.install()
    wrapped = AttentionInterface._global_mapping["sdpa"]
    assert wrapped.appo_original is not wrapped
    with torch.no_grad():
        calls = tree_attention._STATE["calls"]
        after = tiny_model(input_ids=ids).logits
        assert tree_attention._STATE["calls"] == calls
        AttentionInterface._global_mapping["sdpa"] = wrapped.appo_original
        try:
            before = tiny_model(input_ids=ids).logits
        finally:
            AttentionInterface._global_mapping["sdpa"] = wrapped
    assert torch.equal(before, after)
