"""write_report on whole run directories: files written, curves, step choice, and every kind of missing
or damaged input."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from appo.report import PANELS, write_report
from appo.report.curves import panel_keys
from appo.report.run import DUMP_DIR, load_metrics


def _colors(path) -> int:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def test_dump_dir_agrees_with_the_trainer():
    from appo.dump import DUMP_DIR as trainer_dir

    assert DUMP_DIR == trainer_dir


def test_full_report_writes_index_step_pages_and_valid_pngs(small_run):
    index = write_report(small_run)
    out = small_run / "report"
    assert index == out / "index.html"
    html = index.read_text()
    assert '<a href="step_000000.html">step 0</a>' in html and '<a href="step_000001.html">step 1</a>' in html
    assert (out / "step_000000.html").is_file() and (out / "step_000001.html").is_file()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    names = {s.split("/")[-1] for s in srcs}
    assert {"reward.png", "accuracy.png", "response_length.png", "tool_calls.png", "branches.png", "clipfrac.png",
            "grad_norm.png", "timing.png", "fork_positions.png"} <= names
    assert "entropy.png" not in names  # no actor/entropy in these metrics: skipped, not drawn empty
    for src in srcs:
        path = out / src
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert _colors(path) > 5, src
    assert "config.yaml" in html and "name: appo" in html
    assert "All 13 metrics" in html  # the table of every numeric metric ('note' is text, not counted)
    assert "<script" not in html  # the index needs no script


def test_step_page_shows_the_metrics_line_of_its_step(small_run):
    write_report(small_run, steps=[1])
    html = (small_run / "report" / "step_000001.html").read_text()
    assert "metrics.jsonl step 1)" in html
    assert "<td>actor/grad_norm</td><td>1</td>" in html  # line step 1: grad_norm 1/1


def test_accuracy_panel_expands_validation_sources():
    keys = panel_keys(next(p for p in PANELS if p.name == "accuracy"), ["reward/acc", "val/all/acc", "val/gsm8k/acc",
                                                                         "val/all/score"])
    assert keys == ["reward/acc", "val/all/acc", "val/gsm8k/acc"]
    tools = next(p for p in PANELS if p.name == "tool_calls")
    assert panel_keys(tools, ["tool_calls/mean"]) == ["tool_calls/mean"]  # fallback name
    assert panel_keys(tools, ["x"]) == []


def test_chosen_steps_and_unknown_steps(small_run):
    (small_run / "metrics.jsonl").unlink()  # not needed here (saves drawing the curves)
    write_report(small_run, steps=[1])
    out = small_run / "report"
    assert (out / "step_000001.html").exists() and not (out / "step_000000.html").exists()
    html = (out / "index.html").read_text()
    assert "not rendered (pass it in steps to render it)" in html
    with pytest.raises(ValueError, match=r"step\(s\) \[7\] have no rollout dump.*dumped steps: 0, 1"):
        write_report(small_run, steps=[1, 7])


def test_custom_out_dir(small_run, tmp_path):
    (small_run / "metrics.jsonl").unlink()
    index = write_report(small_run, out_dir=tmp_path / "elsewhere")
    assert index == tmp_path / "elsewhere" / "index.html" and index.is_file()
    assert not (small_run / "report").exists()


def test_empty_run_dir_gets_a_report_that_says_what_is_missing(tmp_path):
    (tmp_path / "config.yaml").write_text("trainer: {}\n")  # a run that started but logged nothing yet
    index = write_report(tmp_path)
    html = index.read_text()
    assert "No metrics.jsonl in this run directory" in html and "trainer.logger" in html
    assert "No rollout dumps (rollouts/step_*.json)" in html and "trainer.dump_rollouts_freq" in html
    assert list(index.parent.glob("step_*.html")) == []


def test_metrics_only_and_dumps_only(small_run, tmp_path):
    (small_run / "metrics.jsonl").unlink()
    html = write_report(small_run).read_text()
    assert "No metrics.jsonl" in html and "step_000001.html" in html and "<img" in html  # fork chart only
    for p in (small_run / DUMP_DIR).iterdir():
        p.unlink()
    (small_run / "metrics.jsonl").write_text('{"step": 1, "critic/score/mean": 0.5}\n')
    html = write_report(small_run).read_text()
    assert "No rollout dumps" in html and "reward.png" in html


def test_bad_run_dir_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(FileNotFoundError, match=r"no_such_run.*does not exist; fix: pass the run directory"):
        write_report(missing)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"file\.txt.*is a file"):
        write_report(f)


def test_damaged_inputs_are_skipped_with_a_note(small_run):
    with open(small_run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 6, "critic/score/mean": NaN, "actor/grad_norm": "x"}\n')  # NaN and text: skipped
        fh.write('{"step": 3, "critic/score/mean": 9.0}\n')  # a resumed run logs step 3 again: last wins
        fh.write('{"step": 7, "critic/sc')  # torn line
    (small_run / DUMP_DIR / "step_000000.json").write_text('{"step": 0, "prom')
    (small_run / DUMP_DIR / "step_000002.json").write_text('[1, 2]')
    (small_run / DUMP_DIR / "notes.txt").write_text("ignored")
    html = write_report(small_run).read_text()
    assert "metrics.jsonl: 1 unreadable line(s) skipped" in html
    assert "step_000000.json could not be read" in html and "not valid JSON" in html
    assert "step_000002.json could not be read" in html and "not a step dump" in html
    assert '<a href="step_000001.html">step 1</a>' in html
    # an unreadable step still gets a page (so the previous/next links hold) that says why
    page0 = (small_run / "report" / "step_000000.html").read_text()
    assert "could not be read" in page0 and 'href="step_000001.html' in page0
    metrics, bad = load_metrics(small_run / "metrics.jsonl")
    assert bad == 1 and [m["step"] for m in metrics] == [0, 1, 2, 3, 4, 5, 6]
    assert metrics[3]["critic/score/mean"] == 9.0


def test_rows_with_broken_links_are_shown_as_roots(small_run):
    (small_run / "metrics.jsonl").unlink()
    path = small_run / DUMP_DIR / "step_000001.json"
    rec = json.loads(path.read_text())
    rows = rec["prompts"][0]["rows"]
    rows[5]["parent"] = 42  # parent not in the dump
    rows[2]["parent"], rows[4]["parent"] = 4, 2  # 2 <-> 4 cycle
    rows[3]["split"] = 999  # past the parent's end
    path.write_text(json.dumps(rec))
    html = (write_report(small_run, steps=[1]).parent / "step_000001.html").read_text()
    assert "row #5 names parent #42, which is not in the dump; shown as a root" in html
    assert "parent links form a cycle" in html
    for uid in range(6):
        assert html.count(f'id="g0r{uid}"') == 1
    assert re.search(r'&lt;/answer&gt;</i><a class="fork" href="#g0r3"', html)  # marker after the last token
