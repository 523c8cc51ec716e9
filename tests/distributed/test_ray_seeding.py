"""The seeding that lets rollouts be split over workers: a prompt's rows do not depend on the other prompts.

No Ray here: per-request engine seeds (``GenerationRequest.seed``, HFEngine's counter-based row streams)
and the strategies' keyed random choices, checked by running a subset of the prompts against all of
them, in process.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))
from agent_doubles import ScriptedEngine, StubPython, StubSearch, random_tags_policy  # noqa: E402

from appo.agent import LoopLimits, PromptSpec, RolloutContext, StrategyConfig, run_strategy  # noqa: E402
from appo.agent.loop import derive_seed  # noqa: E402
from appo.agent.strategy_options import AppoConfig, TreeConfig  # noqa: E402
from appo.engine.base import GenerationRequest, SamplingParams  # noqa: E402
from appo.engine.hf import HFEngine  # noqa: E402
from appo.engine.sampling import counter_uniforms, sample_next  # noqa: E402
from appo.types import Example  # noqa: E402

QUESTIONS = ("What is 1+1?", "Who wrote it?", "Compute 7*6.", "Name a city.")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one torch thread (the shared ``one_thread`` fixture)."""


def test_counter_uniforms_are_a_function_of_seed_and_counter():
    u = counter_uniforms([5, 5, 6, 2**64 + 5], [0, 1, 0, 0])
    assert u.dtype == torch.float32 and u.shape == (4,)
    assert u[0] != u[1] and u[0] != u[2] and u[3] == u[0]  # seeds are taken modulo 2^64
    assert torch.equal(counter_uniforms([6, 5], [0, 1]), torch.stack([u[2], u[1]]))  # order-free
    big = counter_uniforms(list(range(20000)), [3] * 20000)
    assert 0.0 <= float(big.min()) and float(big.max()) < 1.0
    assert abs(float(big.mean()) - 0.5) < 0.01 and abs(float((big < 0.1).float().mean()) - 0.1) < 0.01


def test_sample_next_takes_given_uniforms():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    p = torch.softmax(logits, -1)
    tok, _, _ = sample_next(logits, 1.0, uniforms_B=torch.tensor([0.0, 0.999]))
    # u = (1 - U) * mass: U = 0 takes the last token with mass, U close to 1 the first
    assert tok.tolist() == [2, 0]
    g = torch.Generator().manual_seed(3)
    u = torch.rand(2, 1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sample_next(logits, 1.0, generator=g)[0], sample_next(logits, 1.0, uniforms_B=u[:, 0])[0])
    assert p.shape == (2, 3)


def test_hf_seeded_rows_do_not_depend_on_the_batch(tiny_model, tiny_tokenizer):
    """The same seeded request alone, in a larger call, in another order and in chunks of one: same tokens;
    log-probs within float round-off of the batched forward (measured up to ~2e-6)."""
    model = tiny_model
    with torch.no_grad():  # peaked distributions, as in the engine tests
        for n, p in model.named_parameters():
            if "norm" not in n:
                p.mul_(4.0)
    engine = HFEngine(model, tiny_tokenizer, max_batch_size=8)
    enc = lambda s: tuple(tiny_tokenizer.encode(s))  # noqa: E731
    a = GenerationRequest(enc("What is 12 * 3"), seed=11)
    b = GenerationRequest(enc("Who wrote"), seed=12)
    c = GenerationRequest(enc("hello there friend, what"), seed=99)
    params = SamplingParams(max_new_tokens=24, seed=5)
    alone = engine.generate([a], params)[0]
    engine.release()
    mixed = engine.generate([c, b, a, c], replace(params, seed=77))
    engine.release()
    engine.max_batch_size = 1
    chunked = engine.generate([b, a], params)
    assert len(alone.token_ids) == 24
    for got in (mixed[2], chunked[1]):
        assert got.token_ids == alone.token_ids
        assert max(abs(x - y) for x, y in zip(got.logprobs, alone.logprobs)) < 1e-5
        assert max(abs(x - y) for x, y in zip(got.entropies, alone.entropies)) < 1e-5
    assert mixed[1].token_ids == chunked[0].token_ids
    assert mixed[0].token_ids == mixed[3].token_ids  # same seed and prefix, same row
    other = engine.generate([replace(a, seed=12)], params)[0]
    assert other.token_ids != alone.token_ids


