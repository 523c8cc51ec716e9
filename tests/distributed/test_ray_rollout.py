"""Rollouts over a local Ray instance (2 CPUs, 127.0.0.1 only) with 2 workers, against the same strategy
run in this process: same rows, after a weight push, and after a worker is killed mid-step.

Tolerance: token ids, masks, tree links and stop reasons are equal; log-probs and entropies agree within
1e-4 (measured: about 2e-6). Each worker runs half of the prompts, so a row's forward runs in a batch of
another size and padding than in the single process, which moves float32 results by ~1e-6; a token could
only differ if a uniform draw fell that close to a boundary of the sampling CDF (the seeds here do not).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from ray_harness import TinyFactory, start_local_ray

from appo.agent import LoopLimits, PromptSpec, RolloutContext, StrategyConfig, run_strategy, teacher_forced_logp_fn
from appo.agent.strategy_options import TreeConfig
from appo.distributed.ray_rollout import RayRolloutPool, policy_weights
from appo.engine.base import SamplingParams
from appo.models.loading import frozen_copy
from appo.types import Example

QUESTIONS = ("What is 1+1?", "Who wrote it?", "Compute 7*6.", "Name a city.")
BS_TOL = 1e-3
TOL = 1e-4


@pytest.fixture(scope="module")
def ray_cluster():
    ray = start_local_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(ray_cluster, tiny_model_dir, tmp_path_factory):
    """A pool of 2 workers and an in-process copy of the same parts, both at perturbed weights with the
    initial ones as the previous policy (so APPO's Omega is not constant)."""
    torch.set_num_threads(1)
    block_dir = tmp_path_factory.mktemp("block")
    local = TinyFactory(str(tiny_model_dir))()
    previous = frozen_copy(local.model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in local.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02 * p.abs().mean())
    pool = RayRolloutPool(TinyFactory(str(tiny_model_dir), str(block_dir)), 2, anchor="previous", max_restarts=2)
    current = policy_weights(local.model)
    pool.set_weights(current, previous=policy_weights(previous, list(current)))
    yield pool, local, previous, block_dir
    pool.close()


def _ctx(local, previous, seed=5):
    return RolloutContext.create(local.engine, local.tokenizer, "tags", local.tools,
                                 SamplingParams(max_new_tokens=16), LoopLimits(max_tool_calls=2,
                                                                               max_response_tokens=40),
                                 seed=seed, current_logp_fn=teacher_forced_logp_fn(local.model),
                                 anchor_logp_fn=teacher_forced_logp_fn(previous), key_prefix="s0/")


def _prompts(ctx):
    return [PromptSpec(group=g, data_index=g, prompt_ids=tuple(ctx.protocol.build_prompt_ids(
        Example(id=q, question=q, answers=("1",), kind="math", metric="math_equiv", data_source="t"),
        ctx.tokenizer, ctx.tools))) for g, q in enumerate(QUESTIONS)]


def _same_rows(a, b) -> float:
    """Assert equal structure and tokens; return the largest |difference| of log-probs/entropies/scores."""
    assert len(a) == len(b)
    worst = 0.0
    for x, y in zip(a, b):
        for f in ("group", "uid", "prompt_ids", "response_ids", "loss_mask", "tool_spans", "stop_reason", "origin",
                  "parent", "split", "root", "data_index"):
            assert getattr(x, f) == getattr(y, f), (x.group, x.uid, f)
        for f in ("logprobs", "entropies", "omega", "scores"):
            u, v = getattr(x, f), getattr(y, f)
            assert (u is None) == (v is None) and len(u or ()) == len(v or ()), (x.group, x.uid, f)
            if u:
                worst = max(worst, float((torch.tensor(u) - torch.tensor(v)).abs().max()))
        if x.branch_score is not None:  # a product of two within-rollout z-scores: Omega's ~1e-5 float noise
            assert abs(x.branch_score - y.branch_score) < BS_TOL, (x.group, x.uid)  # comes back ~10x larger
    assert worst < TOL
    return worst


CASES = [("independent", StrategyConfig(n_total=3, n_initial=3)), ("appo", StrategyConfig(n_total=4, n_initial=2)),
         ("arpo", StrategyConfig(n_total=3, n_initial=2)), ("tree", StrategyConfig(3, 2, TreeConfig(expand_iters=0)))]


@pytest.mark.parametrize("name,cfg", CASES, ids=[c[0] for c in CASES])
def test_two_workers_match_one_process(setup, name, cfg):
    pool, local, previous, _ = setup
    ctx = _ctx(local, previous)
    want = run_strategy(name, ctx, _prompts(ctx), cfg)
    ctx2 = _ctx(local, previous)
    got = pool.run_strategy(name, ctx2, _prompts(ctx2), cfg)
    _same_rows(want.rows, got.rows)
    assert ctx2.rng.getstate() == ctx.rng.getstate()  # the driver's rng advanced as in one process
    assert set(got.metrics) == set(want.metrics)
    for k, v in want.metrics.items():
        assert got.metrics[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k
    if name == "appo":
        assert want.metrics["appo/omega_degenerate_rate"] < 1.0  # the previous weights differ: Omega varies
        assert sum(r.origin == "branch" for r in got.rows) == 8


def test_weights_reach_the_workers(setup):
    """Without the push the workers would sample from the initial weights: the rows differ."""
    pool, local, previous, _ = setup
    cfg = StrategyConfig(n_total=2, n_initial=2)
    stale = _Parts(local, previous)
    ctx = _ctx(stale, previous)
    before_push = run_strategy("independent", ctx, _prompts(ctx), cfg)
    ctx2 = _ctx(local, previous)
    got = pool.run_strategy("independent", ctx2, _prompts(ctx2), cfg)
    assert [r.response_ids for r in got.rows] != [r.response_ids for r in before_push.rows]


class _Parts:
    """``local``'s tokenizer and tools with an engine over ``model``."""

    def __init__(self, local, model):
        from appo.engine.hf import HFEngine

        self.engine = HFEngine(model, local.tokenizer, max_batch_size=16)
        self.tokenizer, self.tools, self.model = local.tokenizer, local.tools, model


def test_killed_worker_is_replaced_and_the_step_completes(setup, ray_cluster):
    """A worker is killed (ray.kill) while inside its second engine call of an APPO step; the pool starts a
    new actor, loads the current weights and re-runs that worker's prompts: the result is the same."""
    pool, local, previous, block_dir = setup
    cfg = StrategyConfig(n_total=4, n_initial=2)
    ctx = _ctx(local, previous, seed=9)
    want = run_strategy("appo", ctx, _prompts(ctx), cfg)
    before_pids, before_restarts = list(pool.pids), pool.restarts
    (Path(block_dir) / "armed").write_text("1")
    ctx2 = _ctx(local, previous, seed=9)
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(pool.run_strategy, "appo", ctx2, _prompts(ctx2), cfg)
        blocked = Path(block_dir) / "blocked"
        deadline = time.monotonic() + 120
        while not blocked.exists() or not blocked.read_text():
            assert time.monotonic() < deadline and not fut.done(), "no worker reached its second engine call"
            time.sleep(0.05)
        victim = before_pids.index(int(blocked.read_text()))
        ray_cluster.kill(pool.workers[victim])
        got = fut.result(timeout=300)
    (Path(block_dir) / "armed").unlink()
    assert pool.restarts == before_restarts + 1
    assert pool.pids[victim] != before_pids[victim] and pool.pids[1 - victim] == before_pids[1 - victim]
    _same_rows(want.rows, got.rows)


def test_hung_worker_is_timed_out_and_replaced(setup):
    """A worker that blocks (alive, never returning) inside its second engine call of an APPO step: after
    the pool's timeout it is killed and replaced, its prompts re-run, and the result is the same."""
    pool, local, previous, block_dir = setup
    cfg = StrategyConfig(n_total=4, n_initial=2)
    ctx = _ctx(local, previous, seed=11)
    want = run_strategy("appo", ctx, _prompts(ctx), cfg)
    pool.run_strategy("appo", _ctx(local, previous, seed=11), _prompts(ctx), cfg)  # unarmed: call counters reset
    before_pids, before_restarts = list(pool.pids), pool.restarts
    blocked = Path(block_dir) / "blocked"
    blocked.unlink(missing_ok=True)  # let one worker block again (the kill test used the claim)
    (Path(block_dir) / "armed").write_text("1")
    pool.timeout_s = 20.0  # a tiny block takes ~1 s here; the hung one sleeps for 120 s
    try:
        ctx2 = _ctx(local, previous, seed=11)
        t0 = time.monotonic()
        got = pool.run_strategy("appo", ctx2, _prompts(ctx2), cfg)
        took = time.monotonic() - t0
    finally:
        pool.timeout_s = None
        (Path(block_dir) / "armed").unlink()
    victim = before_pids.index(int(blocked.read_text()))
    assert pool.restarts == before_restarts + 1 and 20 <= took < 110
    assert pool.pids[victim] != before_pids[victim] and pool.pids[1 - victim] == before_pids[1 - victim]
    _same_rows(want.rows, got.rows)
