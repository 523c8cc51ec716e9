"""What every benchmark figure shares: interleaved timing, min/median/max, peak RSS, the machine record.

A *figure* compares ours against a baseline on the same inputs. Repeats are interleaved (ours, then
the baseline, swapping the order every repeat) so that load from other processes on a shared machine
hits both alike; the figure's ``speedup`` is the median of the per-repeat ratios (each repeat's pair
ran back to back), and ``speedup_min``/``speedup_max`` show their spread. ``speedup > 1`` always
means ours is better, whatever the unit (tokens/s: ours / baseline; seconds: baseline / ours).

Peak RSS: Linux keeps a high-water mark of the resident set (``VmHWM`` in ``/proc/self/status``) that
writing ``5`` to ``/proc/self/clear_refs`` resets; each contender's run is bracketed by a reset and a
read, so ``peak_rss_mb`` is the process's peak *during that contender's runs* (models and buffers
already loaded count, as they would in a real run). Where the file cannot be written, ``ru_maxrss``
(the peak since the process started) is reported instead and ``rss_method`` says so.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


# ------------------------------------------------------------------------------------------- memory
def _clear_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _read_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRSS:
    """Context manager measuring the process's peak resident set (MiB) inside the block."""

    method = "VmHWM reset per run" if _clear_hwm() else "ru_maxrss (peak since process start)"

    def __enter__(self) -> PeakRSS:
        self.ok = _clear_hwm()
        self.peak_mb = 0.0
        return self

    def __exit__(self, *exc) -> None:
        kb = _read_kb("VmHWM") if self.ok else None
        if kb is None:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_mb = kb / 1024.0


# ------------------------------------------------------------------------------------------- figures
def summary(xs: list[float]) -> dict[str, float]:
    """``{"min", "median", "max"}`` of a list of numbers."""
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


@dataclass
class Contender:
    """One side of a figure: a callable run once per repeat that returns its measure."""

    name: str
    """What runs (e.g. ``HFEngine.generate``, ``model.generate``)."""
    run: Callable[[int], float]
    """``run(repeat) -> value``: does the work once and returns the measured quantity (tokens/s, seconds)."""
    values: list[float] = field(default_factory=list)
    """Values of the repeats."""
    peak_rss_mb: float = 0.0
    """Largest peak RSS over its repeats."""


def interleave(ours: Contender, base: Contender | None, repeats: int, warmup: bool = True) -> None:
    """Run ``ours`` and ``base`` alternately ``repeats`` times (order swapped every repeat), after one
    unrecorded warm-up run each (unless ``warmup`` is False); fills ``values`` and ``peak_rss_mb``."""
    pair = [c for c in (ours, base) if c is not None]
    if warmup:
        for c in pair:
            c.run(-1)
    for r in range(repeats):
        for c in (pair if r % 2 == 0 else pair[::-1]):
            with PeakRSS() as mem:
                v = c.run(r)
            c.values.append(v)
            c.peak_rss_mb = max(c.peak_rss_mb, mem.peak_mb)


def figure(section: str, name: str, unit: str, ours: Contender, base: Contender | None, *,
           higher_is_better: bool, target: float | None = None, target_text: str = "",
           details: dict | None = None) -> dict:
    """A figure record from two contenders that ran through :func:`interleave`.

    ``speedup`` is the median over repeats of ``ours/base`` (``higher_is_better``) or ``base/ours``;
    ``met`` compares it with ``target`` (a speedup, or a fraction of a bound for the decode figure).
    """
    rec = {"section": section, "name": name, "unit": unit, "higher_is_better": higher_is_better,
           "repeats": len(ours.values), "ours_name": ours.name, "ours": summary(ours.values),
           "ours_peak_rss_mb": round(ours.peak_rss_mb, 1)}
    if base is not None and base.values:
        ratios = [(o / b if higher_is_better else b / o) if min(o, b) > 0 else float("nan")
                  for o, b in zip(ours.values, base.values)]
        rec.update(baseline_name=base.name, baseline=summary(base.values),
                   baseline_peak_rss_mb=round(base.peak_rss_mb, 1), speedup=statistics.median(ratios),
                   speedup_min=min(ratios), speedup_max=max(ratios))
    else:
        rec.update(baseline_name=None if base is None else base.name, baseline=None, baseline_peak_rss_mb=None,
                   speedup=None, speedup_min=None, speedup_max=None)
    rec["target"] = target
    rec["target_text"] = target_text
    rec["met"] = None if target is None or rec["speedup"] is None else bool(rec["speedup"] >= target)
    rec["details"] = details or {}
    return rec


def skipped(section: str, name: str, reason: str) -> dict:
    """A placeholder figure for something that could not run here (e.g. TRL not installed)."""
    return {"section": section, "name": name, "skipped": reason}


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------- machine
def machine_record() -> dict:
    """Cores, CPU model, torch/transformers/trl versions, thread settings, load average, memory."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import transformers

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    mem_kb = None
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "logical_cores": os.cpu_count(), "affinity_cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity") else None, "memory_gib": round(mem_kb / 2**20, 1) if mem_kb else None,
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "trl": trl_version, "torch_default_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform(),
        "rss_method": PeakRSS.method,
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other processes on a shared machine show up here)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
