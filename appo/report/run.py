"""Reading a run directory for the report: ``metrics.jsonl`` and the per-step rollout dumps.

Nothing here imports torch or the trainer, so ``appo report`` starts fast. Missing or damaged inputs
become *notes* (sentences the report shows) instead of exceptions; only a run directory that does not
exist (or is a file) raises, with the path and the fix.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

DUMP_DIR = "rollouts"
"""Folder of the step dumps; the same name as ``appo.dump.DUMP_DIR`` (not imported: that module
pulls in torch; a test checks the two agree)."""
METRICS_FILE = "metrics.jsonl"
"""The JSONL metrics file the trainer's ``jsonl`` logger writes."""
_STEP_FILE = re.compile(r"^step_(\d+)\.json$")


@dataclass(frozen=True)
class RunFiles:
    """What the report found in a run directory."""

    run_dir: Path
    """The run directory, resolved."""
    metrics: tuple[dict, ...]
    """One metrics dict per logged step, sorted by ``step``; when a step was logged twice the last
    line wins (a resumed run appends again)."""
    dumps: dict[int, Path]
    """Dumped step -> its ``rollouts/step_XXXXXX.json`` file, sorted by step."""
    notes: tuple[str, ...]
    """What is missing or was skipped, as sentences for the report (empty when all is there)."""


RUN_MARKERS = (METRICS_FILE, DUMP_DIR, "config.yaml", "checkpoints")
"""What the trainer writes into a run directory; a folder with none of them is not a run."""


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds any of :data:`RUN_MARKERS` (a training run wrote it)."""
    return any((Path(path) / m).exists() for m in RUN_MARKERS)


def check_run_dir(run_dir: str | Path) -> Path:
    """The resolved run directory; raises ``FileNotFoundError`` / ``NotADirectoryError`` / ``ValueError``
    naming the path and the fix when it is not an existing directory or not a training run's (none of
    :data:`RUN_MARKERS`; the runs found one level below are suggested)."""
    path = Path(run_dir).expanduser()
    fix = ("fix: pass the run directory of a training run (trainer.default_local_dir, the folder holding "
           f"{METRICS_FILE} and {DUMP_DIR}/), e.g. `appo report runs/demo/train`")
    if not path.exists():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist; {fix}")
    if not path.is_dir():
        raise NotADirectoryError(f"run directory {str(path)!r} is a file, not a folder; {fix}")
    if not is_run_dir(path):
        runs = sorted(str(p) for p in path.iterdir() if p.is_dir() and is_run_dir(p))
        hint = (f"fix: pass one of the runs inside it: {', '.join(runs[:5])}" if runs else fix)
        raise ValueError(f"{str(path)!r} is not a training run's directory (no {', '.join(RUN_MARKERS)}); "
                         f"no report written; {hint}")
    return path.resolve()


def load_metrics(path: str | Path) -> tuple[list[dict], int]:
    """Parse a ``metrics.jsonl``: (one dict per step sorted by step, number of unreadable lines skipped).
    Lines without an integer ``step`` count as unreadable; a later line for the same step replaces an
    earlier one."""
    by_step: dict[int, dict] = {}
    bad = 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            step = d["step"]
            if not isinstance(step, int) or isinstance(step, bool):
                raise TypeError("step is not an integer")
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        by_step[step] = d
    return [by_step[s] for s in sorted(by_step)], bad


def find_dumps(run_dir: str | Path) -> dict[int, Path]:
    """Dumped step -> file, for every ``run_dir/rollouts/step_<int>.json`` (sorted by step)."""
    folder = Path(run_dir) / DUMP_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.iterdir():
        m = _STEP_FILE.match(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def load_run(run_dir: str | Path) -> RunFiles:
    """Find the metrics and dumps of ``run_dir`` (see :class:`RunFiles`); dumps are not read yet."""
    root = check_run_dir(run_dir)
    notes: list[str] = []
    metrics: list[dict] = []
    mpath = root / METRICS_FILE
    if mpath.is_file():
        metrics, bad = load_metrics(mpath)
        if bad:
            notes.append(f"{METRICS_FILE}: {bad} unreadable line(s) skipped (torn write or not JSON).")
        if not metrics:
            notes.append(f"{METRICS_FILE} holds no metrics yet, so there are no training curves.")
    else:
        notes.append(f"No {METRICS_FILE} in this run directory, so there are no training curves "
                     "(the trainer writes it when trainer.logger includes 'jsonl').")
    dumps = find_dumps(root)
    if not dumps:
        notes.append(f"No rollout dumps ({DUMP_DIR}/step_*.json), so there are no step pages "
                     "(the trainer writes them every trainer.dump_rollouts_freq steps; set it > 0).")
    return RunFiles(run_dir=root, metrics=tuple(metrics), dumps=dumps, notes=tuple(notes))


def read_dump(path: str | Path) -> dict:
    """Read one step dump (the record of ``appo.dump.step_record``); raises ``ValueError`` naming
    the file when it is not a JSON object with a ``prompts`` list."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); the dump may be torn, "
                         "re-run the step or delete the file") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("prompts"), list):
        raise ValueError(f"{path}: not a step dump (expected an object with a 'prompts' list)")
    return rec


def choose_steps(dumps: dict[int, Path], steps: Iterable[int] | None) -> list[int]:
    """The dumped steps to render: all of them for None, else ``steps`` (sorted, deduplicated); raises
    ``ValueError`` naming a step without a dump and the steps that have one."""
    if steps is None:
        return list(dumps)
    if isinstance(steps, (int, str)):
        steps = [steps]
    chosen = sorted({int(s) for s in steps})
    missing = [s for s in chosen if s not in dumps]
    if missing:
        have = ", ".join(map(str, dumps)) or "none"
        raise ValueError(f"step(s) {missing} have no rollout dump in {DUMP_DIR}/ (dumped steps: {have}); "
                         "fix: choose dumped steps, or leave steps out to render all of them")
    return chosen


def metrics_by_step(metrics: Sequence[dict]) -> dict[int, dict]:
    """Metrics lines keyed by their ``step``."""
    return {m["step"]: m for m in metrics}


def series(metrics: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric over the logged steps, keeping finite numbers only."""
    xs, ys = [], []
    for m in metrics:
        v = m.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(m["step"])
            ys.append(float(v))
    return xs, ys


def numeric_keys(metrics: Sequence[dict]) -> list[str]:
    """Every metric name with at least one finite number, in first-seen order (``step``/``time`` excluded)."""
    seen: dict[str, None] = {}
    for m in metrics:
        for k, v in m.items():
            if k in ("step", "time") or k in seen:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                seen[k] = None
    return list(seen)


def num(x: Any) -> float | None:
    """``x`` as a finite float, or None (null, NaN, strings, booleans)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None
