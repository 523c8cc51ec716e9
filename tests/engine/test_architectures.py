"""The fast decode step matches the model's own forward on the Llama-family variants it claims to support."""

from __future__ import annotations

import pytest
import torch

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.fast_decode import FastDecoder
from appo.engine.hf import HFEngine


def make(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    common = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
    if kind == "llama-gqa":
        config, cls = LlamaConfig(**common, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                                             "factor": 8.0,
                                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                             "original_max_position_embeddings": 64}), LlamaForCausalLM
    elif kind == "qwen2-bias":
        config, cls = Qwen2Config(**common), Qwen2ForCausalLM
    else:
        config, cls = Qwen3Config(**common, head_dim=16), Qwen3ForCausalLM
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))  # norms away from 1 so a skipped norm would show
            else:
                p.mul_(4.0)
    return model


@pytest.mark.parametrize("kind", ["llama-gqa", "qwen2-bias", "qwen3-qknorm"])
def test_fast_decode_equals_model_forward(kind):
    model = make(kind)
    assert FastDecoder.build(model) is not None
    reqs = [GenerationRequest(tuple(range(3, 3 + n))) for n in (5, 11, 2)]
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=0)
    fast = HFEngine(model, None, eos_token_ids=()).generate(reqs, params)
    slow = HFEngine(model, None, eos_token_ids=(), fast_decode=False).generate(reqs, params)
    for a, b in zip(fast, slow):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-5
    with torch.inference_mode():  # and both equal a plain full forward
        seq = list(reqs[1].prefix_ids) + list(fast[1].token_ids)
        lp = torch.log_softmax(model(torch.tensor([seq])).logits[0, len(reqs[1].prefix_ids) - 1 : -1], -1)
    ref = lp.gather(-1, torch.tensor(fast[1].token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(fast[1].logprobs), ref, atol=1e-5)


def test_unsupported_layers_fall_back_to_the_forward():
    model = make("llama-gqa")

    class Wrapped(torch.nn.Linear):
        pass

    lin = model.model.layers[0].self_attn.q_proj
    wrapped = Wrapped(lin.in_features, lin.out_features, bias=False)
    wrapped.weight = lin.weight
    model.model.layers[0].self_attn.q_proj = wrapped  # e.g. an adapter: the fast step must not bypass it
    assert FastDecoder.build(model) is None
    (gen,) = HFEngine(model, None, eos_token_ids=()).generate([GenerationRequest((3, 4, 5))],
                                                              SamplingParams(max_new_tokens=3))
    assert len(gen.token_ids) == 3
