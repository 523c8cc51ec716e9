"""The main job (``make demo`` / ``appo demo``): build a tiny model, SFT it, train it with APPO, evaluate
before and after, and write the report — on a laptop CPU, from nothing but this repository.

Steps (each a documented call, so the pipeline is easy to re-run piecewise):

1. :func:`appo.models.demo_model.build_demo_base`: a BPE tokenizer trained on the task text and a
   random-init Llama (``DemoSettings`` sizes) -> ``OUT/base``.
2. :func:`appo.train.sft_run.run_sft` on the tasks' demonstrations -> ``OUT/sft/sft_model``.
3. :func:`appo.train.trainer.train` with APPO from the SFT model, validating on held-out problems
   before the first step and at the end -> ``OUT/train`` (metrics, checkpoints, rollout dumps).
4. :func:`appo.report.write_report` -> ``OUT/train/report/index.html``.

The training settings live in ``appo/presets/demo.yaml`` (overridable); the model sizes and the quick
variant are :class:`DemoSettings`. Prints a before/after table and writes ``OUT/summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from appo.config import load_config
from appo.data.sources import task_of
from appo.eval import format_table
from appo.models.demo_model import build_demo_base
from appo.presets import shipped_config_path
from appo.prompts import resolve_system_prompt


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo's model (not part of the training config: the base model is built here)."""

    hidden_size: int = 128
    """Width of the tiny Llama."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    vocab_size: int = 512
    """BPE vocabulary trained on the task text."""
    seed: int = 0
    """Seed of the tokenizer corpus and the initial weights."""


QUICK_OVERRIDES = (
    "sft.num_examples=200", "sft.epochs=1", "trainer.total_training_steps=2", "data.val_max_samples=16",
    "data.train_batch_size=2", "actor.ppo_mini_batch_size=2", "rollout.n=4", "rollout.n_initial=2",
)
"""What ``--quick`` changes: a pipeline check in about a minute, not a result."""


def build_tiny_base(out: str | Path, cfg=None, settings: DemoSettings = DemoSettings()) -> Path:
    """Step 1 alone (``appo build-tiny OUT``): the demo's tiny Llama and BPE tokenizer, built for the
    procedural tasks of ``cfg.data.train_files`` and its system prompt (``cfg`` None: the shipped demo
    config), saved as a Hugging Face folder at ``out``. Returns ``out``."""
    cfg = cfg if cfg is not None else load_config(shipped_config_path("demo"))
    tasks = [task_of(s) for s in cfg.data.train_files]
    if not tasks or any(t is None for t in tasks):
        raise ValueError(f"data.train_files={list(cfg.data.train_files)}: the tiny model's tokenizer is trained on "
                         "procedural tasks only; fix: data.train_files=[proc:arith] (see `appo list benchmarks`)")
    return build_demo_base(Path(out), tasks, resolve_system_prompt(cfg.rollout.system_prompt) or "",
                           vocab_size=settings.vocab_size, hidden_size=settings.hidden_size,
                           num_layers=settings.num_layers, num_heads=settings.num_heads, seed=settings.seed)


def run_demo(out: str | Path = "runs/demo", *, quick: bool = False, overrides: Sequence[str] = (),
             settings: DemoSettings = DemoSettings()) -> dict:
    """Run the demo pipeline (module docstring) into ``out``; returns and writes the summary."""
    out = Path(out)
    t0 = time.perf_counter()
    base_overrides = [*(QUICK_OVERRIDES if quick else ()), *overrides]
    cfg = load_config(shipped_config_path("demo"), [*base_overrides, f"trainer.default_local_dir={out / 'sft'}"])
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)

    print(f"[1/4] building the tiny model and tokenizer -> {out / 'base'}", flush=True)
    base = build_tiny_base(out / "base", cfg, settings)

    print(f"[2/4] SFT on {cfg.sft.num_examples} demonstrations per task", flush=True)
    from appo.train.sft_run import run_sft

    sft_cfg = load_config(shipped_config_path("demo"), [*base_overrides, f"model.path={base}",
                                                        f"trainer.default_local_dir={out / 'sft'}"])
    sft = run_sft(sft_cfg)
    print(f"      loss {sft.metrics['epoch_loss'][0]:.3f} -> {sft.metrics['epoch_loss'][-1]:.3f} "
          f"in {sft.metrics['time_s']:.0f}s", flush=True)

    print("[3/4] APPO training (validation before the first step and at the end)", flush=True)
    from appo.train.trainer import train

    train_cfg = load_config(shipped_config_path("demo"), [*base_overrides, f"model.path={sft.model_dir}",
                                                          f"trainer.default_local_dir={out / 'train'}",
                                                          "trainer.resume_mode=disable"])
    result = train(train_cfg)
    steps = sorted(result.val)
    before, after = result.val[steps[0]]["all"], result.val[steps[-1]]["all"]

    print("[4/4] writing the report", flush=True)
    from appo.report import write_report

    report = write_report(out / "train")
    summary = {
        "before": before, "after": after, "gain_acc": after.get("acc", 0.0) - before.get("acc", 0.0),
        "steps": result.steps, "val_examples": int(before["n"]), "report": str(report),
        "wall_s": round(time.perf_counter() - t0, 1), "quick": quick,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print()
    print(format_table({"before (SFT)": before, "after (APPO)": after}).replace("benchmark", "model    "))
    print(f"\nheld-out accuracy {before.get('acc', 0):.3f} -> {after.get('acc', 0):.3f} "
          f"({summary['gain_acc']:+.3f}) after {result.steps} APPO steps; {summary['wall_s']:.0f}s in all")
    print(f"report: {report}")
    return summary
