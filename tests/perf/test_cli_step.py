"""The ``cli_step`` bench section: ``appo train`` as users run it against the in-process ``train_step``
(issue 26), each a fresh process, timings read from the CLI run's ``metrics.jsonl``."""

from __future__ import annotations

import pytest

from appo.perf.cli_step import USER_DEFAULTS, _inproc_script, cli_step_figures


def test_inproc_script_builds_the_same_trainer_and_records_timers():
    src = _inproc_script(["a=1", "b=[x]"], 3, "/tmp/out.json")
    compile(src, "<inproc>", "exec")
    assert "load_config(None, ['a=1', 'b=[x]'])" in src and "range(3)" in src and "timing_s/" in src
    assert "trainer.logger=[console,jsonl,tensorboard]" in USER_DEFAULTS


@pytest.mark.slow
def test_cli_step_figures_run_both_paths():
    figs = cli_step_figures("tiny", 1, prompts=1, rows=2, max_response=4, micro_rows=2, steps=2, rounds=1)
    assert [f["name"].rsplit(" ", 1)[1] for f in figs] == ["gen", "step"]
    for f in figs:
        per = f["details"]["per_round"]
        assert set(per) == {"cli", "inproc"} and all(len(v) == 1 for v in per.values())
        assert f["ours"]["median"] > 0 and f["baseline"]["median"] > 0 and f["speedup"] > 0
        assert per["cli"][0]["wall_s"] > per["cli"][0]["timing_s/step"]
        assert f["ours_peak_rss_mb"] > 100 and f["baseline_peak_rss_mb"] > 100  # a process holding torch
