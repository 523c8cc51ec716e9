"""The learning-efficacy study (``appo study``): APPO vs GRPO, ARPO and Tree-GRPO at equal rollout
budget on procedural tasks, plus APPO's ablations; see :mod:`appo.study.runner` and
:mod:`appo.study.analysis`, and ``docs/results.md`` for the results.

May import: :mod:`appo.config`, :mod:`appo.presets`, :mod:`appo.train` (runs are ``appo train`` subprocesses),
:mod:`appo.demo`, :mod:`appo.models`, :mod:`appo.data`, :mod:`appo.prompts`.
"""

from appo.study.analysis import (
                                 RunResult,
                                 bootstrap,
                                 differences,
                                 equal_token_differences,
                                 format_rows,
                                 load_results,
                                 paired_bootstrap,
                                 plot_curves,
                                 seeds_needed,
                                 table,
)
from appo.study.runner import ABLATIONS, MAIN, TASK_OVERRIDES, TASKS, StudySettings, Variant, plan, run_study

__all__ = ["ABLATIONS", "MAIN", "TASKS", "TASK_OVERRIDES", "RunResult", "StudySettings", "Variant", "bootstrap",
           "differences", "equal_token_differences", "format_rows", "load_results", "paired_bootstrap", "plan",
           "plot_curves", "run_study", "seeds_needed", "table"]
