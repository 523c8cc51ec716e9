"""The trainer end to end on a tiny model: every algorithm runs, weights move, logs and dumps appear."""

from __future__ import annotations

import json

import pytest
import torch
from run_helpers import tiny_base, tiny_config
from safetensors.torch import load_file

from appo.train.trainer import Trainer, train


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("base") / "model")


@pytest.mark.parametrize("algorithm", ["appo", "grpo", "arpo", "tree_grpo"])
def test_one_step_per_algorithm(base, tmp_path, algorithm):
    cfg = tiny_config(base, tmp_path / "run", f"algorithm.name={algorithm}", "trainer.total_training_steps=1")
    before = load_file(base / "model.safetensors")
    result = train(cfg)
    assert result.steps == 1
    m = result.history[0]
    assert m["rollout/rows"] == 2 * 4  # train_batch_size x rollout.n, whatever the strategy
    if algorithm == "appo":  # arpo and tree fork at tool results, which a random model rarely reaches
        assert m["rollout/branches_per_prompt"] == 2
    # APPO trains its initial rows only (branch rows are signal); the baselines train every row they sample
    assert m["rollout/trained_row_rate"] == (0.5 if algorithm == "appo" else 1.0)
    after = load_file(tmp_path / "run" / "checkpoints" / "step_000001" / "model" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no weight changed after one step with a varied reward"
    for key in ("critic/score/mean", "actor/pg_clipfrac", "actor/grad_norm", "response_length/mean", "timing_s/gen",
                "rollout/tool_calls_per_rollout", "rollout/truncations"):
        assert key in m, key


def test_run_dir_contents(base, tmp_path):
    cfg = tiny_config(base, tmp_path / "run", "trainer.total_training_steps=2")
    train(cfg)
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert (run / "config.yaml").read_text().count("total_training_steps: 2") == 1
    dump = json.loads((run / "rollouts" / "step_000001.json").read_text())
    rows = [r for p in dump["prompts"] for r in p["rows"]]
    assert len(rows) == 8
    branches = [r for r in rows if r["origin"] == "branch"]
    assert branches and all(r["parent"] is not None and r["split"] is not None for r in branches)
    initial = [r for r in rows if r["origin"] == "initial"]
    assert all(len(r["tokens"]) == len(r["entropy"]) == len(r["advantage"]) == len(r["score"]) for r in initial)
    assert all(r["trained"] is True for r in initial) and all(r["trained"] is False for r in branches)


def test_previous_anchor_is_the_policy_before_the_last_update(base, tmp_path):
    cfg = tiny_config(base, tmp_path / "run", "trainer.total_training_steps=1")
    trainer = Trainer(cfg)
    start = {k: v.clone() for k, v in trainer.c.model.state_dict().items()}
    trainer.train_step(0)
    prev = trainer.c.prev_model.state_dict()
    assert all(torch.equal(prev[k], start[k]) for k in start)
    assert any(not torch.equal(trainer.c.model.state_dict()[k], start[k]) for k in start)


def test_sampled_validation_with_a_greedy_pass(base, tmp_path):
    # k = 3 samples at T = 1 per held-out problem, then a greedy pass over the same problems
    cfg = tiny_config(base, tmp_path / "run", "trainer.total_training_steps=1", "trainer.test_freq=1",
                      "data.val_files=[proc:arith]", "data.val_max_samples=4", "trainer.val_greedy=true",
                      "rollout.val_kwargs={temperature: 1.0, n: 3}", "trainer.save_freq=-1")
    result = train(cfg)
    val = tmp_path / "run" / "val"
    sampled = json.loads((val / "step_000001.json").read_text())["rows"]
    greedy = json.loads((val / "greedy_step_000001.json").read_text())["rows"]
    assert len(sampled) == 12 and len(greedy) == 4
    assert sorted({r["id"] for r in sampled}) == sorted(r["id"] for r in greedy)
    assert {"all", "greedy_all"} <= set(result.val[1]) and "val/greedy_all/score" in result.history[0]
    assert result.history[0]["batch/rows"] == 8.0 and result.history[0]["batch/loss_tokens"] > 0
    no_greedy = tiny_config(base, tmp_path / "run2", "trainer.total_training_steps=1", "trainer.test_freq=1",
                            "data.val_files=[proc:arith]", "data.val_max_samples=2", "trainer.val_greedy=true",
                            "trainer.val_before_train=false", "trainer.save_freq=-1")
    train(no_greedy)  # greedy validation already: no second pass
    assert not (tmp_path / "run2" / "val" / "greedy_step_000001.json").exists()
