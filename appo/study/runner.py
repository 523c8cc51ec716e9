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
from typing import Callable

from appo.config import load_config
from appo.presets import shipped_config_path


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
    Variant("appo/points=oracle", ("algorithm.name=appo", "algorithm.appo.points=oracle"), "ablation"),
    Variant("appo/points=oracle,train_branches=on", ("algorithm.name=appo", "algorithm.appo.points=oracle",
                                                     "algorithm.appo.train_on_branches=true"), "ablation"),
    Variant("appo/points=oracle,n_initial=6", ("algorithm.name=appo", "algorithm.appo.points=oracle",
                                               "rollout.n_initial=6"), "ablation"),
    Variant("appo/fork=redraw", ("algorithm.name=appo", "algorithm.appo.fork=redraw"), "ablation"),
    Variant("appo/fork=redraw,credit=none", ("algorithm.name=appo", "algorithm.appo.fork=redraw",
                                             "algorithm.appo.redraw_credit=none"), "ablation"),
    *(Variant(f"appo/points={p},fork=redraw", ("algorithm.name=appo", f"algorithm.appo.points={p}",
                                                "algorithm.appo.fork=redraw"), "ablation")
      for p in ("oracle", "entropy", "random")),
    Variant("appo/points=oracle,fork=redraw,train_branches=on", (
        "algorithm.name=appo", "algorithm.appo.points=oracle", "algorithm.appo.fork=redraw",
        "algorithm.appo.train_on_branches=true"), "ablation"),
    Variant("appo/prefix=mean", ("algorithm.name=appo", "algorithm.appo.prefix_combine=mean"), "ablation"),
    Variant("appo/omega=clipped", ("algorithm.name=appo", "algorithm.appo.omega_form=clipped"), "ablation"),
    Variant("appo/omega=sum", ("algorithm.name=appo", "algorithm.appo.omega_form=sum"), "ablation"),
)
"""APPO's choices, each changed alone from the defaults; the ``points=oracle`` arms (issue 24, tasks that record
their decisive token) also with the branch rows trained and with 6 initial rows + 2 branches instead of 4 + 4,
to see whether the budget split or the credit keeps oracle branching from beating GRPO. The ``fork=redraw`` arms
(``appo/fork=redraw`` is the Branching Score's) re-sample the chosen token itself and give it the branch contrast
(docs/algorithm.md 6.3); with ``after`` the oracle's branches re-sample the decisive token, but its contrast lands
on the shared prefix before it. ``appo/points=oracle,fork=redraw,train_branches=on`` trains all 8 rows as GRPO does,
to separate the credit from the trained-row count."""

TASKS = {
    "arith": "proc:arith?n_operands=[2,2]&digits=[1,2]&direct_p=0.5",
    "chain": "proc:chain?steps=[3,3]&addend_digits=[1,1]&labels=true",
    "multihop": "proc:multihop?hops=[2]&kb_size=60",
    "depth_early": "proc:depth?steps=5&depth=[1]",
    "depth_middle": "proc:depth?steps=5&depth=[3]",
    "depth_late": "proc:depth?steps=5&depth=[5]",
    "mix": ("proc:mix?weights=[0.5,0.5,0.0]&multihop={hops: [2], kb_size: 60}"
            "&arith={n_operands: [2, 2], digits: [1, 2], direct_p: 0.5}"),
}
"""Study tasks: arithmetic where the opening decides (call Python or answer from memory), a value carried
through 3 Python calls where mid-trajectory copies decide, two-hop questions that need search, and a mix.
``chain`` numbers its operations (``labels``): unlabelled, the 1M start model could not find the k-th
operation at all (0.4% held-out); with labels, 3 steps and one-digit operands it starts at about 77%
sampled / 86% greedy, with its failures in the middle of the trajectory (a carried value or an operand
copied wrong).
``depth_early`` / ``depth_middle`` / ``depth_late`` (:mod:`appo.data.procedural.depth`, issue 24): five ``+ 1``
steps but one ``Check`` step (``+ 1`` or ``- 1``), one Python call each, whose one decisive token (the operator
of the call at step 1, 3 or 5) is known by construction; every other step is near-certain for the start model."""

