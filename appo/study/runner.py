"""The learning-efficacy study: the same start model, budget and seeds for every algorithm and ablation.

For each task: build a tiny model and SFT it to a middling start once (:func:`prepare_start_model`,
cached), then train every variant with every seed as its own ``appo train`` subprocess (so runs are
isolated, can run two at a time, and a finished run is never redone), each validating on the same
held-out problems every few steps. :mod:`appo.study.analysis` turns the run directories into tables,
curves and confidence intervals.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from appo.configs import shipped_config_path
from appo.train.config import load_config


@dataclass(frozen=True)
class Variant:
    """One arm of the study: a name and the config overrides that make it."""

    name: str
    """Short label used in tables and folder names."""
    overrides: tuple[str, ...]
    """Dotted overrides on top of the study's base config."""
    group: str = "main"
    """``main`` (algorithm comparison) or ``ablation`` (APPO's choices)."""


MAIN = (
    Variant("grpo", ("algorithm.name=grpo",)),
    Variant("arpo", ("algorithm.name=arpo",)),
    Variant("tree_grpo", ("algorithm.name=tree_grpo",)),
    Variant("appo", ("algorithm.name=appo",)),
)
"""The algorithm comparison at equal rows per prompt, prompts per step, steps, lr and seeds."""

ABLATIONS = (
    Variant("appo/anchor=rollout", ("algorithm.name=appo", "algorithm.appo.anchor=rollout"), "ablation"),
    Variant("appo/anchor=reference", ("algorithm.name=appo", "algorithm.appo.anchor=reference"), "ablation"),
    Variant("appo/M=on", ("algorithm.name=appo", "algorithm.appo.proximity_scaling=true"), "ablation"),
    Variant("appo/future_kl=off", ("algorithm.name=appo", "algorithm.appo.future_kl=false"), "ablation"),
    Variant("appo/train_branches=on", ("algorithm.name=appo", "algorithm.appo.train_on_branches=true"), "ablation"),
    Variant("appo/points=entropy", ("algorithm.name=appo", "algorithm.appo.points=entropy"), "ablation"),
    Variant("appo/points=random", ("algorithm.name=appo", "algorithm.appo.points=random"), "ablation"),
    Variant("appo/fork=redraw", ("algorithm.name=appo", "algorithm.appo.fork=redraw"), "ablation"),
    Variant("appo/fork=redraw,credit=none", ("algorithm.name=appo", "algorithm.appo.fork=redraw",
                                             "algorithm.appo.redraw_credit=none"), "ablation"),
    Variant("appo/prefix=mean", ("algorithm.name=appo", "algorithm.appo.prefix_combine=mean"), "ablation"),
)
"""APPO's choices, each changed alone from the defaults."""

TASKS = {
    "arith": "proc:arith?n_operands=[2,2]&digits=[1,2]&direct_p=0.5",
    "multihop": "proc:multihop?hops=[2]&kb_size=60",
    "mix": "proc:mix?weights=[0.5,0.5,0.0]&multihop={hops: [2], kb_size: 60}&arith={n_operands: [2, 2], digits: [1, 2], direct_p: 0.5}",
}
"""Study tasks: arithmetic that needs Python, two-hop questions that need search, and their mix."""


@dataclass(frozen=True)
class StudySettings:
    """Budget of the study (equal for every variant)."""

    tasks: tuple[str, ...] = ("arith", "multihop", "mix")
    """Names in :data:`TASKS` (or ``proc:`` specs)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """RL seeds (sampling and data order); the start model is shared."""
    steps: int = 60
    """Training steps per run."""
    test_freq: int = 10
    """Validate every this many steps."""
    val_examples: int = 128
    """Held-out problems per evaluation. They are generated from the run's ``data.seed`` (= its seed): the same for
    every variant at one seed, different across seeds, so comparisons are paired by seed."""
    ablations: bool = True
    """Also run the APPO ablations (on the first task only)."""
    workers: int = 2
    """Runs at once (each with one torch thread)."""
    sft_examples: int = 4000
    """Demonstrations for the start model's SFT."""
    sft_epochs: int = 3
    """SFT epochs."""
    extra_overrides: tuple[str, ...] = ()
    """Overrides applied to every run (e.g. a smaller batch for a smoke test)."""


@dataclass
class RunSpec:
    """One training run of the study."""

    task: str
    variant: Variant
    seed: int
    run_dir: Path
    overrides: list[str] = field(default_factory=list)