def test_hf_unseeded_rows_still_follow_the_call_seed(tiny_model, tiny_tokenizer):
    engine = HFEngine(tiny_model, tiny_tokenizer)
    reqs = [GenerationRequest((1, 2, 3)), GenerationRequest((4, 5))]
    x = engine.generate(reqs, SamplingParams(max_new_tokens=8, seed=1))
    y = engine.generate(reqs, SamplingParams(max_new_tokens=8, seed=1))
    z = engine.generate(reqs, SamplingParams(max_new_tokens=8, seed=2))
    assert [g.token_ids for g in x] == [g.token_ids for g in y] != [g.token_ids for g in z]
    with pytest.raises(ValueError, match="seed"):
        engine.generate([GenerationRequest((1, 2), seed=-1)], SamplingParams(max_new_tokens=2))


def test_derive_seed_is_stable():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3) != derive_seed(1, 3, 2)
    assert derive_seed(0, "arpo", 1, 2, 3) == 3358367334393097127  # fixed across processes and versions
    assert 0 <= derive_seed("x") < 2**63


# ---------------------------------------------------------------------------------- strategies
class PerRequestSeedEngine:
    """The scripted engine, run request by request with each request's own seed: a row is a function of
    its request alone, as HFEngine's seeded rows are (without float round-off)."""

    def __init__(self, tok):
        self.inner = ScriptedEngine(tok, random_tags_policy(tok))

    def generate(self, requests, params):
        assert all(r.seed is not None for r in requests), "the loop must seed every request"
        return [self.inner.generate([r], replace(params, seed=r.seed))[0] for r in requests]

    def release(self, keys=None):
        self.inner.release(keys)


def _ex(q):
    return Example(id=f"t/{q}", question=q, answers=("1",), kind="math", metric="math_equiv", data_source="t")


def _run(tok, name, groups, cfg, seed=3):
    ctx = RolloutContext.create(PerRequestSeedEngine(tok), tok, "tags", [StubPython(), StubSearch()],
                                SamplingParams(max_new_tokens=48), LoopLimits(max_tool_calls=3,
                                                                              max_response_tokens=160),
                                seed=seed, current_logp_fn=lambda rows: [torch.tensor(r.logprobs) * 0.9 for r in rows],
                                anchor_logp_fn=lambda rows: [torch.tensor(r.logprobs) for r in rows])
    prompts = [PromptSpec(group=g, prompt_ids=tuple(ctx.protocol.build_prompt_ids(_ex(QUESTIONS[g]), tok, ctx.tools)),
                          data_index=g) for g in groups]
    return run_strategy(name, ctx, prompts, cfg)


@pytest.mark.parametrize("name,cfg", [
    ("independent", StrategyConfig(n_total=4, n_initial=4)),
    ("arpo", StrategyConfig(n_total=6, n_initial=2)),
    ("appo", StrategyConfig(n_total=6, n_initial=3)),
    ("appo", StrategyConfig(6, 3, AppoConfig(points="random"))),
    ("tree", StrategyConfig(6, 2, TreeConfig(expand_nodes=1, expand_iters=0))),
])
def test_a_prompts_rows_do_not_depend_on_the_other_prompts(tiny_tokenizer, name, cfg):
    full = _run(tiny_tokenizer, name, [0, 1, 2, 3], cfg)
    parts = [_run(tiny_tokenizer, name, [0, 1], cfg), _run(tiny_tokenizer, name, [2], cfg),
             _run(tiny_tokenizer, name, [3], cfg)]
    assert [r for p in parts for r in p.rows] == full.rows
    assert any(r.tool_spans for r in full.rows)  # the scripted policy calls tools: forks and expansions happen
    if name in ("arpo", "tree", "appo"):
        assert any(r.origin == "branch" for r in full.rows)
    if name == "arpo":
        assert sum(p.metrics["arpo/forks"] for p in parts) == full.metrics["arpo/forks"] > 0
    other = _run(tiny_tokenizer, name, [0, 1, 2, 3], cfg, seed=4)
    assert other.rows != full.rows