SFT_TASKS: dict[str, str] = {}
"""Tasks whose start model is SFT'd on another spec, shared by every task that names the same spec (none at
present: the depth tasks each SFT their own start model, whose tiny model would otherwise have to find the
decisive step's position in the question, a positional copy it does not learn at these sizes)."""

TASK_OVERRIDES = {"chain": ("rollout.max_tool_calls=4", "sft.num_examples=4000", "sft.epochs=4"),
                  **{name: ("rollout.max_tool_calls=6",) for name in ("depth_early", "depth_middle", "depth_late")}}
"""Config overrides a task needs on top of the study's base config (its runs and its start model's SFT):
``chain`` needs 3 tool calls (4 allowed), and its demonstrations are about twice as long as ``arith``'s;
4000 x 4 epochs (about 11 CPU-minutes) is what took its start model from nothing right (2000 x 2: 0%) to a
start with room to improve. The ``depth`` tasks make 5 calls (6 allowed); their SFT is in two stages
(:data:`SFT_STAGES`)."""

SFT_STAGES = {name: (("sft.num_examples=1600", "sft.epochs=2"),
                     ("sft.num_examples=400", "sft.epochs=10", "sft.lr=1e-3"))
              for name in ("depth_early", "depth_middle", "depth_late")}
"""Tasks whose start model is SFT'd in stages, each from the previous stage's model (overrides on top of
:data:`TASK_OVERRIDES`). The depth tasks: 1600 x 2 epochs at the study's lr 3e-3 leaves the tiny model
unsure of tokens it must always write (``(`` after ``print``: p = 0.06-0.39; 0.8% solved at temperature 1),
and a constant lr does not settle there; 400 x 10 more at 1e-3 takes the loss from 0.023 to 0.006 and the
model to the profile the task is built for (docs/results.md)."""


@dataclass(frozen=True)
class StudySettings:
    """Budget and protocol of the study (equal for every variant)."""

    tasks: tuple[str, ...] = ("arith",)
    """Names in :data:`TASKS` (or ``proc:`` specs)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """RL seeds (sampling and data order); the start model is shared. How many the intervals need:
    :func:`appo.study.analysis.seeds_needed`, printed in the results table."""
    steps: int = 60
    """Training steps per run."""
    test_freq: int = 10
    """Validate every this many steps (and before the first)."""
    val_examples: int = 256
    """Held-out problems per evaluation. They are generated from the run's ``data.seed`` (= its seed): the same for
    every variant at one seed, different across seeds, so comparisons are paired by seed."""
    val_samples: int = 4
    """Samples per held-out problem at the training temperature; a problem's score is their mean accuracy."""
    val_greedy: bool = True
    """Also evaluate greedily on the same problems (the second column)."""
    final_evals: int = 3
    """The final score averages the last this many evaluations (after step 0), per problem."""
    ablations: bool = True
    """Also run the APPO ablations (all on the first task; the branch-point arms on every depth task)."""
    variants: tuple[str, ...] = ()
    """Run only these variants (names of :data:`MAIN` / :data:`ABLATIONS`); empty runs them all."""
    workers: int = 2
    """Runs at once (each with one torch thread)."""
    sft_examples: int = 4000
    """Demonstrations for the start model's SFT."""
    sft_epochs: int = 3
    """SFT epochs."""
    extra_overrides: tuple[str, ...] = ()
    """Overrides applied to every run (e.g. a smaller batch for a smoke test)."""

    def __post_init__(self):
        known = {v.name for v in MAIN + ABLATIONS}
        unknown = [v for v in self.variants if v not in known]
        if unknown:
            raise ValueError(f"unknown study variant(s) {unknown}; choose from {sorted(known)}")
        bad = [t for t in self.tasks if not t.startswith("proc:") and t not in TASKS]
        if bad:
            raise ValueError(f"unknown study task(s) {bad}; choose from {sorted(TASKS)} or give a proc: spec")
        for name in ("steps", "test_freq", "val_examples", "val_samples", "final_evals", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"study setting {name}={getattr(self, name)} must be >= 1")
        if not self.seeds:
            raise ValueError("study needs at least one seed")


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


