"""Turn the study's run directories into curves, results tables, bootstrap intervals and a seed count.

Reads, per run, ``val/step_N.json`` (every held-out sample, scored; ``val_samples`` per problem at the
training temperature), ``val/greedy_step_N.json`` (the greedy pass) and ``metrics.jsonl`` (tool calls,
step time, and ``batch/loss_tokens``, the tokens each update was taken over). Accuracy is the reward's
``acc`` metric (math equivalence for arithmetic, exact match for QA).

- A problem's score at one evaluation is the mean accuracy of its samples; the **final** score of a
  problem averages its scores over the last ``final_evals`` evaluations (after step 0), and a run's final
  accuracy is the mean over problems.
- **Equal rollout budget**: every arm generates the same rows per step for the same steps; the final
  scores are compared directly.
- **Equal trained tokens**: arms differ in the tokens their updates are taken over (APPO trains on its
  initial rows only, by default). Per seed, both arms are read at ``T = min`` of their total trained
  tokens: each problem's score is interpolated linearly between the two evaluations whose cumulative
  trained tokens bracket ``T``.
- **Interval**: a paired bootstrap over seeds and held-out problems (:func:`bootstrap`).
- **Seeds needed** for a 95% interval of half-width ``h``: from the spread of the per-seed differences
  (:func:`seeds_needed`).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from appo.study.runner import ABLATIONS, MAIN, RunSpec, StudySettings, finished, plan

Scores = dict[str, float]
"""Held-out problem id -> score (mean accuracy of its samples)."""


@dataclass
class RunResult:
    """What one finished (or partly finished) run contributes."""

    task: str
    variant: str
    group: str
    seed: int
    curve: dict[int, float]
    """Validation accuracy (sampled at the training temperature) by step."""
    final_correct: Scores = field(default_factory=dict)
    """Per-problem final score: mean over the last ``final_evals`` evaluations after step 0."""
    tool_calls: float = float("nan")
    """Mean tool calls per training rollout over the run."""
    wall_s: float = float("nan")
    """Summed step time of the run."""
    greedy_curve: dict[int, float] = field(default_factory=dict)
    """Greedy validation accuracy by step (empty without a greedy pass)."""
    final_greedy: Scores = field(default_factory=dict)
    """Per-problem greedy final score, averaged like ``final_correct``."""
    by_step: dict[int, Scores] = field(default_factory=dict)
    """Per-problem sampled score at each evaluated step."""
    tokens: dict[int, float] = field(default_factory=dict)
    """Cumulative trained (loss) tokens after each step; step 0 -> 0."""
    oracle_precision: float = float("nan")
    """APPO on a task that records its decisive token: mean over steps of ``appo/oracle_precision`` (share of
    branch points equal to the oracle's); nan elsewhere."""
    decisive_rate: float = float("nan")
    """The same for ``appo/decisive_token_rate`` (share of points at the decisive token itself)."""

    @property
    def final(self) -> float:
        """Final accuracy: the mean of ``final_correct`` (the last curve point when it is empty)."""
        if self.final_correct:
            return statistics.fmean(self.final_correct.values())
        return self.curve[max(self.curve)] if self.curve else float("nan")

    @property
    def final_greedy_mean(self) -> float:
        """Greedy final accuracy (NaN without a greedy pass)."""
        return statistics.fmean(self.final_greedy.values()) if self.final_greedy else float("nan")

    @property
    def total_tokens(self) -> float:
        """Trained tokens of the whole run (NaN when the metrics do not count them)."""
        return self.tokens[max(self.tokens)] if self.tokens else float("nan")


def _per_problem(rows: Sequence[Mapping]) -> Scores:
    """Problem id -> mean ``acc`` over its sample rows."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        acc.setdefault(r["id"], []).append(float(r["metrics"].get("acc", 0.0)))
    return {k: statistics.fmean(v) for k, v in acc.items()}


def final_scores(by_step: Mapping[int, Scores], last: int) -> Scores:
    """Per-problem mean over the last ``last`` evaluated steps after step 0 (step 0 alone when there is no
    other), on the problems every one of them scored."""
    steps = sorted(s for s in by_step if s > 0)[-last:] or sorted(by_step)[:1]
    if not steps:
        return {}
    ids = set.intersection(*(set(by_step[s]) for s in steps))
    return {i: statistics.fmean(by_step[s][i] for s in steps) for i in sorted(ids)}


def _read_evals(val_dir: Path, prefix: str) -> dict[int, Scores]:
    out = {}
    for f in sorted(val_dir.glob(f"{prefix}step_*.json")):
        out[int(f.stem.rsplit("_", 1)[1])] = _per_problem(json.loads(f.read_text())["rows"])
    return out


def load_run(spec: RunSpec, final_evals: int = 3) -> RunResult | None:
    """The results of one run, or None if it has no validation yet."""
    val_dir = spec.run_dir / "val"
    by_step = _read_evals(val_dir, "") if val_dir.exists() else {}
    if not by_step:
        return None
    greedy = _read_evals(val_dir, "greedy_")
    tool_calls, wall, tokens, total = [], 0.0, {0: 0.0}, 0.0
    precision: dict[str, list[float]] = {"appo/oracle_precision": [], "appo/decisive_token_rate": []}
    metrics = spec.run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            m = json.loads(line)
            if "rollout/tool_calls_per_rollout" in m:
                tool_calls.append(m["rollout/tool_calls_per_rollout"])
            if "batch/loss_tokens" in m and m.get("step"):
                total += m["batch/loss_tokens"]
                tokens[int(m["step"])] = total
            wall += m.get("timing_s/step", 0.0)
            for key, vals in precision.items():
                if key in m and m[key] == m[key]:  # nan when no row of the step had the token
                    vals.append(m[key])
    return RunResult(
        spec.task, spec.variant.name, spec.variant.group, spec.seed,
        curve={s: statistics.fmean(v.values()) for s, v in by_step.items()},
        final_correct=final_scores(by_step, final_evals),
        tool_calls=statistics.fmean(tool_calls) if tool_calls else float("nan"), wall_s=wall,
        greedy_curve={s: statistics.fmean(v.values()) for s, v in greedy.items()},
        final_greedy=final_scores(greedy, final_evals) if greedy else {},
        by_step=by_step, tokens=tokens if len(tokens) > 1 else {},
        **{name: statistics.fmean(vals) if vals else float("nan") for name, vals in
           zip(("oracle_precision", "decisive_rate"), precision.values())})


def load_results(out: str | Path, settings: StudySettings, finished_only: bool = True) -> list[RunResult]:
    """Every run of the plan that has results (by default only runs that validated after their last step,
    so a study stopped part-way reports whole runs only)."""
    specs = [s for s in plan(settings, Path(out)) if not finished_only or finished(s.run_dir, settings.steps)]
    runs = (load_run(s, settings.final_evals) for s in specs)
    return [r for r in runs if r is not None]


# ------------------------------------------------------------------------------------ equal tokens
def scores_at_tokens(run: RunResult, budget: float) -> Scores:
    """Per-problem score of ``run`` after ``budget`` trained tokens: linear interpolation between the two
    evaluated steps whose cumulative trained tokens bracket it (the last evaluation when the run trained
    on fewer tokens; step 0 = 0 tokens). Empty when the run has no token counts."""
    steps = [s for s in sorted(run.by_step) if s in run.tokens]
    if not steps:
        return {}
    lo = steps[0]
    for s in steps:
        if run.tokens[s] <= budget:
            lo = s
    later = [s for s in steps if s > lo]
    if not later or run.tokens[later[0]] <= run.tokens[lo]:
        return dict(run.by_step[lo])
    hi = later[0]
    w = min(1.0, (budget - run.tokens[lo]) / (run.tokens[hi] - run.tokens[lo]))
    a, b = run.by_step[lo], run.by_step[hi]
    return {i: (1 - w) * a[i] + w * b[i] for i in sorted(set(a) & set(b))}


# ---------------------------------------------------------------------------------- differences
def differences(a: Sequence[RunResult], b: Sequence[RunResult],
                score: Callable[[RunResult], Scores] = lambda r: r.final_correct) -> dict[int, list[float]]:
    """Seed -> per-problem differences ``score(a) - score(b)`` on the problems both runs of that seed
    scored (runs paired by seed; seeds with no shared problem are left out)."""
    by_seed_a, by_seed_b = {r.seed: r for r in a}, {r.seed: r for r in b}
    d: dict[int, list[float]] = {}
    for s in sorted(set(by_seed_a) & set(by_seed_b)):
        ca, cb = score(by_seed_a[s]), score(by_seed_b[s])
        ids = sorted(set(ca) & set(cb))
        if ids:
            d[s] = [ca[i] - cb[i] for i in ids]
    return d


def equal_token_differences(a: Sequence[RunResult], b: Sequence[RunResult]) -> dict[int, list[float]]:
    """Like :func:`differences`, each seed's pair read at the smaller of the two runs' trained tokens."""
    by_seed_b = {r.seed: r for r in b}
    d: dict[int, list[float]] = {}
    for ra in a:
        rb = by_seed_b.get(ra.seed)
        if rb is None or not ra.tokens or not rb.tokens:
            continue
        budget = min(ra.total_tokens, rb.total_tokens)
        ca, cb = scores_at_tokens(ra, budget), scores_at_tokens(rb, budget)
        ids = sorted(set(ca) & set(cb))
        if ids:
            d[ra.seed] = [ca[i] - cb[i] for i in ids]
    return dict(sorted(d.items()))


def bootstrap(d: Mapping[int, Sequence[float]], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean difference and its 95% percentile interval from per-seed per-problem differences ``d``.

    Point estimate: the mean over seeds of each seed's mean difference. Each of the ``n`` draws resamples
    the seeds with replacement, then each drawn seed's problems with replacement. Returns (diff, lo, hi);
    NaNs when ``d`` is empty."""
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


def paired_bootstrap(a: Sequence[RunResult], b: Sequence[RunResult], n: int = 2000, seed: int = 0,
                     score: Callable[[RunResult], Scores] = lambda r: r.final_correct,
                     ) -> tuple[float, float, float]:
    """Mean final-score difference a - b and its 95% interval: :func:`bootstrap` of :func:`differences`
    (runs paired by seed, problems by id). Returns (diff, lo, hi); NaNs when nothing is shared."""
    return bootstrap(differences(a, b, score), n, seed)


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student's t 97.5% quantile for ``df`` degrees of freedom (table to 30, ``1.96 + 2.4 / df`` above,
    within 0.002 of the exact value)."""
    if df < 1:
        raise ValueError(f"t975: df={df} must be >= 1")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def seeds_needed(d: Mapping[int, Sequence[float]], half_width: float = 0.03) -> float:
    """Seeds for a 95% interval of the mean difference no wider than ``+-half_width``: the smallest ``n``
    with ``t_{0.975, n-1} * sd / sqrt(n) <= half_width``, ``sd`` the standard deviation of the per-seed mean
    differences of ``d`` (it holds both training noise and the held-out sample of each seed). NaN with
    fewer than 2 seeds; a planning number, as noisy as ``sd`` (from few seeds, it can be off by 2x)."""
    means = [statistics.fmean(v) for v in d.values() if v]
    if len(means) < 2:
        return float("nan")
    sd = statistics.stdev(means)
    n = 2
    while t975(n - 1) * sd / math.sqrt(n) > half_width:
        n += 1
    return float(n)


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.pstdev(xs) if len(xs) > 1 else 0.0)


def table(results: Sequence[RunResult], task: str, group: str | None = None, half_width: float = 0.03) -> list[dict]:
    """One row per variant of ``task``: start and final accuracy (sampled; mean, std over seeds), the
    APPO-minus-variant difference with its interval at equal rollout budget (sampled, then greedy) and at
    equal trained tokens, the seeds a ``+-half_width`` interval of the sampled difference needs, trained
    tokens, tool calls per rollout, minutes per run and seeds done."""
    names = [v.name for v in MAIN + ABLATIONS if group is None or v.group == group or v.name == "appo"]
    appo = [r for r in results if r.task == task and r.variant == "appo"]
    nan3 = (float("nan"),) * 3
    rows = []
    for name in names:
        rs = [r for r in results if r.task == task and r.variant == name]
        if not rs:
            continue
        mean, std = _mean_std([r.final for r in rs])
        start, _ = _mean_std([r.curve[min(r.curve)] for r in rs])
        other = name != "appo"
        d = differences(appo, rs) if other else {}
        diff, lo, hi = bootstrap(d) if other else nan3
        g = paired_bootstrap(appo, rs, score=lambda r: r.final_greedy) if other else nan3
        t = bootstrap(equal_token_differences(appo, rs)) if other else nan3
        rows.append({"variant": name, "seeds": len(rs), "start": start, "final_mean": mean, "final_std": std,
                     "appo_minus": diff, "ci_lo": lo, "ci_hi": hi,
                     "greedy_mean": _mean_std([r.final_greedy_mean for r in rs])[0],
                     "greedy_minus": g[0], "greedy_lo": g[1], "greedy_hi": g[2],
                     "tokens_minus": t[0], "tokens_lo": t[1], "tokens_hi": t[2],
                     "seeds_needed": seeds_needed(d, half_width) if other else float("nan"),
                     "tokens_k": _mean_std([r.total_tokens / 1e3 for r in rs])[0],
                     "tool_calls": _mean_std([r.tool_calls for r in rs])[0],
                     "minutes": _mean_std([r.wall_s / 60 for r in rs])[0],
                     "oracle_precision": _mean_std([r.oracle_precision for r in rs])[0],
                     "decisive_rate": _mean_std([r.decisive_rate for r in rs])[0]})
    return rows


def plot_curves(results: Sequence[RunResult], task: str, path: str | Path, names: Sequence[str]) -> Path:
    """Accuracy curves of ``names`` on ``task`` as a PNG: against steps (sampled, solid, shaded +- std over
    seeds; greedy dashed) and against cumulative trained tokens (sampled, mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.0, 3.4), dpi=90)
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
        gs = sorted(set.intersection(*(set(r.greedy_curve) for r in rs))) if all(r.greedy_curve for r in rs) else []
        if gs:
            ax.plot(gs, [statistics.fmean(r.greedy_curve[s] for r in rs) for s in gs], ls="--", lw=1,
                    color=line.get_color())
        ts = [s for s in steps if all(s in r.tokens for r in rs)]
        if ts:
            bx.plot([statistics.fmean(r.tokens[s] for r in rs) / 1e3 for s in ts],
                    [statistics.fmean(r.curve[s] for r in rs) for s in ts], marker="o", ms=3, color=line.get_color())
    ax.set_xlabel("training step (equal rows generated)")
    ax.set_ylabel("held-out accuracy (sampled; greedy dashed)")
    bx.set_xlabel("trained tokens (thousands)")
    ax.set_title(task)
    bx.set_title(f"{task}: equal trained tokens")
    for a in (ax, bx):
        a.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _pct(x, pct=True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.2f}"


