"""The RL step as users run it: ``appo train`` in a fresh process against the bench's in-process
``Trainer.train_step``, same config, interleaved rounds, each side a fresh process.

Why: the ``rl_step`` figure drives :meth:`appo.train.trainer.Trainer.train_step` inside the benchmark's
process (beside TRL). Users run ``appo train``, which adds what :meth:`~appo.train.trainer.Trainer.fit`
does around each step (console, JSONL and TensorBoard logging, the rollout dump for ``appo report``, the
progress display, the Ctrl-C handler) and runs in a process of its own. This section runs both paths on
the same overrides (:func:`appo.perf.rl_step.train_overrides`: same model, prompts, shape, seed,
``trainer.num_threads``) and compares the step's own timers (``timing_s/gen``, ``timing_s/update_actor``,
``timing_s/step``, read from the CLI run's ``metrics.jsonl``) and the whole process's wall time.

``cli`` is a plain ``appo train`` with the user-facing defaults the bench turns off: loggers
``console,jsonl,tensorboard`` and ``trainer.dump_rollouts_freq=1`` (``variants`` adds others, e.g. the
bench's own switches, to find which one costs). ``inproc`` is the bench's path: a fresh Python process that
builds the same :class:`~appo.train.trainer.Trainer` and calls ``train_step`` in a loop. The first step of
each process is a warm-up and is not counted; a round runs every variant once, the order rotating every
round so load drifts hit all alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appo.perf.harness import load_average

PHASE_KEYS = ("timing_s/gen", "timing_s/reward", "timing_s/adv", "timing_s/old_log_prob", "timing_s/update_actor",
              "timing_s/step")
"""The step timers compared (``timing_s/*`` of :meth:`~appo.train.trainer.Trainer.train_step`)."""

USER_DEFAULTS = ("trainer.logger=[console,jsonl,tensorboard]", "trainer.dump_rollouts_freq=1")
"""What a plain ``appo train`` does that the bench's in-process trainer turns off."""


def _inproc_script(overrides: list[str], steps: int, out: str) -> str:
    return ("import json, sys\n"
            "from appo.config import load_config\n"
            "from appo.train.trainer import Trainer\n"
            f"tr = Trainer(load_config(None, {overrides!r}))\n"
            f"rows = [tr.train_step(s) for s in range({steps})]\n"
            f"open({out!r}, 'w').write(json.dumps([{{k: v for k, v in m.items() if k.startswith('timing_s/')}}"
            " for m in rows]))\n")


def run_variant(kind: str, overrides: list[str], steps: int, workdir: Path, env: dict) -> dict:
    """One fresh process: ``kind`` ``cli`` (``python -m appo train``) or ``inproc`` (``Trainer.train_step``
    in a loop). Returns ``{"wall_s", "peak_rss_mb", "steps": [timing dicts]}`` (the child's own peak resident
    set, from ``os.wait4``'s resource usage)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ov = [*overrides, f"trainer.default_local_dir={workdir / 'run'}", f"trainer.total_training_steps={steps}"]
    if kind == "cli":
        cmd = [sys.executable, "-m", "appo", "train", *ov]
    else:
        out = str(workdir / "timings.json")
        cmd = [sys.executable, "-c", _inproc_script(ov, steps, out)]
    t = time.perf_counter()
    with open(workdir / "stdout.log", "w") as out_f, open(workdir / "stderr.log", "w") as err_f:
        proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        err = (workdir / "stderr.log").read_text()[-2000:]
        raise RuntimeError(f"{kind} run failed (exit {proc.returncode}): {err}")
    if kind == "cli":
        lines = [json.loads(x) for x in (workdir / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rows = [{k: v for k, v in r.items() if k.startswith("timing_s/")} for r in lines if "timing_s/step" in r]
    else:
        rows = json.loads((workdir / "timings.json").read_text())
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0, "steps": rows}


def cli_step_runs(overrides: list[str], *, steps: int, rounds: int,
                  variants: dict[str, tuple] | None = None, threads: int = 1,
                  progress=None) -> dict:
    """Interleaved rounds of fresh processes. ``overrides``: the shared config (without run dir and step
    count); ``variants``: name -> (kind, extra overrides[, environment overrides]), default ``cli`` (user
    defaults) and ``inproc`` (the bench's path). Returns ``{"per_round": {variant: [medians of the timed
    steps + wall_s]}, "load", "variants"}``."""
    variants = variants or {"cli": ("cli", list(USER_DEFAULTS)), "inproc": ("inproc", [])}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "CI": "1"}
    say = progress or (lambda line: None)
    tmp = Path(tempfile.mkdtemp(prefix="appo-bench-cli-"))
    per: dict[str, list[dict]] = {v: [] for v in variants}
    loads = []
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            kind, extra, *more = variants[name]
            loads.append(load_average())
            res = run_variant(kind, [*overrides, *extra], steps, tmp / f"r{r}_{name}", {**env, **(more[0] if more
                                                                                                 else {})})
            timed = res["steps"][1:] or res["steps"]  # the first step of a process is its warm-up
            med = {k: statistics.median([s.get(k, 0.0) for s in timed]) for k in PHASE_KEYS}
            per[name].append({"wall_s": res["wall_s"], "peak_rss_mb": res["peak_rss_mb"], **med})
            say(f"cli_step round {r} {name}: gen {med['timing_s/gen']:.3f} s, step {med['timing_s/step']:.3f} s, "
                f"process {res['wall_s']:.1f} s, load {loads[-1]}")
    return {"per_round": per, "load": loads,
            "variants": {k: {"kind": v[0], "extra": v[1], "env": v[2] if len(v) > 2 else {}}
                         for k, v in variants.items()}}


def cli_step_figures(model_name: str, threads: int, *, prompts: int, rows: int, max_response: int, micro_rows: int,
                     steps: int, rounds: int, algorithm: str = "grpo", progress=None) -> list[dict]:
    """Figures ``appo train`` (ours) vs the in-process ``Trainer.train_step`` (baseline), seconds per step of
    ``timing_s/gen`` and ``timing_s/step`` (median of each process's timed steps), interleaved fresh processes;
    see the module docstring. speedup > 1: the CLI path is faster."""
    from appo.perf.harness import Contender, figure
    from appo.perf.rl_step import train_overrides

    ov = train_overrides(model_name, algorithm, threads, prompts, rows, max_response, micro_rows)
    res = cli_step_runs(ov, steps=steps, rounds=rounds, threads=threads, progress=progress)
    out = []
    per = res["per_round"]
    for key in ("timing_s/gen", "timing_s/step"):
        cli = Contender("appo train (console, jsonl, tensorboard, rollout dumps)", lambda r: 0.0,
                        [x[key] for x in per["cli"]], max(x["peak_rss_mb"] for x in per["cli"]))
        inproc = Contender("Trainer.train_step in a fresh process (the rl_step figure's path)", lambda r: 0.0,
                           [x[key] for x in per["inproc"]], max(x["peak_rss_mb"] for x in per["inproc"]))
        out.append(figure("cli_step", f"{model_name} t{threads} {algorithm} {prompts}x{rows} {key[9:]}", "s/step",
                          cli, inproc, higher_is_better=False,
                          details={"model": model_name, "algorithm": algorithm, "steps_per_process": steps,
                                   "rounds": rounds, "timed_steps_per_process": max(1, steps - 1),
                                   "overrides": ov, **res}))
    return out