def start_model_dir(task: str, out: Path) -> Path:
    """Where the study keeps a task's start model: ``<out>/<task>``, or ``<out>/sft_<name>`` shared by the
    tasks of one :data:`SFT_TASKS` spec."""
    spec = SFT_TASKS.get(task)
    return out / task if spec is None else out / ("sft_" + spec.split("?")[0].removeprefix("proc:"))


def prepare_start_model(task: str, out: Path, settings: StudySettings) -> Path:
    """Build and SFT the task's start model once (reused when ``out/sft/sft_model`` exists), on the task's
    spec or its :data:`SFT_TASKS` spec."""
    model_dir = out / "sft" / "sft_model"
    if (model_dir / "config.json").exists():
        return model_dir
    from appo.data.sources import task_of
    from appo.demo import DemoSettings
    from appo.models.demo_model import build_demo_base
    from appo.prompts import resolve_system_prompt
    from appo.train.sft_run import run_sft

    spec = SFT_TASKS.get(task, task_spec(task))
    cfg = load_config(shipped_config_path("study"), [f'data.train_files=["{spec}"]', *TASK_OVERRIDES.get(task, ())])
    d = DemoSettings()
    base = build_demo_base(out / "base", [task_of(spec)], resolve_system_prompt(cfg.rollout.system_prompt) or "",
                           vocab_size=d.vocab_size, hidden_size=d.hidden_size, num_layers=d.num_layers,
                           num_heads=d.num_heads, seed=d.seed)
    stages = SFT_STAGES.get(task, ((),))
    for k in range(len(stages)):
        run_sft(start_model_sft_config(task, base, out, settings, k))
        base = out / ("sft" if k == len(stages) - 1 else f"sft_stage{k + 1}") / "sft_model"
    return model_dir


def start_model_sft_config(task: str, base: Path, out: Path, settings: StudySettings, stage: int = 0):
    """The config of a task's start-model SFT (stage ``stage`` of :data:`SFT_STAGES`, from model ``base``): the
    study config on the task's (or its :data:`SFT_TASKS`) spec, ``settings``' SFT size, then the task's own
    overrides (:data:`TASK_OVERRIDES`) and the stage's, which may set another size, then
    ``settings.extra_overrides`` (which win: the smoke run's 32 x 1 goes there). Every stage but the last writes
    to ``<out>/sft_stage<k+1>``, the last to ``<out>/sft``."""
    spec = SFT_TASKS.get(task, task_spec(task))
    stages = SFT_STAGES.get(task, ((),))
    run_dir = out / ("sft" if stage == len(stages) - 1 else f"sft_stage{stage + 1}")
    return load_config(shipped_config_path("study"), [
        f'data.train_files=["{spec}"]', f"model.path={base}", f"trainer.default_local_dir={run_dir}",
        f"sft.num_examples={settings.sft_examples}", f"sft.epochs={settings.sft_epochs}", *TASK_OVERRIDES.get(task, ()),
        *stages[stage], *settings.extra_overrides])


def split_variants(text: str) -> tuple[str, ...]:
    """Comma-separated variant names as a tuple. Some names hold commas themselves
    (``appo/points=oracle,fork=redraw``), so at each position the longest run of comma-separated pieces that is a
    known name (:data:`MAIN` / :data:`ABLATIONS`) is taken; a piece that starts no known name is kept alone (and
    :class:`StudySettings` rejects it by name)."""
    pieces = [p.strip() for p in text.split(",")]
    known = {v.name for v in MAIN + ABLATIONS}
    out: list[str] = []
    i = 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i, -1) if ",".join(pieces[i:j]) in known), i + 1)
        if name := ",".join(pieces[i:j]):
            out.append(name)
        i = j
    return tuple(out)


