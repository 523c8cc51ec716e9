"""HFEngine under ``model.compute_dtype=bfloat16`` over float32 weights: prefill and decode run in bf16
(autocast, through the model's forward: the fast step is skipped), within bf16 rounding of float32."""

from __future__ import annotations

import torch
from engine_helpers import teacher_forced

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine
from appo.models.precision import set_compute_dtype


def test_bf16_compute_decode_within_bf16_rounding_of_fp32(own_model, tiny_tokenizer):
    reqs = [GenerationRequest(tuple(range(5, 5 + n)), cache_key=str(n)) for n in (3, 9)]
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=3)
    engine = HFEngine(own_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=0)
    fp32 = engine.generate(reqs, params)
    assert engine._fast is not None  # float32 compute: the fast step runs
    set_compute_dtype(own_model, "bfloat16")
    got = engine.generate(reqs, params)
    assert engine._fast is None  # mixed precision: the model's forward under autocast
    assert all(p.dtype == torch.float32 for p in own_model.parameters())
    for req, g, f in zip(reqs, got, fp32):
        ref_lp, ref_ent, _ = teacher_forced(own_model, req.prefix_ids, g.token_ids)  # fp32 forward (no autocast)
        err = (torch.tensor(g.logprobs) - ref_lp).abs().max()
        assert 0 < float(err) < 0.1  # bf16 ran (not bit-equal), rounding-level apart
        assert float((torch.tensor(g.entropies) - ref_ent).abs().max()) < 0.1
        assert g.logprobs != f.logprobs
