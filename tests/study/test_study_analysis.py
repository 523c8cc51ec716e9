"""The study's statistics on hand-made runs: the paired bootstrap and the results table."""

from __future__ import annotations

import math

import pytest

from appo.study.analysis import RunResult, format_rows, paired_bootstrap, table


def _run(variant: str, seed: int, correct: dict[str, float], start: float = 0.2) -> RunResult:
    acc = sum(correct.values()) / len(correct)
    return RunResult(task="arith", variant=variant, group="main", seed=seed, curve={0: start, 10: acc},
                     final_correct=correct, tool_calls=1.0, wall_s=120.0)


def test_bootstrap_pairs_problems_within_each_seed():
    # Each seed has its own held-out ids (as when data.seed varies); nothing is shared across seeds.
    # seed 0: a right on p0,p1,p2,p3, b right on p0 only -> per-problem diffs 0,1,1,1 -> mean 0.75
    # seed 1: a right on q0,q1, b right on q0,q1,q2,q3 -> diffs 0,0,-1,-1 -> mean -0.5
    # point estimate = mean over seeds = (0.75 - 0.5) / 2 = 0.125
    a = [_run("appo", 0, {"p0": 1, "p1": 1, "p2": 1, "p3": 1}), _run("appo", 1, {"q0": 1, "q1": 1, "q2": 0, "q3": 0})]
    b = [_run("grpo", 0, {"p0": 1, "p1": 0, "p2": 0, "p3": 0}), _run("grpo", 1, {"q0": 1, "q1": 1, "q2": 1, "q3": 1})]
    diff, lo, hi = paired_bootstrap(a, b, n=4000)
    assert diff == pytest.approx(0.125)
    # The extremes: both draws on seed 1 with all -1 problems -> -1; both on seed 0 with all +1 -> +1.
    assert -1.0 <= lo < diff < hi <= 1.0
    assert lo < 0 < hi  # two seeds that disagree: the interval spans zero


def test_bootstrap_of_a_clear_win_excludes_zero():
    # 3 seeds, 40 problems each, a right on 30, b right on 10 of the same 40: diff 0.5 everywhere.
    a, b = [], []
    for s in range(3):
        ids = [f"s{s}/{i}" for i in range(40)]
        a.append(_run("appo", s, {k: float(i < 30) for i, k in enumerate(ids)}))
        b.append(_run("grpo", s, {k: float(i < 10) for i, k in enumerate(ids)}))
    diff, lo, hi = paired_bootstrap(a, b, n=2000)
    assert diff == pytest.approx(0.5)
    assert 0.3 < lo < 0.5 < hi < 0.7


def test_bootstrap_without_shared_seeds_or_problems_is_nan():
    a = [_run("appo", 0, {"p0": 1})]
    assert all(math.isnan(x) for x in paired_bootstrap(a, [_run("grpo", 1, {"p0": 1})]))
    assert all(math.isnan(x) for x in paired_bootstrap(a, [_run("grpo", 0, {"x": 1})]))


def test_table_rows_and_markdown():
    a = [_run("appo", s, {f"{s}/{i}": float(i < 3) for i in range(4)}, start=0.25) for s in range(2)]
    g = [_run("grpo", s, {f"{s}/{i}": float(i < 1) for i in range(4)}, start=0.25) for s in range(2)]
    rows = {r["variant"]: r for r in table(a + g, "arith", "main")}
    assert rows["appo"]["final_mean"] == pytest.approx(0.75) and rows["appo"]["final_std"] == 0.0
    assert rows["grpo"]["final_mean"] == pytest.approx(0.25) and rows["grpo"]["seeds"] == 2
    assert rows["grpo"]["appo_minus"] == pytest.approx(0.5) and math.isnan(rows["appo"]["appo_minus"])
    assert rows["grpo"]["start"] == pytest.approx(0.25) and rows["grpo"]["minutes"] == pytest.approx(2.0)
    md = format_rows(list(rows.values()))
    assert "| grpo | 2 | 25.0 | 25.0 ± 0.0 | 50.0 [" in md
