"""Latency of the Python sandbox: ``python -m appo.tools.bench_sandbox [--calls N] [--out FILE.json]``.

Prints a table (median and 90th percentile of one ``print(1)`` call, serially, per configuration,
against a bare ``python -I -S -c pass`` start as the floor) and the throughput of a concurrent batch,
and writes the numbers as JSON. Kept short: it runs in well under a minute on two busy cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from appo.tools.python_sandbox import PythonTool
from appo.tools.sandbox_config import SandboxConfig
from appo.tools.sandbox_process import detect_isolation, run_sandboxed


def _stats(measured: tuple[list[float], float]) -> dict:
    times_s, cpu_s = measured
    ms = sorted(t * 1000 for t in times_s)
    return {"median_ms": round(statistics.median(ms), 1), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
            "min_ms": round(ms[0], 1), "child_cpu_ms": round(cpu_s * 1000, 1), "n": len(ms)}


def _time_calls(fn, n: int) -> tuple[list[float], float]:
    """Wall seconds of each of ``n`` calls, and the CPU seconds (children's user + system) per call.

    CPU time is the steadier number on a shared machine: wall time includes waiting for a core.
    """
    fn()  # warm-up (probe, caches)
    out = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / n
    return out, cpu


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the JSON-able results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20, help="serial calls per configuration")
    ap.add_argument("--batch", type=int, default=16, help="calls in the concurrent batch")
    ap.add_argument("--out", default="", help="write the results here as JSON")
    args = ap.parse_args(argv)

    rows: dict[str, dict] = {}
    rows["bare interpreter (python -I -S -c pass)"] = _stats(_time_calls(
        lambda: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True), args.calls))
    base = SandboxConfig(timeout_s=10)
    levels = ["namespaces"] if os.geteuid() == 0 else []
    levels += ["userns", "rlimits"]
    for level in levels:
        cfg = dataclasses.replace(base, isolation=level, allow_unisolated=True)
        if detect_isolation(cfg)[0] != level:
            rows[f"level {level}"] = {"skipped": "not available here"}
            continue
        rows[f"level {level}"] = _stats(_time_calls(lambda c=cfg, lv=level: run_sandboxed("print(1)", c, lv),
                                                    args.calls))
    best = detect_isolation(base)[0]
    if best is not None:
        for label, cfg in (("nice 0", dataclasses.replace(base, nice=0)),
                           ("no site-packages", dataclasses.replace(base, site_packages=False)),
                           ("preimport numpy", dataclasses.replace(base, preimports=("numpy",)))):
            if label == "preimport numpy":
                try:
                    import numpy  # noqa: F401
                except ImportError:
                    continue
            rows[f"level {best}, {label}"] = _stats(
                _time_calls(lambda c=cfg: run_sandboxed("print(1)", c, best), max(5, args.calls // 2)))
        tool = PythonTool(base, max_workers=4)
        tool.call({"code": "print(1)"})
        t = time.perf_counter()
        results = tool.call_batch([{"code": "print(1)"}] * args.batch)
        wall = time.perf_counter() - t
        assert all(r.ok for r in results), results
        rows[f"level {best}, batch of {args.batch} on 4 workers"] = {
            "wall_ms": round(wall * 1000, 1), "calls_per_s": round(args.batch / wall, 1)}
    width = max(map(len, rows))
    print(f"{'configuration':<{width}}  result")
    for name, r in rows.items():
        print(f"{name:<{width}}  " + "  ".join(f"{k}={v}" for k, v in r.items()))
    out = {"cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "python": sys.version.split()[0], "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
