"""PNG charts of an influence analysis (matplotlib, Agg canvas, no pyplot state).

- ``influence_along_sequence.png``: one panel per rollout (the first ``max_rollouts``), influence at each
  analysed position (dots; error bar: Monte-Carlo standard error) and, in paired runs, the token effect
  (hollow diamonds) over the response position, coloured by region, tool calls shaded (call text and
  result), the entropy of every model token in grey behind.
- ``influence_vs_scores.png``: influence against entropy, against the Branching Score and (when an
  anchor was given) against Omega, with Spearman's rho in each title.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from appo.analysis.records import PositionRecord
from appo.analysis.stats import finite, spearman
from appo.types import Rollout

REGION_COLORS = {"think": "#1f77b4", "tool_call": "#2ca02c", "answer": "#d62728", "other": "#7f7f7f"}


def _canvas(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return fig


def plot_along_sequence(rows: Sequence[Rollout], positions: Sequence[PositionRecord], path: str | Path,
                        max_rollouts: int = 8) -> Path:
    """Write the influence-along-the-sequence chart (module docstring); returns its path."""
    from matplotlib.figure import Figure

    shown = list(rows)[:max_rollouts]
    n = max(len(shown), 1)
    fig = _canvas(Figure(figsize=(9, 1.9 * n + 0.6), dpi=100))
    axes = [fig.add_subplot(n, 1, i + 1) for i in range(n)]
    for ax, row in zip(axes, shown):
        pts = [p for p in positions if p.group == row.group and p.rollout == row.uid]
        for s in row.tool_spans:
            ax.axvspan(s.call_start - 0.5, s.result_end - 0.5, color="#2ca02c", alpha=0.12, linewidth=0)
            ax.axvline(s.call_start - 0.5, color="#2ca02c", linewidth=0.8)
        ent = ax.twinx()
        model = [t for t, m in enumerate(row.loss_mask) if m == 1]
        ent.plot(model, [row.entropies[t] for t in model], color="#bbbbbb", linewidth=0.7, zorder=0)
        ent.set_ylabel("H", fontsize=7, color="#999999")
        ent.tick_params(labelsize=6, colors="#999999")
        ax.set_zorder(ent.get_zorder() + 1)
        ax.patch.set_visible(False)
        for region, color in REGION_COLORS.items():
            sel = [p for p in pts if p.region == region]
            if sel:
                err = [p.standard_error if finite(p.standard_error) else 0.0 for p in sel]
                ax.errorbar([p.t for p in sel], [p.influence for p in sel], yerr=err, fmt="o", markersize=4,
                            color=color, elinewidth=0.8, capsize=2, label=region)
                eff = [p for p in sel if p.keep_rewards]
                if eff:
                    ax.scatter([p.t for p in eff], [p.token_effect for p in eff], s=30, facecolors="none",
                               edgecolors=color, linewidths=0.9, marker="D")
        ax.set_xlim(-1, max(len(row.response_ids), 1))
        ax.set_ylim(bottom=0)
        ax.set_title(f"prompt {row.group} rollout {row.uid}: R = {_r(pts, row)}, {len(row.tool_spans)} tool "
                     f"call(s) (green), {len(pts)} positions", fontsize=8)
        ax.set_ylabel("influence", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("response position t", fontsize=8)
    if shown:
        axes[0].legend(fontsize=6, frameon=False, loc="upper right", ncol=4)
    if len(rows) > len(shown):
        fig.suptitle(f"first {len(shown)} of {len(rows)} rollouts", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _r(pts: Sequence[PositionRecord], row: Rollout) -> str:
    return f"{pts[0].rollout_reward:.2f}" if pts else "?"


def plot_vs_scores(positions: Sequence[PositionRecord], path: str | Path, omega_constant: bool) -> Path:
    """Write the influence-vs-scores scatter chart (module docstring); returns its path."""
    from matplotlib.figure import Figure

    panels = [("entropy", "entropy H_t"), ("bs", "Branching Score BS_t")]
    if not omega_constant:
        panels.append(("omega", "likelihood gain Omega_t"))
    fig = _canvas(Figure(figsize=(3.6 * len(panels), 3.3), dpi=100))
    infl = [p.influence for p in positions]
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        xs = [getattr(p, key) for p in positions]
        for region, color in REGION_COLORS.items():
            sel = [(x, y) for x, y, p in zip(xs, infl, positions) if p.region == region and finite(x)]
            if sel:
                ax.scatter([x for x, _ in sel], [y for _, y in sel], s=14, alpha=0.7, color=color,
                           linewidths=0, label=region)
        rho, n = spearman(infl, xs)
        ax.set_title(f"influence vs {key}: rho = {'n/a' if math.isnan(rho) else f'{rho:+.2f}'} (n={n})", fontsize=8)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("influence", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
