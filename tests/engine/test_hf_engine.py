"""HFEngine sampling: exactness against full forwards, batching, seeds, stops, budgets, EOS, truncation."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import sharpen, teacher_forced

from appo.engine.base import Engine, GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine
from appo.engine.sampling import support_mask

TEXTS = ["What is 12 * 34 + 5?", "Who wrote the book? <search>", "hi", "<python>print(1 + 2)</python>\n<result>"]


def prompts(tok):
    return [tuple(tok(t)["input_ids"]) for t in TEXTS]


def test_protocol_and_greedy_equals_argmax_of_a_full_forward(sharp_model, tiny_tokenizer):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    assert isinstance(engine, Engine)
    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)]
    out = engine.generate(reqs, SamplingParams(temperature=0.0, max_new_tokens=12))
    for req, gen in zip(reqs, out):
        assert len(gen.token_ids) == 12 and gen.finish_reason == "length"
        lp, ent, logits = teacher_forced(sharp_model, req.prefix_ids, gen.token_ids)
        assert gen.token_ids == tuple(logits.argmax(-1).tolist())
        assert torch.allclose(torch.tensor(gen.logprobs), lp, atol=1e-5)
        assert torch.allclose(torch.tensor(gen.entropies), ent, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_sampled_logprobs_and_entropy_match_the_model_at_temperature(sharp_model, tiny_tokenizer, fast):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), fast_decode=fast)
    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)]
    out = engine.generate(reqs, SamplingParams(temperature=0.7, max_new_tokens=16, seed=3))
    for req, gen in zip(reqs, out):
        lp, ent, _ = teacher_forced(sharp_model, req.prefix_ids, gen.token_ids, temperature=0.7)
        assert torch.allclose(torch.tensor(gen.logprobs), lp, atol=1e-5)
        assert torch.allclose(torch.tensor(gen.entropies), ent, atol=1e-5)


def test_fast_decode_matches_the_model_forward(sharp_model, tiny_tokenizer):
    params = SamplingParams(temperature=1.0, max_new_tokens=20, seed=11)
    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)]
    a = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), fast_decode=True).generate(reqs, params)
    b = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), fast_decode=False).generate(reqs, params)
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < 1e-5


def test_batch_and_single_rows_agree(sharp_model, tiny_tokenizer):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    params = SamplingParams(temperature=0.0, max_new_tokens=10)
    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)]
    batched = engine.generate(reqs, params)
    for req, b in zip(reqs, batched):
        (single,) = engine.generate([req], params)
        assert single.token_ids == b.token_ids
        assert max(abs(p - q) for p, q in zip(single.logprobs, b.logprobs)) < 1e-5
        assert max(abs(p - q) for p, q in zip(single.entropies, b.entropies)) < 1e-5


def test_chunking_dedup_and_compaction_do_not_change_results(sharp_model, tiny_tokenizer):
    ps = prompts(tiny_tokenizer)
    reqs = [GenerationRequest(ps[i % 4], max_new_tokens=2 + i) for i in range(7)]  # rows 0/4, 1/5, 2/6 share prefixes
    params = SamplingParams(temperature=0.0, max_new_tokens=99)
    ref = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), compact_fraction=2.0).generate(reqs, params)
    for kwargs in ({"compact_fraction": 0.0, "max_batch_size": 3}, {"compact_fraction": 0.5, "max_batch_size": 2}):
        engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), **kwargs)
        out = engine.generate(reqs, params)
        assert [g.token_ids for g in out] == [g.token_ids for g in ref], kwargs
        for g, r in zip(out, ref):
            assert max(abs(p - q) for p, q in zip(g.logprobs, r.logprobs)) < 1e-5
        assert engine.stats.compactions > 0
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    engine.generate(reqs, params)
    assert engine.stats.deduplicated_rows == 3
    assert [len(g.token_ids) for g in ref] == [2 + i for i in range(7)]
    assert all(g.finish_reason == "length" for g in ref)


def test_same_seed_same_output_and_different_seed_differs(sharp_model, tiny_tokenizer):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)] * 2
    a = engine.generate(reqs, SamplingParams(max_new_tokens=15, seed=7))
    b = engine.generate(reqs, SamplingParams(max_new_tokens=15, seed=7))
    c = engine.generate(reqs, SamplingParams(max_new_tokens=15, seed=8))
    assert a == b
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    assert a[0].token_ids != a[4].token_ids  # duplicated prompts still sample independently


def test_stop_string_spanning_tokens_ends_at_the_completing_token(sharp_model, tiny_tokenizer):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    req = GenerationRequest(prompts(tiny_tokenizer)[0])
    params = SamplingParams(temperature=1.0, max_new_tokens=40, seed=5)
    (free,) = engine.generate([req], params)
    pieces = [tiny_tokenizer.decode([t]) for t in free.token_ids]
    # a stop string made of the end of token 10 and the start of token 11: it spans a token boundary
    i = next(i for i in range(8, 38) if len(pieces[i].strip()) >= 1 and len(pieces[i + 1].strip()) >= 1)
    stop = pieces[i][-1:] + pieces[i + 1][:1]
    text = tiny_tokenizer.decode(free.token_ids)
    first_end = text.index(stop) + len(stop)
    n_expected = next(n for n in range(1, 41) if len(tiny_tokenizer.decode(free.token_ids[:n])) >= first_end)
    (stopped,) = engine.generate([req], SamplingParams(temperature=1.0, max_new_tokens=40, seed=5, stop=("zzz", stop)))
    assert stopped.finish_reason == "stop" and stopped.stop_string == stop
    assert stopped.token_ids == free.token_ids[:n_expected]
    assert stopped.logprobs == free.logprobs[:n_expected]


def test_eos_ends_a_row_and_is_kept(sharp_model, tiny_tokenizer):
    req = GenerationRequest(prompts(tiny_tokenizer)[1])
    params = SamplingParams(temperature=1.0, max_new_tokens=30, seed=2)
    (free,) = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=()).generate([req], params)
    eos = free.token_ids[6]
    first = free.token_ids.index(eos)
    (ended,) = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=[eos]).generate([req], params)
    assert ended.finish_reason == "eos" and ended.token_ids == free.token_ids[: first + 1]
    default = HFEngine(sharp_model, tiny_tokenizer)
    assert tiny_tokenizer.eos_token_id in default.eos_token_ids


def test_per_request_budgets_and_zero(sharp_model, tiny_tokenizer):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    ps = prompts(tiny_tokenizer)
    reqs = [GenerationRequest(ps[0], max_new_tokens=1), GenerationRequest(ps[1]), GenerationRequest(ps[2],
                                                                                                    max_new_tokens=0)]
    out = engine.generate(reqs, SamplingParams(max_new_tokens=6, seed=0))
    assert [len(g.token_ids) for g in out] == [1, 6, 0]
    assert all(g.finish_reason == "length" for g in out)


@pytest.mark.parametrize("top_k,top_p", [(4, 1.0), (6, 0.7)])
def test_top_k_top_p_restrict_the_support(sharp_model, tiny_tokenizer, top_k, top_p):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)]
    out = engine.generate(reqs, SamplingParams(temperature=1.3, top_k=top_k, top_p=top_p, max_new_tokens=12, seed=1))
    outside_unrestricted = 0
    for req, gen in zip(reqs, out):
        lp, _, logits = teacher_forced(sharp_model, req.prefix_ids, gen.token_ids, temperature=1.3)
        assert torch.allclose(torch.tensor(gen.logprobs), lp, atol=1e-5)  # reported under the untruncated policy
        keep = support_mask(torch.log_softmax(logits / 1.3, -1), top_p=top_p, top_k=top_k)
        assert keep[torch.arange(len(gen.token_ids)), torch.tensor(gen.token_ids)].all()
        outside_unrestricted += int((~keep).sum())
    assert outside_unrestricted > 0  # the restriction actually removed tokens


def test_top_k_one_is_greedy(sharp_model, tiny_tokenizer):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)]
    a = engine.generate(reqs, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=8, seed=4))
    b = engine.generate(reqs, SamplingParams(temperature=0.0, max_new_tokens=8))
    assert [g.token_ids for g in a] == [g.token_ids for g in b]


def test_eager_attention_matches_sdpa(tiny_model_dir, sharp_model, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    eager = sharpen(AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval())
    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)]
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    for fast in (True, False):
        a = HFEngine(eager, tiny_tokenizer, eos_token_ids=(), fast_decode=fast).generate(reqs, params)
        b = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=()).generate(reqs, params)
        assert [g.token_ids for g in a] == [g.token_ids for g in b]
        assert all(max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < 1e-5 for x, y in zip(a, b))


def test_model_mode_is_restored_and_bad_input_is_named(own_model, tiny_tokenizer):
    engine = HFEngine(own_model, tiny_tokenizer)
    own_model.train()
    engine.generate([GenerationRequest((1, 2, 3))], SamplingParams(max_new_tokens=2, seed=0))
    assert own_model.training
    with pytest.raises(ValueError, match="prefix_ids is empty"):
        engine.generate([GenerationRequest(())], SamplingParams())
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        engine.generate([GenerationRequest((1, 10**6))], SamplingParams())
    with pytest.raises(ValueError, match="temperature"):
        engine.generate([GenerationRequest((1,))], SamplingParams(temperature=-1))
    with pytest.raises(ValueError, match="top_p"):
        engine.generate([GenerationRequest((1,))], SamplingParams(top_p=0.0))
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        HFEngine(own_model, None).generate([GenerationRequest((1,))], SamplingParams(stop=("x",)))
    with pytest.raises(ValueError, match="device"):
        HFEngine(own_model, tiny_tokenizer, device="meta")


def test_stop_prefilter_leaves_generations_unchanged(sharp_model, tiny_tokenizer, monkeypatch):
    """Issue 26: StopStrings skips decoding rows whose newest token cannot end a stop string; a batch with
    stop strings taken from its own free generations ends exactly as with every row decoded each step."""
    from appo.engine.sampling import StopStrings

    reqs = [GenerationRequest(p) for p in prompts(tiny_tokenizer)] * 2
    free = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=()).generate(
        reqs, SamplingParams(temperature=1.0, max_new_tokens=30, seed=7))
    texts = [tiny_tokenizer.decode(g.token_ids[5:20]) for g in free]
    stops = tuple(dict.fromkeys(s for t in texts for s in (t.strip()[:3],) if len(s) == 3 and s[-1].isascii()
                                and not s[-1].isspace()))[:4]
    assert stops
    params = SamplingParams(temperature=1.0, max_new_tokens=30, seed=7, stop=stops)
    fast = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=()).generate(reqs, params)
    monkeypatch.setattr(StopStrings, "check", StopStrings.check_all)
    full = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=()).generate(reqs, params)
    assert [(g.token_ids, g.logprobs, g.finish_reason, g.stop_string) for g in fast] == \
        [(g.token_ids, g.logprobs, g.finish_reason, g.stop_string) for g in full]
    assert any(g.finish_reason == "stop" for g in fast)