def _ci(r: Mapping, key: str, lo: str, hi: str) -> str:
    return "–" if math.isnan(r[key]) else f"{_pct(r[key])} [{_pct(r[lo])}, {_pct(r[hi])}]"


def format_rows(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`table` rows."""
    header = ("| variant | seeds | start acc % | final acc % (mean ± std) | APPO − variant, pts [95% CI] "
              "| greedy final % | APPO − variant, greedy | APPO − variant, equal trained tokens "
              "| seeds for ±3 pts | trained tokens / run (k) | tool calls / rollout | min / run |")
    points = any(not math.isnan(r.get("oracle_precision", float("nan"))) for r in rows)
    if points:  # a task that knows its decisive token (issue 24)
        header += " points at the oracle's % | points at the decisive token % |"
    out = [header, "|" + " --- |" * (header.count("|") - 1)]
    for r in rows:
        need = "–" if math.isnan(r["seeds_needed"]) else str(int(r["seeds_needed"]))
        cells = [r["variant"], str(r["seeds"]), _pct(r["start"]), f"{_pct(r['final_mean'])} ± {_pct(r['final_std'])}",
                 _ci(r, "appo_minus", "ci_lo", "ci_hi"), _pct(r["greedy_mean"]),
                 _ci(r, "greedy_minus", "greedy_lo", "greedy_hi"),
                 _ci(r, "tokens_minus", "tokens_lo", "tokens_hi"), need,
                 "–" if math.isnan(r["tokens_k"]) else f"{r['tokens_k']:.0f}",
                 _pct(r["tool_calls"], False), _pct(r["minutes"], False)]
        if points:
            cells += [_pct(r["oracle_precision"]), _pct(r["decisive_rate"])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


CONTRASTS = (("appo/points=oracle", "grpo"), ("appo", "grpo"), ("appo", "appo/points=oracle"),
             ("appo/points=entropy", "appo/points=oracle"), ("appo/points=random", "appo/points=oracle"),
             ("appo/points=oracle,train_branches=on", "appo/points=oracle"),
             ("appo/points=oracle,n_initial=6", "appo/points=oracle"),
             ("appo/points=oracle,fork=redraw", "grpo"), ("appo/fork=redraw", "grpo"),
             ("appo/fork=redraw", "appo/points=oracle,fork=redraw"),
             ("appo/points=entropy,fork=redraw", "appo/points=oracle,fork=redraw"),
             ("appo/points=random,fork=redraw", "appo/points=oracle,fork=redraw"),
             ("appo/points=entropy,fork=redraw", "grpo"), ("appo/points=random,fork=redraw", "grpo"),
             ("appo/points=oracle,fork=redraw", "appo/points=oracle"), ("appo/fork=redraw", "appo"),
             ("appo/points=oracle,fork=redraw,train_branches=on", "grpo"),
             ("appo/points=oracle,fork=redraw,train_branches=on", "appo/points=oracle,fork=redraw"))
"""The pairs issue 24 asks about on a task with a known decisive token: does branching there beat GRPO at
equal budget (oracle - GRPO), does the Branching Score (``appo``) or entropy or random reach the oracle, and
do the budget split or the branch rows' credit change the oracle arm; then the same with ``fork=redraw``
(the chosen token re-sampled and credited with its branches' contrast; every re-draw point arm also against
GRPO, the issue's equal-budget question for each), and what re-drawing changes
against ``after`` for the oracle and for the Branching Score."""


def contrast_rows(results: Sequence[RunResult], task: str,
                  pairs: Sequence[tuple[str, str]] = CONTRASTS) -> list[dict]:
    """Paired differences ``a - b`` of final sampled accuracy on ``task`` for each pair of :data:`CONTRASTS`
    whose both arms ran: :func:`paired_bootstrap` (mean, 95% interval), the seeds shared and the interval's
    width. Leaves out pairs with a missing arm."""
    rows = []
    for a, b in pairs:
        ra = [r for r in results if r.task == task and r.variant == a]
        rb = [r for r in results if r.task == task and r.variant == b]
        d = differences(ra, rb)
        if not d:
            continue
        diff, lo, hi = bootstrap(d)
        rows.append({"a": a, "b": b, "seeds": len(d), "diff": diff, "lo": lo, "hi": hi, "width": hi - lo})
    return rows


def format_contrasts(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`contrast_rows`."""
    out = ["| a − b | seeds | difference, pts [95% CI] | interval width, pts |", "| --- | --- | --- | --- |"]
    out += [f"| {r['a']} − {r['b']} | {r['seeds']} | {_ci(r, 'diff', 'lo', 'hi')} | {_pct(r['width'])} |"
            for r in rows]
    return "\n".join(out)


def run_summaries(results: Sequence[RunResult]) -> list[dict]:
    """Small JSON-ready records of every run (curves, token counts, finals; no per-problem scores)."""
    def rnd(d):
        return {int(k): round(v, 4) for k, v in d.items()}

    def num(x, digits):
        return None if math.isnan(x) else round(x, digits)

    return [{"task": r.task, "variant": r.variant, "seed": r.seed, "curve": rnd(r.curve),
             "greedy_curve": rnd(r.greedy_curve),
             "tokens": {int(s): int(t) for s, t in r.tokens.items() if s in r.curve}, "final": num(r.final, 4),
             "final_greedy": num(r.final_greedy_mean, 4), "problems": len(r.final_correct),
             "tool_calls": num(r.tool_calls, 3), "minutes": num(r.wall_s / 60, 2)} for r in results]


def write_results(out: str | Path, settings: StudySettings, doc: str | Path, command: str) -> Path:
    """Write the study's Markdown summary to ``doc`` between its ``study:begin`` / ``study:end`` markers
    (tables per task, ablations; curves and ``summary.json`` next to it in ``<doc stem>/``) from the run
    directories under ``out``; returns the path."""
    doc = Path(doc)
    figs = doc.parent / doc.stem
    results = load_results(out, settings)
    if "--report-only" in command.split():
        lead = (f"Tables written by `{command}` from the runs already finished under `{out}`; the same command "
                "without `--report-only` trains any that are missing")
    else:
        lead = f"Reproduce: `{command}`"
    lines = [f"{lead} (settings: {json.dumps(settings.__dict__, default=list)}).", ""]
    for task in settings.tasks:
        rows = table(results, task, "main")
        if rows:
            png = plot_curves(results, task, figs / f"{task}_main.png", [v.name for v in MAIN])
            lines += [f"### {task}", "", format_rows(rows), "", f"![{task}]({figs.name}/{png.name})", ""]
        abl = table(results, task, "ablation") if settings.ablations else []
        if len(abl) > 1:  # every ablation on the first task; the point arms on later depth tasks too
            png = plot_curves(results, task, figs / f"{task}_ablations.png", ["appo"] + [v.name for v in ABLATIONS])
            lines += [f"### APPO ablations ({task})", "", format_rows(abl), "",
                      f"![ablations]({figs.name}/{png.name})", ""]
        contrasts = contrast_rows(results, task) if any(
            not math.isnan(r.oracle_precision) for r in results if r.task == task) else []
        if contrasts:
            lines += [f"### Branch points against GRPO and the oracle ({task})", "",
                      "Paired by seed and held-out problem, final sampled accuracy, equal rollout budget.", "",
                      format_contrasts(contrasts), ""]
    figs.mkdir(parents=True, exist_ok=True)
    (figs / "summary.json").write_text(json.dumps(run_summaries(results), indent=0) + "\n")
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
