"""Fixtures for the report tests: synthetic run directories (see ``report_synth``)."""

from __future__ import annotations

import pytest
from report_synth import small_records, write_metrics

from appo.dump import write_step


def make_small_run(root):
    """Write a run dir ``root/run`` with two dumped steps (0, 1), metrics.jsonl and config.yaml."""
    run = root / "run"
    run.mkdir()
    for rec in small_records()[0]:
        write_step(run, rec)
    write_metrics(run)
    (run / "config.yaml").write_text("algorithm:\n  name: appo\n")
    return run


@pytest.fixture()
def small_run(tmp_path):
    """A fresh small run dir per test (tests may damage it)."""
    return make_small_run(tmp_path)


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    """The report folder of a small run, written once per module (tests only read it)."""
    from appo.report import write_report

    return write_report(make_small_run(tmp_path_factory.mktemp("small"))).parent
