"""``train()`` on 2 gloo ranks (DDP) against 1 process: same rollouts, metrics, weights; rank 0 alone
writes the run directory.

Rollouts are not bitwise the same across world sizes with the real engine: it draws one random
stream per generate call, in batch order, so a prompt's samples depend on which prompts share the
call (and each rank seeds its rollouts differently). The engine here is wrapped to generate each
request alone, seeded by its prefix, step and row uid, which makes the rows a function of the prompt;
then the two runs see the same rows and must agree up to float32 round-off (old log-probs and
gradients are computed over differently padded micro-batches), amplified by AdamW at lr 1e-2 where a
gradient element is near zero.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from ddp_harness import PerRequestEngine, run_ranks
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from run_helpers import tiny_base, tiny_config  # noqa: E402

STEPS = 2
SAME_METRICS = ("critic/score/mean", "response_length/mean", "rollout/rows", "prompt_length/max")
CLOSE_METRICS = ("actor/grad_norm",)


def _config(base: Path, run_dir: Path):
    return tiny_config(base, run_dir, "algorithm.name=grpo", "rollout.n=4", "data.train_batch_size=2",
                       "actor.ppo_mini_batch_size=2", f"trainer.total_training_steps={STEPS}",
                       "data.val_files=[proc:arith]", "data.val_max_samples=3", f"trainer.test_freq={STEPS}",
                       "trainer.val_before_train=false")


def _train(cfg) -> dict:
    from appo.train.components import build_components
    from appo.train.trainer import Trainer

    torch.set_num_threads(1)
    c = build_components(cfg, cfg.trainer.default_local_dir)
    trainer = Trainer(cfg, components=dataclasses.replace(c, engine=PerRequestEngine(c.engine)))
    try:
        result = trainer.fit()
    finally:
        trainer.dist.close()
    return {"history": result.history, "val": result.val, "rank": trainer.dist.rank,
            "world": trainer.dist.world_size, "strategy": trainer.dist.strategy}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_train")
    base = tiny_base(root / "base")
    one = _train(_config(base, root / "one"))
    two = run_ranks(_train, 2, _config(base, root / "two"))
    return root, one, two


def test_ranks_run_ddp_and_agree_with_each_other(runs):
    _, one, two = runs
    assert (one["world"], one["strategy"]) == (1, "none")
    assert [(r["rank"], r["world"], r["strategy"]) for r in two] == [(0, 2, "ddp"), (1, 2, "ddp")]
    assert two[0]["history"] == two[1]["history"]  # every rank returns the reduced metrics
    assert two[0]["val"] == two[1]["val"]


def test_metrics_match_one_process(runs):
    _, one, two = runs
    for step in range(STEPS):
        a, b = one["history"][step], two[0]["history"][step]
        for k in SAME_METRICS:
            assert b[k] == pytest.approx(a[k], rel=1e-6), (step, k)
        for k in CLOSE_METRICS:
            assert b[k] == pytest.approx(a[k], rel=1e-3), (step, k)
    assert two[0]["val"][STEPS]["all"] == pytest.approx(one["val"][STEPS]["all"], rel=1e-6)
    assert two[0]["val"][STEPS]["all"]["n"] == 3


def test_rollouts_are_the_same_rows(runs):
    root, *_ = runs
    for step in range(1, STEPS + 1):
        a = json.loads((root / "one" / "rollouts" / f"step_{step:06d}.json").read_text())
        b = json.loads((root / "two" / "rollouts" / f"step_{step:06d}.json").read_text())
        assert [p["group"] for p in b["prompts"]] == [0, 1]  # gathered on rank 0, global positions
        assert [p["id"] for p in b["prompts"]] == [p["id"] for p in a["prompts"]]
        assert [[r["tokens"] for r in p["rows"]] for p in b["prompts"]] == [[r["tokens"] for r in p["rows"]]
                                                                            for p in a["prompts"]]


def test_weights_match_one_process(runs):
    root, *_ = runs
    for step in range(1, STEPS + 1):
        name = f"checkpoints/step_{step:06d}/model/model.safetensors"
        a, b = load_file(root / "one" / name), load_file(root / "two" / name)
        start = load_file(root / "base" / "model.safetensors")
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        moved = max(float((a[k] - start[k]).abs().max()) for k in a)
        print(f"step {step}: max |2 ranks - 1 process| = {diff:.2e} (weights moved by up to {moved:.2e})")
        assert moved > 1e-2
        assert diff < 1e-3


def test_rank_zero_alone_writes_the_run_directory(runs):
    root, *_ = runs
    run = root / "two"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1))  # one line per step, not one per rank
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["latest"] + [f"step_{s:06d}" for s in range(1, STEPS + 1)]  # no temp folders left
    val = json.loads((run / "val" / f"step_{STEPS:06d}.json").read_text())
    one = json.loads((root / "one" / "val" / f"step_{STEPS:06d}.json").read_text())
    assert [r["id"] for r in val["rows"]] == [r["id"] for r in one["rows"]]  # sharded, gathered in order
