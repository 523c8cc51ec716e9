"""Influence analysis (``appo analyze``): which positions of an agent's rollouts change its outcome, and
do entropy, Omega and the Branching Score find them?

For sampled rollouts, chosen positions t are re-drawn M times (prefix ``prompt + response[: t]``: token
t itself is re-sampled) and run through the same tool loop to the end; ``influence_t = |E[R | branch at
t] - R_rollout|``. Each position also records H_t, Omega_t, BS_t, its region (think / tool call /
answer / other) and its distance to the nearest tool call; the summary gives Spearman's rho and
precision@K of each score against influence, and how close the most influential positions sit to tool
calls. Usage::

    from appo.analysis import analyze
    res = analyze("runs/demo/train/checkpoints/step_40/model", "proc:arith?n_operands=[2,2]&digits=[1,3]",
                  prompts=4, tools=["python"], system_prompt="short", out_dir="runs/analysis")
    print(res.table())   # also runs/analysis/summary.txt; HTML: runs/analysis/report/index.html

See ``docs/analysis.md`` for the method, its choices and measured results.

May import: :mod:`appo.agent`, :mod:`appo.core`, :mod:`appo.data`, :mod:`appo.dump`, :mod:`appo.engine`,
:mod:`appo.models`, :mod:`appo.prompts`, :mod:`appo.report`, :mod:`appo.rewards`, :mod:`appo.tools`,
:mod:`appo.types`. Not :mod:`appo.train`.
"""

from appo.analysis.api import AnalysisResult, analyze, analyze_examples
from appo.analysis.montecarlo import Estimate, estimate_influence
from appo.analysis.pool import load_positions, pooled_summaries
from appo.analysis.positions import (
    REGIONS,
    choose_positions,
    redraw_start,
    token_regions,
    tool_boundaries,
    tool_distance,
)
from appo.analysis.records import AnalysisConfig, PositionRecord, RolloutRecord
from appo.analysis.stats import Summary, format_summary, precision_at_k, spearman, summarize, topk_weights

__all__ = [
    "AnalysisConfig", "AnalysisResult", "Estimate", "PositionRecord", "REGIONS", "RolloutRecord", "Summary",
    "analyze", "analyze_examples", "choose_positions", "estimate_influence", "format_summary", "load_positions",
    "pooled_summaries", "precision_at_k",
    "redraw_start", "spearman", "summarize", "token_regions", "tool_boundaries", "tool_distance", "topk_weights",
]
