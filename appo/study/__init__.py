"""The learning-efficacy study (``appo study``): APPO vs GRPO, ARPO and Tree-GRPO at equal rollout
budget on procedural tasks, plus APPO's ablations; see :mod:`appo.study.runner` and
:mod:`appo.study.analysis`, and ``docs/results.md`` for the results."""

from appo.study.analysis import RunResult, format_rows, load_results, paired_bootstrap, plot_curves, table
from appo.study.runner import ABLATIONS, MAIN, TASKS, StudySettings, Variant, plan, run_study

__all__ = ["ABLATIONS", "MAIN", "TASKS", "RunResult", "StudySettings", "Variant", "format_rows", "load_results",
           "paired_bootstrap", "plan", "plot_curves", "run_study", "table"]
