"""Markdown tables of ``appo perf`` results (the tables in ``docs/perf.md``).

``python -m appo.perf.report runs/bench/smollm2.json runs/bench/tiny.json`` prints one table over all
the files' figures, then the machine and load-average lines of each file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _num(x, unit: str) -> str:
    if x is None:
        return "-"
    if unit.startswith("s"):
        return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"
    if unit == "MiB":
        return f"{x:.0f}"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _cell(s: dict | None, unit: str) -> str:
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return _num(s["median"], unit)
    return f"{_num(s['median'], unit)} ({_num(s['min'], unit)}-{_num(s['max'], unit)})"


def markdown_table(results: list[dict]) -> str:
    """One row per figure: section, figure, unit, ours and baseline as median (min-max), speedup (min-max),
    target, met, peak RSS (MiB) of ours / the baseline."""
    lines = ["| section | figure | unit | ours | baseline | speedup | target | met | peak RSS MiB ours / base |",
             "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for f in res["figures"]:
            if "skipped" in f:
                lines.append(f"| {f['section']} | {f['name']} | | skipped: {f['skipped']} | | | | | |")
                continue
            if "check" in f:
                lines.append(f"| {f['section']} | {f['name']} | nats | {f['check']}: max {f['max_abs_diff']:.1e}, "
                             f"mean {f['mean_abs_diff']:.1e} ({f['tokens']} tokens) | | | | | |")
                continue
            u = f["unit"]
            sp = "-" if f["speedup"] is None else f"{f['speedup']:.2f}x"
            if f["speedup"] is not None and f.get("speedup_min") is not None:
                sp += f" ({f['speedup_min']:.2f}-{f['speedup_max']:.2f})"
            met = {True: "yes", False: "**no**", None: ""}[f["met"]]
            rss = " / ".join(f"{x:.0f}" if x else "-" for x in (f.get("ours_peak_rss_mb"),
                                                                f.get("baseline_peak_rss_mb")))
            lines.append(f"| {f['section']} | {f['name']} | {u} | {_cell(f['ours'], u)} "
                         f"| {_cell(f.get('baseline'), u)} | {sp} | {f['target_text']} | {met} | {rss} |")
    return "\n".join(lines)


def machine_lines(res: dict) -> list[str]:
    """The machine record and the load averages of a result, as markdown bullet lines."""
    m = res["machine"]
    loads = [s["load_before"][0] for s in res["sections"]] + [s["load_after"][0] for s in res["sections"]]
    return [f"- `{' '.join(res.get('argv', []))}`: {m['cpu']}, {m['logical_cores']} cores, {m['memory_gib']} GiB, "
            f"torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}, Python {m['python']}; "
            f"{res['seconds'] / 60:.0f} min; 1-min load average during the run {min(loads):.1f}-{max(loads):.1f} "
            f"(peak RSS: {m['rss_method']})"]


def main(argv: list[str] | None = None) -> int:
    """Print the markdown table of the given result files."""
    paths = argv if argv is not None else sys.argv[1:]
    results = [json.loads(Path(p).read_text()) for p in paths]
    print(markdown_table(results))
    print()
    for r in results:
        print("\n".join(machine_lines(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
