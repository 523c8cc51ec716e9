"""The real launcher: ``torchrun --nproc_per_node=2 -m appo train`` on CPU (gloo, 127.0.0.1), DDP and
FSDP2, and an FSDP2 run stopped after a checkpoint and resumed. Slow (each launch imports torch and
transformers in three processes), so it is marked ``slow``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_harness import free_port
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from run_helpers import tiny_base, tiny_config  # noqa: E402

from appo.config import save_config  # noqa: E402

pytestmark = pytest.mark.slow


def _torchrun(cfg_path: Path, *overrides: str) -> None:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "appo", "train", "-c", str(cfg_path), *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step_{step:06d}" / "model" / "model.safetensors")


def test_torchrun_ddp_and_fsdp2_with_resume(tmp_path):
    base = tiny_base(tmp_path / "base")
    extra = ("actor.ppo_mini_batch_size=2", "algorithm.name=grpo", "trainer.total_training_steps=2")
    for name in ("ddp", "fsdp2"):
        save_config(tiny_config(base, tmp_path / name, *extra, f"actor.strategy={name}"), tmp_path / f"{name}.yaml")
    _torchrun(tmp_path / "ddp.yaml")
    _torchrun(tmp_path / "fsdp2.yaml", "trainer.total_training_steps=1")  # stops after its step-1 checkpoint
    _torchrun(tmp_path / "fsdp2.yaml")  # resumes: full weights and the gathered optimizer state, resharded

    for name in ("ddp", "fsdp2"):
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert [x["step"] for x in lines] == [1, 2], name  # rank 0 alone logs; the resumed run appends step 2
    start = load_file(base / "model.safetensors")
    for step in (1, 2):
        a, b = _weights(tmp_path / "ddp", step), _weights(tmp_path / "fsdp2", step)
        moved = max(float((a[k] - start[k]).abs().max()) for k in a)
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        print(f"step {step}: max |fsdp2 (resumed) - ddp| = {diff:.2e}, weights moved by up to {moved:.2e}")
        assert moved > 1e-2 and diff < 1e-3
