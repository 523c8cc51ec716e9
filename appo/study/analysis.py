"""Turn the study's run directories into curves, a results table and bootstrap confidence intervals.

Reads, per run, ``val/step_N.json`` (every held-out answer, scored) and ``metrics.jsonl``. Accuracy is
the reward's ``acc`` metric (math equivalence for arithmetic, exact match for QA). The APPO-minus-baseline
interval is a paired bootstrap over seeds and held-out problems: each resample draws seeds, then each drawn
seed's problems, with replacement (the same draw for both arms), and takes the mean accuracy difference.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from appo.study.runner import ABLATIONS, MAIN, RunSpec, StudySettings, plan


@dataclass
class RunResult:
    """What one finished run contributes."""

    task: str
    variant: str
    group: str
    seed: int
    curve: dict[int, float]
    """Validation accuracy by step."""
    final_correct: dict[str, float] = field(default_factory=dict)
    """Example id -> accuracy (0/1) at the last validation."""
    tool_calls: float = float("nan")
    """Mean tool calls per training rollout over the run."""
    wall_s: float = float("nan")
    """Summed step time of the run."""

    @property
    def final(self) -> float:
        return self.curve[max(self.curve)] if self.curve else float("nan")


def load_run(spec: RunSpec) -> RunResult | None:
    """The results of one run, or None if it has no validation yet."""
    val_dir = spec.run_dir / "val"
    files = sorted(val_dir.glob("step_*.json")) if val_dir.exists() else []
    if not files:
        return None
    curve, final = {}, {}
    for f in files:
        data = json.loads(f.read_text())
        step = int(f.stem.split("_")[1])
        curve[step] = float(data["summary"]["all"].get("acc", float("nan")))
        if f == files[-1]:
            final = {r["id"]: float(r["metrics"].get("acc", 0.0)) for r in data["rows"]}
    tool_calls, wall = [], 0.0
    metrics = spec.run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            m = json.loads(line)
            if "rollout/tool_calls_per_rollout" in m:
                tool_calls.append(m["rollout/tool_calls_per_rollout"])
            wall += m.get("timing_s/step", 0.0)
    return RunResult(spec.task, spec.variant.name, spec.variant.group, spec.seed, curve, final,
                     statistics.fmean(tool_calls) if tool_calls else float("nan"), wall)


def load_results(out: str | Path, settings: StudySettings) -> list[RunResult]:
    """Every run of the plan that has results."""
    return [r for r in (load_run(s) for s in plan(settings, Path(out))) if r is not None]


def paired_bootstrap(a: Sequence[RunResult], b: Sequence[RunResult], n: int = 2000, seed: int = 0,
                     ) -> tuple[float, float, float]:
    """Mean final-accuracy difference a - b and its 95% percentile interval, resampling seeds and problems.

    Runs are paired by seed; within a seed, problems are paired by id (only those both arms answered; each
    seed may have its own held-out set). Point estimate: the mean over seeds of each seed's mean per-problem
    difference. Each of the ``n`` bootstrap draws resamples the seeds with replacement, then each drawn
    seed's problems with replacement. Returns (diff, lo, hi); NaNs when no seed or problem is shared.
    """
    by_seed_a, by_seed_b = {r.seed: r for r in a}, {r.seed: r for r in b}
    d: dict[int, list[float]] = {}
    for s in sorted(set(by_seed_a) & set(by_seed_b)):
        ca, cb = by_seed_a[s].final_correct, by_seed_b[s].final_correct
        ids = sorted(set(ca) & set(cb))
        if ids:
            d[s] = [ca[i] - cb[i] for i in ids]
    if not d:
        return float("nan"), float("nan"), float("nan")
    seeds = sorted(d)
    point = statistics.fmean(statistics.fmean(d[s]) for s in seeds)
    rng = random.Random(seed)
    stats = []
    for _ in range(n):
        ss = [rng.choice(seeds) for _ in seeds]
        stats.append(statistics.fmean(statistics.fmean(rng.choice(d[s]) for _ in d[s]) for s in ss))
    stats.sort()
    return point, stats[int(0.025 * n)], stats[int(0.975 * n) - 1]


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.pstdev(xs) if len(xs) > 1 else 0.0)


def table(results: Sequence[RunResult], task: str, group: str | None = None) -> list[dict]:
    """One row per variant of ``task``: start and final accuracy (mean, std over seeds), the APPO-minus-
    variant difference with its bootstrap interval, tool calls per rollout, and seeds done."""
    names = [v.name for v in MAIN + ABLATIONS if group is None or v.group == group or v.name == "appo"]
    appo = [r for r in results if r.task == task and r.variant == "appo"]
    rows = []
    for name in names:
        rs = [r for r in results if r.task == task and r.variant == name]
        if not rs:
            continue
        mean, std = _mean_std([r.final for r in rs])
        start, _ = _mean_std([r.curve[min(r.curve)] for r in rs])
        diff, lo, hi = paired_bootstrap(appo, rs) if name != "appo" else (float("nan"),) * 3
        rows.append({"variant": name, "seeds": len(rs), "start": start, "final_mean": mean, "final_std": std,
                     "appo_minus": diff, "ci_lo": lo, "ci_hi": hi,
                     "tool_calls": _mean_std([r.tool_calls for r in rs])[0],
                     "minutes": _mean_std([r.wall_s / 60 for r in rs])[0]})
    return rows


def plot_curves(results: Sequence[RunResult], task: str, path: str | Path, names: Sequence[str]) -> Path:
    """Accuracy-vs-step curves (mean over seeds, shaded +- std) of ``names`` on ``task`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name in names:
        rs = [r for r in results if r.task == task and r.variant == name]
        if not rs:
            continue
        steps = sorted(set.intersection(*(set(r.curve) for r in rs)))
        means = [statistics.fmean(r.curve[s] for r in rs) for s in steps]
        stds = [statistics.pstdev([r.curve[s] for r in rs]) if len(rs) > 1 else 0.0 for s in steps]
        line, = ax.plot(steps, means, marker="o", ms=3, label=f"{name} (n={len(rs)})")
        ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                        color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_rows(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`table` rows."""
    def f(x, pct=True):
        return "–" if x is None or (isinstance(x,
                                               float) and math.isnan(x)) else (f"{100 * x:.1f}" if pct else f"{x:.2f}")

    out = ["| variant | seeds | start acc % | final acc % (mean ± std) | APPO − variant, pts [95% CI] "
           "| tool calls / rollout | min / run |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ci = "" if math.isnan(r["appo_minus"]) else f"{f(r['appo_minus'])} [{f(r['ci_lo'])}, {f(r['ci_hi'])}]"
        out.append(f"| {r['variant']} | {r['seeds']} | {f(r['start'])} | {f(r['final_mean'])} ± {f(r['final_std'])} | "
                   f"{ci or '–'} | {f(r['tool_calls'], False)} | {f(r['minutes'], False)} |")
    return "\n".join(out)


def write_results(out: str | Path, settings: StudySettings, doc: str | Path, command: str) -> Path:
    """Write the study's Markdown summary to ``doc`` (tables per task, ablations, curves next to it in
    ``<doc stem>/``) from the run directories under ``out``; returns the path."""
    doc = Path(doc)
    figs = doc.parent / doc.stem
    results = load_results(out, settings)
    lines = [f"Reproduce: `{command}` (settings: {json.dumps(settings.__dict__, default=list)}).", ""]
    for task in settings.tasks:
        rows = table(results, task, "main")
        if not rows:
            continue
        png = plot_curves(results, task, figs / f"{task}_main.png", [v.name for v in MAIN])
        lines += [f"### {task}", "", format_rows(rows), "", f"![{task}]({figs.name}/{png.name})", ""]
    if settings.ablations and settings.tasks:
        task = settings.tasks[0]
        rows = table(results, task, "ablation")
        if len(rows) > 1:
            png = plot_curves(results, task, figs / f"{task}_ablations.png", ["appo"] + [v.name for v in ABLATIONS])
            lines += [f"### APPO ablations ({task})", "", format_rows(rows), "",
                      f"![ablations]({figs.name}/{png.name})", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(lines)
    marker_start, marker_end = "<!-- study:begin -->", "<!-- study:end -->"
    if doc.exists() and marker_start in doc.read_text():
        text = doc.read_text()
        head, rest = text.split(marker_start, 1)
        tail = rest.split(marker_end, 1)[1] if marker_end in rest else ""
        doc.write_text(f"{head}{marker_start}\n{body}\n{marker_end}{tail}")
    else:
        doc.write_text(f"# Results\n\n{marker_start}\n{body}\n{marker_end}\n")
    return doc
