"""Prefix KV reuse: forks and multi-turn extensions reuse kept caches and match recomputation from scratch."""

from __future__ import annotations

import torch

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine
from appo.engine.scoring import score_sequences

TEXTS = ["What is 12 * 34 + 5? <think>", "Who wrote the book? <search>", "<python>print(1 + 2)</python>"]


def close(a, b, tol=1e-5):
    return len(a) == len(b) and max((abs(x - y) for x, y in zip(a, b)), default=0.0) <= tol


def rollouts(engine, tok, n_new=16, seed=0):
    prompts = [tuple(tok(t)["input_ids"]) for t in TEXTS]
    reqs = [GenerationRequest(p, cache_key=f"r{i}") for i, p in enumerate(prompts)]
    return prompts, engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=n_new, seed=seed))


def test_forks_at_any_positions_reuse_the_rollout_cache_and_match_scratch(sharp_model, tiny_tokenizer):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    prompts, outs = rollouts(engine, tiny_tokenizer)
    assert set(engine.store.keys()) == {"r0", "r1", "r2"}
    assert engine.store.get("r1").n_tokens == len(prompts[1]) + 16 - 1  # prefix + generated[:-1]
    # (rollout, position) pairs: several per rollout, the first and last response positions included
    pairs = [(0, 0), (0, 9), (1, 3), (1, 14), (2, 15), (2, 10)]
    forks = [GenerationRequest(prompts[i] + outs[i].token_ids[: t + 1], max_new_tokens=4 + t % 5) for i, t in pairs]
    forks.append(GenerationRequest(tuple(tiny_tokenizer("unrelated prompt")["input_ids"])))  # no reuse in the batch
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=42)
    engine.reset_stats()
    forked = engine.generate(forks, params)
    prefix_lens = [len(f.prefix_ids) for f in forks[:-1]]
    assert engine.stats.cache_hits == len(pairs)
    assert engine.stats.reused_tokens == sum(n - 1 for n in prefix_lens)
    assert engine.stats.prefill_tokens == len(pairs) + len(forks[-1].prefix_ids)  # only the last token of each fork
    scratch = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=0).generate(forks, params)
    for f, s in zip(forked, scratch):
        assert f.token_ids == s.token_ids
        assert close(f.logprobs, s.logprobs) and close(f.entropies, s.entropies)
    # and against teacher-forced scoring of the whole sequence, from scratch
    scores = score_sequences(sharp_model, [f.prefix_ids + g.token_ids for f, g in zip(forks, forked)],
                             [len(f.prefix_ids) for f in forks], batch_size=3)
    for g, (lp, ent) in zip(forked, scores):
        assert close(g.logprobs, lp.tolist()) and close(g.entropies, ent.tolist())


def test_multi_turn_extension_reuses_and_matches_scratch(sharp_model, tiny_tokenizer):
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=())
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=9)
    prompt = tuple(tiny_tokenizer(TEXTS[0])["input_ids"])
    (turn1,) = engine.generate([GenerationRequest(prompt, cache_key="conv")], params)
    result = tuple(tiny_tokenizer("\n<result>\n42\n</result>\n")["input_ids"])
    second = GenerationRequest(prompt + turn1.token_ids + result, cache_key="conv")
    engine.reset_stats()
    (turn2,) = engine.generate([second], params)
    kept = len(prompt) + len(turn1.token_ids) - 1
    assert engine.stats.reused_tokens == kept and engine.stats.prefill_tokens == 1 + len(result)
    assert engine.store.keys() == ["conv"]  # the same key now holds the longer conversation
    assert engine.store.get("conv").n_tokens == len(second.prefix_ids) + 12 - 1
    (ref,) = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=0).generate([second], params)
    assert turn2.token_ids == ref.token_ids and close(turn2.logprobs, ref.logprobs)
    # a third turn on top of the second
    third = GenerationRequest(second.prefix_ids + turn2.token_ids + result)
    engine.reset_stats()
    (t3,) = engine.generate([third], params)
    (r3,) = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=0).generate([third], params)
    assert engine.stats.reused_tokens == len(second.prefix_ids) + 12 - 1
    assert t3.token_ids == r3.token_ids and close(t3.logprobs, r3.logprobs)


def test_reuse_with_the_model_forward_path_and_mixed_suffix_lengths(sharp_model, tiny_tokenizer):
    """Rows reusing caches of different lengths with suffixes of different lengths in one prefill."""
    engine = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), fast_decode=False, prefill_chunk_tokens=8)
    prompts, outs = rollouts(engine, tiny_tokenizer, n_new=16, seed=3)
    extra = [tuple(tiny_tokenizer(s)["input_ids"]) for s in ("\n<result>\n7\n</result>\n", "x",
                                                             " and then some more text")]
    reqs = [GenerationRequest(prompts[i] + outs[i].token_ids[: 4 + 5 * i] + extra[i]) for i in range(3)]
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    engine.reset_stats()
    got = engine.generate(reqs, params)
    assert engine.stats.reused_tokens == sum(len(prompts[i]) + 4 + 5 * i for i in range(3))
    ref = HFEngine(sharp_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=0).generate(reqs, params)
    for g, r in zip(got, ref):
        assert g.token_ids == r.token_ids and close(g.logprobs, r.logprobs)


def test_release_budget_and_weight_updates(own_model, tiny_tokenizer):
    engine = HFEngine(own_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=80)
    prompts, outs = rollouts(engine, tiny_tokenizer, n_new=20)
    assert engine.store.total_tokens <= 80 and len(engine.store) < 3  # LRU eviction kept the newest
    assert engine.kv_bytes_per_token == 2 * 4 * 4 * 32 * 4
    engine.release()
    assert len(engine.store) == 0
    engine = HFEngine(own_model, tiny_tokenizer, eos_token_ids=())
    prompts, outs = rollouts(engine, tiny_tokenizer, n_new=10)
    engine.release(["r1"])
    assert set(engine.store.keys()) == {"r0", "r2"}
    # an in-place weight update (as an optimizer step does) invalidates kept caches and is seen at once
    fork = GenerationRequest(prompts[0] + outs[0].token_ids[:5])
    params = SamplingParams(temperature=0.0, max_new_tokens=5)
    (before,) = engine.generate([fork], params)
    with torch.no_grad():
        own_model.model.layers[0].mlp.down_proj.weight.mul_(-3.0)
    engine.reset_stats()
    (after,) = engine.generate([fork], params)
    assert engine.stats.stale_releases == 1 and engine.stats.reused_tokens == 0 and len(engine.store) == 0
    (ref,) = HFEngine(own_model, tiny_tokenizer, eos_token_ids=(), cache_budget_tokens=0).generate([fork], params)
    assert after.token_ids == ref.token_ids and close(after.logprobs, ref.logprobs)
    assert not close(after.logprobs, before.logprobs)
    engine.set_model(own_model)
    assert len(engine.store) == 0
