"""``appo report``: a static HTML report of a run that shows where the decision points were.

:func:`write_report` (the Python call behind ``appo report RUN_DIR``) writes ``RUN_DIR/report/``:
``index.html`` with the training curves (PNG) and the list of dumped steps, and one page per dumped
step with every prompt's rollout tree and its tokens shaded by entropy, Omega, Branching Score,
advantage or influence. Smaller pieces: :func:`load_run` (what a run directory holds),
:func:`render_step` (one step dump -> HTML), :func:`write_curves` (metrics -> PNG charts).

It imports nothing from the rest of appo: it reads run directories (the records :mod:`appo.dump` writes),
not live objects.
"""

from appo.report.build import REPORT_DIR, write_report
from appo.report.curves import PANELS, write_curves
from appo.report.run import load_run, read_dump
from appo.report.step_page import render_step
from appo.report.tokens import SIGNALS

__all__ = ["PANELS", "REPORT_DIR", "SIGNALS", "load_run", "read_dump", "render_step", "write_curves", "write_report"]
