"""The report's index page: what is missing, the dumped steps, the training curves, every metric's last
value, and the run's config."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from appo.report.curves import Curve
from appo.report.run import RunFiles, numeric_keys, series
from appo.report.step_page import page
from appo.report.tokens import esc, fmt

MAX_CONFIG_CHARS = 40_000
"""config.yaml is shown folded on the index up to this many characters."""


@dataclass(frozen=True)
class StepEntry:
    """A dumped step as the index lists it."""

    step: int
    """The dumped step (steps completed, as in the dump file name and metrics.jsonl)."""
    page: str | None
    """File name of its page in the report folder, None when it has none."""
    summary: dict | None
    """:func:`appo.report.step_page.step_summary` of its prompts when it was rendered now."""
    error: str | None = None
    """Why its dump could not be read, if it could not."""


def _steps_table(entries: Sequence[StepEntry]) -> str:
    if not entries:
        return ""
    head = ("<tr><th>step</th><th>prompts</th><th>rows</th><th>initial</th><th>branch</th>"
            "<th>mean reward (initial)</th><th>mean reward (branch)</th><th>mean tokens</th></tr>")
    rows = []
    for e in entries:
        name = f'<a href="{esc(e.page)}">step {e.step}</a>' if e.page else f"step {e.step}"
        if e.error:
            rows.append(f'<tr><td>{name}</td><td colspan="7" style="text-align:left">'
                        f'unreadable: {esc(e.error)}</td></tr>')
            continue
        s = e.summary
        if s is None:
            note = "page from an earlier report" if e.page else "not rendered (pass it in steps to render it)"
            rows.append(f'<tr><td>{name}</td><td colspan="7" class="muted" style="text-align:left">{note}</td></tr>')
            continue
        cells = [s["prompts"], s["rows"], s["initial"], s["branch"], fmt(s["reward_initial"]) or "–",
                 fmt(s["reward_branch"]) or "–", fmt(s["tokens_mean"]) or "–"]
        rows.append(f"<tr><td>{name}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return f'<table class="t">{head}{"".join(rows)}</table>'


def _metrics_table(metrics: Sequence[dict]) -> str:
    keys = numeric_keys(metrics)
    if not keys:
        return ""
    rows = []
    for k in sorted(keys):
        xs, ys = series(metrics, k)
        rows.append(f"<tr><td>{esc(k)}</td><td>{len(ys)}</td><td>{fmt(ys[0])}</td><td>{fmt(ys[-1])}</td>"
                    f"<td>{fmt(min(ys))}</td><td>{fmt(max(ys))}</td><td>{xs[-1]}</td></tr>")
    return (f'<details class="more card"><summary>All {len(keys)} metrics (first / last / min / max)</summary>'
            '<table class="t"><tr><th>metric</th><th>points</th><th>first</th><th>last</th><th>min</th><th>max</th>'
            f'<th>last step</th></tr>{"".join(rows)}</table></details>')


def render_index(run: RunFiles, entries: Sequence[StepEntry], curves: Sequence[Curve], out_dir: Path,
                 fork_png: Path | None = None, notes: Sequence[str] = ()) -> str:
    """The index page's HTML. ``curves`` and ``fork_png`` are linked relative to ``out_dir``."""
    rel = lambda p: Path(p).relative_to(out_dir).as_posix()  # noqa: E731
    parts = [f'<main><div class="top"><h1>appo run report</h1><span class="muted">{esc(run.run_dir)}</span></div>'
             f'<div class="muted">generated {esc(time.strftime("%Y-%m-%d %H:%M:%S"))} · '
             f'{len(run.metrics)} logged steps · {len(run.dumps)} dumped steps</div>']
    if notes:
        parts.append(f'<ul class="note">{"".join(f"<li>{esc(n)}</li>" for n in notes)}</ul>')
    if entries:
        first = next((e for e in entries if e.page), None)
        hint = (f' Start with <a href="{esc(first.page)}">step {first.step}</a>: each step page shows where the '
                'rollouts branched (the decision points) and every token shaded by entropy, Ω, Branching Score '
                'or advantage.') if first else ""
        fork = (f'<figure class="fork-fig"><img src="{esc(rel(fork_png))}" alt="where branches fork"><figcaption>'
                'each dot is a branch row of a rendered step: (split + 1) / its parent\'s response length, '
                '0 = forks at the start, 1 = at the end</figcaption></figure>') if fork_png is not None else ""
        parts.append(f'<section class="card"><h2>Dumped steps</h2><p class="muted">Rollout dumps of the run '
                     f'(rollouts/step_*.json; dump step s is logged as metrics step s+1).{hint}</p>'
                     f'<div class="steps">{_steps_table(entries)}{fork}</div></section>')
    figs = [(c.panel.title, rel(c.path), ", ".join(c.keys)) for c in curves]
    if figs:
        cells = "".join(f'<figure><img src="{esc(src)}" alt="{esc(t)}" loading="lazy"><figcaption>{esc(cap)}'
                        f'</figcaption></figure>' for t, src, cap in figs)
        parts.append(f'<section><h2>Training curves</h2><div class="grid">{cells}</div></section>')
    parts.append(_metrics_table(run.metrics))
    cfg = run.run_dir / "config.yaml"
    if cfg.is_file():
        text = cfg.read_text(encoding="utf-8", errors="replace")
        cut = len(text) > MAX_CONFIG_CHARS
        parts.append(f'<details class="more card"><summary>config.yaml</summary><pre class="prompt">'
                     f'{esc(text[:MAX_CONFIG_CHARS])}{"…" if cut else ""}</pre></details>')
    parts.append("</main>")
    return page(f"appo report · {run.run_dir.name}", "".join(parts))


def entry_for(step: int, out_dir: Path, summary: dict | None, page_name: str | None, error: Any = None) -> StepEntry:
    """A :class:`StepEntry`; a step not rendered now still links to its page if an earlier report wrote it."""
    from appo.report.step_page import step_filename

    if page_name is None and (out_dir / step_filename(step)).is_file():
        page_name = step_filename(step)
    return StepEntry(step=step, page=page_name, summary=summary, error=None if error is None else str(error))
