"""``appo report RUN_DIR``: :func:`write_report` writes the static HTML report of a run.

Layout of ``out_dir`` (default ``RUN_DIR/report``): ``index.html`` (notes on what is missing, the
dumped steps, training curves, all metrics, config), ``step_XXXXXX.html`` (one page per rendered step),
``curves/*.png``. Every page is one self-contained file (inline CSS and JS, no network); the index's
images are the PNG files beside it, so copy the folder as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from appo.report.curves import write_curves, write_fork_positions
from appo.report.index_page import entry_for, render_index
from appo.report.run import DUMP_DIR, choose_steps, load_run, metrics_by_step, read_dump
from appo.report.step_page import fork_fractions, render_step, render_unreadable, step_filename, step_summary

REPORT_DIR = "report"
"""Default output folder inside the run directory."""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", errors="replace")
    tmp.replace(path)


def write_report(run_dir: str | Path, steps: Iterable[int] | None = None, out_dir: str | Path | None = None,
                 max_prompts: int | None = None) -> Path:
    """Write the report of ``run_dir`` and return the path of its ``index.html``.

    ``steps``: dumped steps to render a page for (None = every dumped step; a step without a dump raises
    ``ValueError`` listing the dumped ones). ``out_dir``: output folder (default ``RUN_DIR/report``).
    ``max_prompts``: show at most that many prompts per step page (the first ones; None = all).
    A run directory without metrics or dumps still gets a report that says what is missing; a dump that
    cannot be read gets a page saying why (and a note on the index). Raises ``FileNotFoundError`` /
    ``NotADirectoryError`` for a bad ``run_dir`` and ``ValueError`` for a bad ``steps``/``max_prompts``,
    each naming the input and the fix. Dumps are rendered one at a time (memory holds one step).
    """
    bad = isinstance(max_prompts, bool) or not isinstance(max_prompts, int) or max_prompts < 1
    if max_prompts is not None and bad:
        raise ValueError(f"max_prompts must be a positive integer or None (all prompts), got {max_prompts!r}")
    run = load_run(run_dir)
    chosen = choose_steps(run.dumps, steps)
    out = Path(out_dir).expanduser() if out_dir is not None else run.run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    notes = list(run.notes)

    curves = write_curves(run.metrics, out / "curves")
    if run.metrics and not curves:
        notes.append("metrics.jsonl has no metric the charts know (see the table of all metrics below).")

    by_step = metrics_by_step(run.metrics)
    summaries, errors, forks = {}, {}, []
    for i, s in enumerate(chosen):  # one dump in memory at a time
        nav = dict(prev_step=chosen[i - 1] if i else None, next_step=chosen[i + 1] if i + 1 < len(chosen) else None,
                   run_name=run.run_dir.name)
        try:
            rec = read_dump(run.dumps[s])
        except (ValueError, OSError) as e:
            errors[s] = e
            notes.append(f"{DUMP_DIR}/{run.dumps[s].name} could not be read, so step {s} has no rollouts to show: {e}")
            _write(out / step_filename(s), render_unreadable(s, str(e), **nav))
            continue
        _write(out / step_filename(s), render_step(rec, metrics=by_step.get(s),
                                                   max_prompts=max_prompts, **nav))
        prompts = [p for p in rec["prompts"] if isinstance(p, dict)][:max_prompts]
        summaries[s] = step_summary(prompts)
        forks += [(s, f) for f in fork_fractions({"prompts": prompts})]
        del rec
    pages = {s: step_filename(s) for s in chosen}

    fork_png = write_fork_positions(forks, out / "curves" / "fork_positions.png")
    entries = [entry_for(s, out, summaries.get(s), pages.get(s), errors.get(s)) for s in run.dumps]
    index = out / "index.html"
    _write(index, render_index(run, entries, curves, out, fork_png, notes))
    return index
