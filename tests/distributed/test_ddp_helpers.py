"""The distributed helpers' pure parts, in one process: prompt shards, strategy resolution, metric
reduction rules, and that one process never touches torch.distributed."""

from __future__ import annotations

import pytest
import torch.distributed as tdist

from appo.distributed.ddp import DistEnv, _reduce, init_distributed, resolve_strategy


def test_shards_take_the_rth_slice_of_every_mini_batch():
    envs = [DistEnv(rank=r, world_size=2) for r in range(2)]
    assert [e.shard_positions(8, 4) for e in envs] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert envs[1].shard_prompts(list("abcdefgh"), 4) == list("cdgh")
    assert DistEnv().shard_prompts([5, 3, 9], 1) == [5, 3, 9]  # one process: everything, in order
    with pytest.raises(ValueError, match="multiple of the world size"):
        envs[0].shard_positions(6, 3)
    four = [DistEnv(rank=r, world_size=4).shard_list(list(range(10))) for r in range(4)]
    assert sum(four, []) == list(range(10))  # validation shards rebuild the list in order


def test_strategy_resolution():
    assert resolve_strategy("auto", 1) == "none"
    assert resolve_strategy("fsdp2", 1) == "none"  # one process: no wrapper at all
    assert resolve_strategy("auto", 4) == "ddp"
    assert resolve_strategy("fsdp2", 4) == "fsdp2"
    with pytest.raises(ValueError, match="actor.strategy=ddp"):
        resolve_strategy("none", 2)
    with pytest.raises(ValueError, match="fsdp2"):
        resolve_strategy("fsdp", 2)


def test_metric_reduction_rules():
    assert _reduce("rollout/rows", [8.0, 8.0]) == 16.0
    assert _reduce("critic/appo/branch_rows", [3.0, 5.0]) == 8.0
    assert _reduce("rollout/stop/eos", [1.0, 2.0]) == 3.0
    assert _reduce("response_length/max", [7.0, 9.0]) == 9.0
    assert _reduce("critic/score/min", [0.5, -1.0]) == -1.0
    assert _reduce("timing_s/gen", [2.0, 3.0]) == 3.0
    assert _reduce("critic/score/mean", [0.25, 0.75]) == 0.5


def test_one_process_makes_no_distributed_call(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = init_distributed("auto", "cpu")
    assert env == DistEnv() and not tdist.is_initialized()
    metrics = {"rollout/rows": 8.0}
    assert env.reduce_metrics(metrics) is metrics and env.all_sum(3.5) == 3.5 and env.lockstep([1, 2]) == [1, 2]
    assert env.loss_scale() == 1.0 and env.rank_seed(17) == 17
