"""Training curves as PNG files (matplotlib, Agg canvas, no pyplot state), one file per panel.

A panel lists metric names or ``fnmatch`` patterns (``val/*/acc``); it plots every matching metric that
has a finite value somewhere and is skipped when none has. Sparse series (validation every few steps)
get markers. Left out on purpose: smoothing (a few dozen steps is the common case here) and a plot for
every metric (the index lists all metrics with their last value instead).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from appo.report.run import numeric_keys, series


@dataclass(frozen=True)
class Panel:
    """One chart of the index page."""

    name: str
    """File stem of the PNG (``reward`` -> ``curves/reward.png``)."""
    title: str
    """Chart title."""
    keys: tuple[str, ...]
    """Metric names or fnmatch patterns, plotted in this order (a name matched twice is plotted once)."""
    fallback: tuple[str, ...] = ()
    """Names tried only when none of ``keys`` has data (older or other loggers' names)."""
    band: tuple[str, str] | None = None
    """(min, max) metric names drawn as a shaded band behind the first series."""


PANELS: tuple[Panel, ...] = (
    Panel("reward", "Reward (mean score per row)", ("critic/score/mean",),
          band=("critic/score/min", "critic/score/max")),
    Panel("accuracy", "Accuracy (train and validation)", ("reward/acc", "val/*/acc")),
    Panel("response_length", "Response length (tokens)", ("response_length/mean", "response_length/model_tokens_mean"),
          fallback=("rollout/response_length",)),
    Panel("tool_calls", "Tool calls per rollout", ("rollout/tool_calls_per_rollout",), fallback=("tool_calls/mean",)),
    Panel("branches", "Branches per prompt", ("rollout/branches_per_prompt",)),
    Panel("branch_points", "Branch-point selection (APPO)", ("appo/strict_point_rate", "appo/omega_degenerate_rate")),
    Panel("clipfrac", "PPO clip fraction", ("actor/pg_clipfrac", "actor/pg_clipfrac_lower")),
    Panel("grad_norm", "Gradient norm (before clipping)", ("actor/grad_norm",)),
    Panel("entropy", "Policy entropy (trained tokens)", ("actor/entropy",)),
    Panel("kl", "KL (PPO and to the reference)", ("actor/ppo_kl", "actor/kl_loss")),
    Panel("tool_errors", "Tool errors and truncation", ("rollout/tool_error_rate", "response_length/clip_ratio")),
    Panel("timing", "Time per step (s)", ("timing_s/step", "timing_s/*")),
)
"""The charts of the index page, in display order."""


@dataclass(frozen=True)
class Curve:
    """A written chart."""

    panel: Panel
    """The panel it draws."""
    path: Path
    """The PNG file."""
    keys: tuple[str, ...]
    """The metric names it plots."""


def panel_keys(panel: Panel, available: Sequence[str]) -> list[str]:
    """The metric names ``panel`` plots given the ``available`` ones (patterns expanded, duplicates once)."""
    def expand(patterns: Sequence[str]) -> list[str]:
        out: list[str] = []
        for pat in patterns:
            for k in (fnmatch.filter(available, pat) if any(c in pat for c in "*?[") else [pat]):
                if k in available and k not in out:
                    out.append(k)
        return out

    return expand(panel.keys) or expand(panel.fallback)


def write_curves(metrics: Sequence[dict], out_dir: str | Path, panels: Sequence[Panel] = PANELS) -> list[Curve]:
    """Write one PNG per panel with data to ``out_dir`` (created); returns the charts written, in order."""
    available = numeric_keys(metrics)
    todo = [(p, panel_keys(p, available)) for p in panels]
    todo = [(p, keys) for p, keys in todo if keys]
    if not todo:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = []
    for panel, keys in todo:
        fig = _figure()
        ax = fig.add_subplot()
        for i, key in enumerate(keys):
            xs, ys = series(metrics, key)
            if i == 0 and panel.band:
                lo, hi = (dict(zip(*series(metrics, k))) for k in panel.band)
                bx = [x for x in xs if x in lo and x in hi]
                if bx:
                    ax.fill_between(bx, [lo[x] for x in bx], [hi[x] for x in bx], alpha=0.15, linewidth=0,
                                    label="min-max")
            sparse = len(xs) < 30
            ax.plot(xs, ys, marker="o" if sparse else None, markersize=3, linewidth=1.4, label=_label(key))
        _style(ax, panel.title, "step")
        ax.legend(fontsize=7, frameon=False, loc="best")
        path = out / f"{panel.name}.png"
        fig.savefig(path)
        curves.append(Curve(panel=panel, path=path, keys=tuple(keys)))
    return curves


def _figure():
    """A 460x290 px figure with fixed margins (constrained layout would draw every chart twice)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 2.9), dpi=100)
    fig.subplots_adjust(left=0.15, right=0.97, top=0.9, bottom=0.16)
    return fig


def _style(ax, title: str, xlabel: str) -> None:
    """Title, integer step ticks, y tick labels without an offset (exponent outside 1e-3..1e4), grid."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_powerlimits((-3, 4))
    ax.yaxis.set_major_formatter(fmt)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def _label(key: str) -> str:
    return key[len("timing_s/"):] if key.startswith("timing_s/") else key


def write_fork_positions(points: Sequence[tuple[int, float]], path: str | Path) -> Path | None:
    """Scatter of where branches fork: x = dumped step, y = split / parent response length (0 = first
    token, 1 = last). ``points`` are (step, fraction); None (nothing written) when empty."""
    if not points:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    steps = sorted({s for s, _ in points})
    spread = 0.3 * (min(b - a for a, b in zip(steps, steps[1:])) if len(steps) > 1 else 1)
    xs = [s + spread * (((i * 0.618034) % 1.0) - 0.5) for i, (s, _) in enumerate(points)]  # even jitter
    ys = [f for _, f in points]
    ax.scatter(xs, ys, s=12, alpha=0.8 if len(points) < 200 else 0.35, color="#7b2cbf", linewidths=0)
    ax.set_ylim(-0.03, 1.03)
    _style(ax, "Where branches fork (split / parent length)", "dumped step")
    if len(steps) <= 12:
        ax.set_xticks(steps)
        ax.set_xlim(steps[0] - 0.6, steps[-1] + 0.6)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return Path(path)
