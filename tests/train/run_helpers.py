"""Builders for trainer tests: a tiny base model on disk and a config that trains it in seconds."""

from __future__ import annotations

from pathlib import Path

from appo.config import load_config
from appo.data.procedural import get_task
from appo.models.demo_model import build_demo_base
from appo.prompts import SHORT

HERE = Path(__file__).parent
LENGTH_REWARD = f"{HERE / 'length_reward.py'}:length_reward"


def tiny_base(path: Path) -> Path:
    """A 2-layer, 32-wide Llama with a tokenizer trained on arithmetic text (about a second)."""
    if not (path / "config.json").exists():
        build_demo_base(path, [get_task("arith")], SHORT, hidden_size=32, num_layers=2, num_heads=2)
    return path


def tiny_config(base: Path, run_dir: Path, *extra: str):
    """A config training ``base`` for 3 steps of 2 prompts x 4 rows, short responses, one thread, no
    tools (so runs are bitwise repeatable), and a length-based reward (so every step updates)."""
    return load_config(None, [
        f"model.path={base}", "data.train_files=[proc:arith]", "data.train_batch_size=2",
        "data.max_response_length=24", "rollout.n=4", "rollout.n_initial=2", "rollout.max_batch_size=8",
        "rollout.system_prompt=short", "actor.ppo_mini_batch_size=1", "actor.ppo_micro_batch_size_per_gpu=4",
        "actor.optim.lr=1e-2", "tools=[]", f"reward.name={LENGTH_REWARD}", "trainer.total_training_steps=3",
        "trainer.save_freq=1", "trainer.test_freq=-1", "trainer.num_threads=1", "trainer.logger=[jsonl]",
        f"trainer.default_local_dir={run_dir}", *extra])
