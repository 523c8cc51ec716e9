"""The fast step's fused q/k/v and gate/up weight copies follow the model: kept while the weights are
unchanged, rebuilt after an in-place update (an optimizer step), never stale."""

from __future__ import annotations

import torch

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine


def test_fused_copies_are_kept_then_rebuilt_after_an_update(tiny_model, tiny_tokenizer):
    engine = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=0)
    reqs = [GenerationRequest(tuple(tiny_tokenizer("What is 12 * 34?")["input_ids"]))]
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    before = engine.generate(reqs, params)
    fast = engine._fast
    assert fast is not None and fast.fused_bytes > 0
    engine.generate(reqs, params)
    assert engine._fast is fast  # unchanged weights: no rebuild
    opt = torch.optim.SGD(tiny_model.parameters(), lr=1.0)
    for layer in tiny_model.model.layers:  # a gradient on the fused projections only
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.up_proj):
            lin.weight.grad = torch.randn_like(lin.weight) * 0.5
    opt.step()
    after = engine.generate(reqs, params)
    assert engine._fast is not fast
    ref = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=(), fast_decode=False).generate(reqs, params)
    assert after[0].token_ids == ref[0].token_ids
    assert max(abs(a - b) for a, b in zip(after[0].logprobs, ref[0].logprobs)) < 1e-4
    assert after[0].logprobs != before[0].logprobs


def test_unfused_step_matches_the_forward(tiny_model, tiny_tokenizer):
    from appo.engine.fast_decode import FastDecoder

    engine = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=0)
    reqs = [GenerationRequest(tuple(range(5, 5 + n))) for n in (3, 9)]
    params = SamplingParams(temperature=1.0, max_new_tokens=10, seed=3)
    engine.generate(reqs, params)
    engine._fast = FastDecoder.build(tiny_model, fuse=False)  # kept: the fingerprint is unchanged
    assert engine._fast.fused_bytes == 0
    got = engine.generate(reqs, params)
    assert engine._fast.fused_bytes == 0
    ref = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=(), fast_decode=False).generate(reqs, params)
    for g, r in zip(got, ref):
        assert g.token_ids == r.token_ids
        assert max(abs(a - b) for a, b in zip(g.logprobs, r.logprobs)) < 1e-5