def records_decisive_token(task: str) -> bool:
    """Whether a task's rows record their decisive token (the ``depth`` tasks), so the branch-point arms
    (``appo/points=...``) and their precision against the oracle mean something on it."""
    return task_spec(task).startswith("proc:depth")


def variants_of(settings: StudySettings, first_task: bool, task: str | None = None) -> tuple[Variant, ...]:
    """The variants run on a task: the main ones; when ablations are enabled, every ablation on the first task
    and the branch-point arms (``appo/points=...``) on every later task that records its decisive token (each
    depth is its own question about where the point goes); kept to ``settings.variants`` when that is set."""
    if not settings.ablations:
        extra: tuple[Variant, ...] = ()
    elif first_task:
        extra = ABLATIONS
    elif task is not None and records_decisive_token(task):
        extra = tuple(v for v in ABLATIONS if v.name.startswith("appo/points=") or v.name == "appo/fork=redraw")
    else:
        extra = ()
    return tuple(v for v in MAIN + extra if not settings.variants or v.name in settings.variants)


def smoke_settings(settings: StudySettings, overrides: tuple[str, ...] = ()) -> StudySettings:
    """``appo study --smoke``: the first task, seed 0, 2 steps, a 32 x 1 SFT and small batches, a pipeline check
    in about a minute. The SFT size is also passed as an override, after the task's own
    (:data:`TASK_OVERRIDES`, :data:`SFT_STAGES`), so the smoke's 32 x 1 wins; ``overrides``
    (the command line's) come last."""
    return StudySettings(tasks=settings.tasks[:1], seeds=(0,), steps=2, test_freq=1, val_examples=4, val_samples=2,
                         final_evals=2, ablations=False, workers=1, sft_examples=32, sft_epochs=1,
                         variants=settings.variants,
                         extra_overrides=("data.train_batch_size=2", "actor.ppo_mini_batch_size=2", "rollout.n=4",
                                          "rollout.n_initial=2", "sft.num_examples=32", "sft.epochs=1", *overrides))


def validation_overrides(settings: StudySettings) -> list[str]:
    """How every run validates: ``val_samples`` samples per problem at the training temperature over
    ``val_examples`` problems every ``test_freq`` steps and before the first, plus a greedy pass."""
    temperature = load_config(shipped_config_path("study"), list(settings.extra_overrides)).rollout.temperature
    return [f"data.val_max_samples={settings.val_examples}", f"rollout.val_kwargs.temperature={temperature}",
            f"rollout.val_kwargs.n={settings.val_samples}", f"trainer.val_greedy={str(settings.val_greedy).lower()}",
            f"trainer.test_freq={settings.test_freq}", "trainer.val_before_train=true"]


def plan(settings: StudySettings, out: Path) -> list[RunSpec]:
    """Every (task, variant, seed) run, seed-major (so a study stopped early has every task and variant at
    the first seeds rather than every seed of the first variants)."""
    runs = []
    val = validation_overrides(settings)
    for seed in settings.seeds:
        for ti, task in enumerate(settings.tasks):
            for v in variants_of(settings, ti == 0, task):
                run_dir = out / task / "runs" / v.name.replace("/", "__") / f"seed{seed}"
                spec = task_spec(task)
                runs.append(RunSpec(task, v, seed, run_dir, [
                    f'data.train_files=["{spec}"]', f'data.val_files=["{spec}"]', *val,
                    f"data.seed={seed}", f"trainer.seed={seed}", f"trainer.total_training_steps={settings.steps}",
                    f"trainer.default_local_dir={run_dir}", f"trainer.experiment_name={task}-{v.name}-s{seed}",
                    "trainer.num_threads=1", *TASK_OVERRIDES.get(task, ()), *v.overrides, *settings.extra_overrides]))
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
    starts = {task: prepare_start_model(task, start_model_dir(task, out), settings) for task in settings.tasks}
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