def task_spec(task: str) -> str:
    """The ``proc:`` spec of a study task name (a ``proc:`` spec passes through)."""
    return task if task.startswith("proc:") else TASKS[task]


def prepare_start_model(task: str, out: Path, settings: StudySettings) -> Path:
    """Build and SFT the task's start model once (reused when ``out/sft/sft_model`` exists)."""
    model_dir = out / "sft" / "sft_model"
    if (model_dir / "config.json").exists():
        return model_dir
    from appo.demo import DemoSettings
    from appo.models.demo_model import build_demo_base
    from appo.prompts import resolve_system_prompt
    from appo.train.data_source import task_of
    from appo.train.sft_run import run_sft

    spec = task_spec(task)
    cfg = load_config(shipped_config_path("study"), [f'data.train_files=["{spec}"]'])
    d = DemoSettings()
    base = build_demo_base(out / "base", [task_of(spec)], resolve_system_prompt(cfg.rollout.system_prompt) or "",
                           vocab_size=d.vocab_size, hidden_size=d.hidden_size, num_layers=d.num_layers,
                           num_heads=d.num_heads, seed=d.seed)
    run_sft(load_config(shipped_config_path("study"), [
        f'data.train_files=["{spec}"]', f"model.path={base}", f"trainer.default_local_dir={out / 'sft'}",
        f"sft.num_examples={settings.sft_examples}", f"sft.epochs={settings.sft_epochs}", *settings.extra_overrides]))
    return model_dir


def plan(settings: StudySettings, out: Path) -> list[RunSpec]:
    """Every (task, variant, seed) run, main comparison first."""
    runs = []
    for ti, task in enumerate(settings.tasks):
        variants = MAIN + (ABLATIONS if settings.ablations and ti == 0 else ())
        for v in variants:
            for seed in settings.seeds:
                run_dir = out / task / "runs" / v.name.replace("/", "__") / f"seed{seed}"
                spec = task_spec(task)
                runs.append(RunSpec(task, v, seed, run_dir, [
                    f'data.train_files=["{spec}"]', f'data.val_files=["{spec}"]',
                    f"data.val_max_samples={settings.val_examples}", f"data.seed={seed}", f"trainer.seed={seed}",
                    f"trainer.total_training_steps={settings.steps}", f"trainer.test_freq={settings.test_freq}",
                    f"trainer.default_local_dir={run_dir}", f"trainer.experiment_name={task}-{v.name}-s{seed}",
                    "trainer.num_threads=1", *v.overrides, *settings.extra_overrides]))
    return runs


def finished(run_dir: Path, steps: int) -> bool:
    """Whether a run directory holds a validation after its last step."""
    return (run_dir / "val" / f"step_{steps:06d}.json").exists()


def run_one(spec: RunSpec, start_model: Path, log: Path) -> int:
    """Train one run as ``python -m appo train -c study ...`` (resumes a killed run); returns the exit code."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "appo", "train", "-c", "study", f"model.path={start_model}", *spec.overrides,
           "trainer.logger=[jsonl]"]
    with open(log, "w") as fh:
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode


def run_study(out: str | Path, settings: StudySettings = StudySettings(),
              on_done: Callable[[RunSpec, float, int], None] | None = None) -> list[RunSpec]:
    """Prepare the start models, then train every planned run not yet finished, ``settings.workers`` at a
    time. Returns the plan. A failed run is reported by ``on_done`` and left unfinished (re-running the
    study resumes it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(settings.__dict__, indent=1, default=list))
    starts = {task: prepare_start_model(task, out / task, settings) for task in settings.tasks}
    runs = plan(settings, out)
    todo = [r for r in runs if not finished(r.run_dir, settings.steps)]

    def go(spec: RunSpec) -> None:
        t0 = time.perf_counter()
        code = run_one(spec, starts[spec.task], spec.run_dir.parent / f"{spec.run_dir.name}.log")
        if on_done is not None:
            on_done(spec, time.perf_counter() - t0, code)

    with ThreadPoolExecutor(max_workers=max(1, settings.workers)) as pool:
        list(pool.map(go, todo))
    return runs


def main_variants(names: Sequence[str] | None = None) -> tuple[Variant, ...]:
    """The main variants, optionally filtered by name."""
    return tuple(v for v in MAIN if names is None or v.name in names)
