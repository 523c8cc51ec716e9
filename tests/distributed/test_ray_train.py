"""``train()`` with ``rollout.workers=2`` (two Ray actors on a local 2-CPU instance, loopback only) against
``rollout.workers=0``: the same rollouts every step (so the weight push after each update reached the
workers), the same metrics, weights within float round-off.

APPO with the ``previous`` anchor, so the workers also need the previous policy's weights (pushed at
start-up, then the last push each step). The workers score Omega with their own copies, in batches of
another composition than the trainer's: log-probs move by ~1e-6, which must not change a branch point
or a sampled token here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from ray_harness import start_local_ray
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from run_helpers import tiny_base, tiny_config  # noqa: E402

from appo.config import ConfigError, validate_config  # noqa: E402
from appo.train.trainer import train  # noqa: E402

STEPS = 2


def _config(base: Path, run_dir: Path, workers: int):
    return tiny_config(base, run_dir, "algorithm.name=appo", "algorithm.appo.anchor=previous",
                       f"trainer.total_training_steps={STEPS}", f"rollout.workers={workers}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_train")
    base = tiny_base(root / "base")
    torch.set_num_threads(1)
    one = train(_config(base, root / "local", 0))
    ray = start_local_ray()
    try:
        two = train(_config(base, root / "ray", 2))
    finally:
        ray.shutdown()
    return root, one, two


def test_rollouts_are_the_same_rows(runs):
    root, one, two = runs
    for step in range(1, STEPS + 1):
        a = json.loads((root / "local" / "rollouts" / f"step_{step:06d}.json").read_text())
        b = json.loads((root / "ray" / "rollouts" / f"step_{step:06d}.json").read_text())
        rows = lambda d: [[(r["tokens"], r.get("split")) for r in p["rows"]] for p in d["prompts"]]  # noqa: E731
        assert rows(b) == rows(a), step
        assert sum(len(p["rows"]) for p in b["prompts"]) == 8


def test_metrics_match(runs):
    _, one, two = runs
    for step in range(STEPS):
        a, b = one.history[step], two.history[step]
        for k in ("critic/score/mean", "response_length/mean", "rollout/rows", "appo/branch_points"):
            assert b[k] == pytest.approx(a[k], rel=1e-6), (step, k)
        assert b["actor/grad_norm"] == pytest.approx(a["actor/grad_norm"], rel=1e-3)
        assert "timing_s/sync_weights" in b and "timing_s/sync_weights" not in a


def test_weights_match(runs):
    root, *_ = runs
    start = load_file(root / "base" / "model.safetensors")
    for step in range(1, STEPS + 1):
        name = f"checkpoints/step_{step:06d}/model/model.safetensors"
        a, b = load_file(root / "local" / name), load_file(root / "ray" / name)
        moved = max(float((a[k] - start[k]).abs().max()) for k in a)
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        print(f"step {step}: max |ray - local| = {diff:.2e} (weights moved by up to {moved:.2e})")
        assert moved > 1e-2 and diff < 1e-3


def test_bad_worker_settings_are_refused(tmp_path):
    for key, value in (("rollout.workers", -1), ("rollout.worker_gpus", -1), ("rollout.worker_restarts", -2)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(tiny_config(tmp_path, tmp_path / "run", f"{key}={value}"))
    with pytest.raises(ConfigError, match="worker_cpus"):
        validate_config(tiny_config(tmp_path, tmp_path / "run", "rollout.workers=2", "rollout.worker_cpus=0"))
