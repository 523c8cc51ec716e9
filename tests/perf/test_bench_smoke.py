"""``appo perf --smoke``: the benchmark path runs and writes JSON of the documented shape.

No timing assertions: the numbers of a smoke run mean nothing (sizes are tiny, the machine is shared).
The default test runs in-process on the test suite's tiny model without the memory subprocess and
without TRL (a few seconds); the ``slow`` one runs the whole ``appo perf --smoke`` as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from appo.cli import main

FIGURE_KEYS = {"section", "name", "unit", "higher_is_better", "repeats", "ours_name", "ours", "ours_peak_rss_mb",
               "baseline_name", "baseline", "baseline_peak_rss_mb", "speedup", "speedup_min", "speedup_max",
               "target", "target_text", "met", "details"}


def check_schema(result: dict, sections: set[str]) -> None:
    m = result["machine"]
    for key in ("cpu", "logical_cores", "torch", "transformers", "torch_default_threads", "rss_method"):
        assert key in m, key
    assert {s["section"] for s in result["sections"]} == sections
    for s in result["sections"]:
        assert len(s["load_before"]) == 3 and len(s["load_after"]) == 3
        assert s["threads"] >= 1
    figs = result["figures"]
    assert {f["section"] for f in figs} == sections
    for f in figs:
        if "skipped" in f:
            assert f["skipped"], "a skipped figure says why"
            continue
        assert FIGURE_KEYS <= set(f), FIGURE_KEYS - set(f)
        assert set(f["ours"]) == {"min", "median", "max"}
        assert f["ours"]["min"] <= f["ours"]["median"] <= f["ours"]["max"]
        if f["baseline"] is not None:
            assert f["speedup"] > 0
            assert f["speedup_min"] is None or f["speedup_min"] <= f["speedup"] <= f["speedup_max"]
        if not f["name"].endswith("padding"):  # padding is counted, not run
            assert f["ours_peak_rss_mb"] > 0


def test_bench_smoke_in_process(tmp_path, tiny_model_dir):
    out = tmp_path / "bench.json"
    sections = "rollout,decode,branching,training,rl_step"
    assert main(["perf", "--smoke", "--no-trl", "--repeats", "1", "--models", str(tiny_model_dir), "--sections",
                 sections, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    check_schema(result, set(sections.split(",")))
    by = {}
    for f in result["figures"]:
        by.setdefault(f["section"], []).append(f)
    assert {f["baseline_name"] for f in by["rollout"]} == {"model.generate"}
    assert all(f["baseline"] is not None for f in by["decode"] + by["branching"])
    # TRL disabled: its sides are recorded as skipped, with the reason
    assert all("disabled" in f["skipped"] for f in by["rl_step"])
    assert any("skipped" in f for f in by["training"])


@pytest.mark.slow
def test_appo_bench_smoke_cli(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "appo", "bench", "--smoke", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    check_schema(result, {"rollout", "decode", "branching", "training", "rl_step", "cli_step", "memory"})
    mem = next(f for f in result["figures"] if f["section"] == "memory")
    assert mem["details"]["peak_rss_mb"] > mem["details"]["rss_after_load_mb"] > 0


def test_bench_serve_section_loads_a_real_server(tmp_path, tiny_model_dir):
    """The serve section starts ``appo serve`` and loads it over loopback; figures carry latencies."""
    out = tmp_path / "serve.json"
    assert main(["bench", "--smoke", "--no-trl", "--repeats", "1", "--models", str(tiny_model_dir), "--sections",
                 "serve", "--json", str(out)]) == 0  # the old name, an alias of `appo perf`
    figs = json.loads(out.read_text())["figures"]
    assert [f["name"].split()[-2:] for f in figs] == [["c1", "whole"], ["c2", "whole"], ["c1", "stream"],
                                                      ["c2", "stream"]]
    for f in figs:
        d = f["details"]["ours"]
        assert f["unit"] == "req/s" and f["ours"]["median"] > 0 and d["error_count"] == 0
        assert 0 < d["p50_latency_s"] <= d["p99_latency_s"]
        assert (d["p50_first_chunk_s"] is not None) == f["details"]["stream"]
