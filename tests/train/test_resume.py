"""SIGKILL a training process at several points (one in the middle of a checkpoint write), resume,
and check the result equals an uninterrupted run bitwise (CPU, one thread)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from run_helpers import tiny_base, tiny_config
from safetensors.torch import load_file

from appo.config import save_config
from appo.train.checkpoint import load_latest_checkpoint

HARNESS = Path(__file__).parent / "crash_harness.py"
STEPS = 4


def _latest(run: Path) -> str:
    try:
        return (run / "checkpoints" / "latest").read_text().strip()
    except FileNotFoundError:
        return ""


def _run(cfg_path: Path, *args: str, kill_after_latest: tuple[Path, str] | None = None, timeout: float = 240) -> int:
    proc = subprocess.Popen([sys.executable, str(HARNESS), str(cfg_path), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after_latest is not None:  # kill once `latest` names this checkpoint (or a later one)
        run, name = kill_after_latest
        deadline = time.monotonic() + timeout
        while _latest(run) < name and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # SIGKILL, wherever the process is now (usually inside the next step)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode


def _final(run: Path):
    weights = load_file(run / "checkpoints" / f"step_{STEPS:06d}" / "model" / "model.safetensors")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return weights, {x["step"]: x["critic/score/mean"] for x in lines}


def test_sigkill_and_resume_match_an_uninterrupted_run(tmp_path):
    base = tiny_base(tmp_path / "base")
    steps = f"trainer.total_training_steps={STEPS}"
    straight = tmp_path / "straight"
    save_config(tiny_config(base, straight, steps), tmp_path / "straight.yaml")
    assert _run(tmp_path / "straight.yaml") == 0

    run = tmp_path / "crashy"
    save_config(tiny_config(base, run, steps), tmp_path / "crashy.yaml")
    # 1. killed inside the 2nd checkpoint write: files written, not yet published
    assert _run(tmp_path / "crashy.yaml", "2") == -9
    ckpt = load_latest_checkpoint(run)
    assert ckpt is not None and ckpt.step == 1  # the half-written step 2 is not taken for a checkpoint
    # 2. resumed, then killed at whatever point it reached after publishing step 3
    assert _run(tmp_path / "crashy.yaml", kill_after_latest=(run, "step_000003")) == -9
    assert load_latest_checkpoint(run).step >= 3
    # 3. resumed to the end
    assert _run(tmp_path / "crashy.yaml") == 0

    w_straight, m_straight = _final(straight)
    w_crashy, m_crashy = _final(run)
    assert sorted(m_crashy) == list(range(1, STEPS + 1))  # no step logged twice or lost
    assert m_crashy == m_straight
    assert w_crashy.keys() == w_straight.keys()
    assert all(torch.equal(w_crashy[k], w_straight[k]) for k in w_straight)
