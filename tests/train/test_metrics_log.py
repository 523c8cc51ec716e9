"""MetricsLogger backends, resume truncation, metric helpers, and the progress display's modes."""

from __future__ import annotations

import io
import json
import sys
import types

import pytest
import torch

from appo.train.batching import collate
from appo.train.metrics_log import MetricsLogger, batch_metrics, reduce_metrics, timer
from appo.train.progress import ProgressDisplay
from appo.types import Rollout


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_jsonl_one_flushed_line_per_step_and_resume_truncates(tmp_path):
    log = MetricsLogger(tmp_path, backends=["jsonl"])
    log.log({"critic/score/mean": torch.tensor(0.5), "actor/lr": 1e-6, "note": "hi"}, step=1)
    assert _lines(tmp_path / "metrics.jsonl")[0]["critic/score/mean"] == 0.5  # flushed before close
    for s in (2, 3):
        log.log({"critic/score/mean": s / 10}, step=s)
    log.close()
    log.close()  # idempotent
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "critic/sc')  # a torn line from a crash
    with MetricsLogger(tmp_path, backends=["jsonl"], resume_step=2) as log:
        log.log({"critic/score/mean": 0.9}, step=3)
    rows = _lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["critic/score/mean"] == 0.9
    assert rows[0]["note"] == "hi"


def test_tensorboard_writes_scalars(tmp_path):
    with MetricsLogger(tmp_path, backends=["tensorboard"]) as log:
        log.log({"actor/pg_loss": 0.25, "note": "x"}, step=3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("actor/pg_loss")
    assert [(e.step, e.value) for e in events] == [(3, 0.25)]


def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(RuntimeError, match="pip install wandb"):
        MetricsLogger(tmp_path, backends=["wandb"])
    with pytest.raises(ValueError, match="mlflow"):
        MetricsLogger(tmp_path, backends=["mlflow"])


def test_wandb_backend_resumes_the_same_run(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, d, step):
            calls.append(("log", d, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.SimpleNamespace(util=types.SimpleNamespace(generate_id=lambda: "abc123"),
                                 init=lambda **kw: calls.append(("init", kw)) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with MetricsLogger(tmp_path, backends=["wandb"], project="p", experiment="e", config={"a": 1}) as log:
        log.log({"x": 1.0}, step=5)
    fake.util.generate_id = lambda: "other"
    MetricsLogger(tmp_path, backends=["wandb"]).close()
    inits = [c[1] for c in calls if c[0] == "init"]
    assert inits[0]["id"] == inits[1]["id"] == "abc123" and inits[0]["resume"] == "allow"
    assert inits[0]["project"] == "p" and inits[0]["config"] == {"a": 1}
    assert ("log", {"x": 1.0}, 5) in calls


def test_console_backend_prints_one_line(tmp_path):
    from rich.console import Console

    buf = io.StringIO()
    with MetricsLogger(tmp_path, backends=["console"], console=Console(file=buf, width=200),
                       console_keys=["critic/score/mean"]) as log:
        log.log({"critic/score/mean": 0.123456, "actor/lr": 1e-6}, step=7)
    assert buf.getvalue().strip() == "step 7 | critic/score/mean=0.1235"


def test_reduce_metrics_and_timer():
    out = reduce_metrics([{"actor/pg_loss": 1.0, "response_length/max": 5, "response_length/min": 2},
                          {"actor/pg_loss": torch.tensor(3.0), "response_length/max": 9, "response_length/min": 1,
                           "actor/pg_clipfrac": 0.5}])
    assert out == {"actor/pg_loss": 2.0, "response_length/max": 9, "response_length/min": 1, "actor/pg_clipfrac": 0.5}
    m: dict = {}
    with timer("gen", m):
        pass
    with timer("gen", m):
        pass
    assert set(m) == {"timing_s/gen"} and m["timing_s/gen"] >= 0


def test_batch_metrics_by_hand():
    def row(p, r, mask, uid):
        return Rollout(group=0, uid=uid, prompt_ids=(1,) * p, response_ids=(2,) * r, logprobs=(0.0,) * r,
                       entropies=(0.0,) * r, loss_mask=mask, stop_reason="eos")

    rows = [row(2, 3, (1, 0, 1), 0), row(4, 1, (1,), 1)]
    b = collate(rows, 0, advantages_NT=torch.tensor([[1.0, 9.0, 3.0], [-1.0, 0.0, 0.0]]))
    m = batch_metrics(b, scores_B=[1.0, 0.0], max_response_length=3)
    assert m["critic/score/mean"] == 0.5 and m["critic/score/max"] == 1.0
    assert m["critic/advantages/mean"] == pytest.approx(1.0)  # tokens 1, 3, -1 (tool token 9 excluded)
    assert m["response_length/mean"] == 2.0 and m["response_length/clip_ratio"] == 0.5
    assert m["prompt_length/max"] == 4.0 and m["response_length/model_tokens_mean"] == 1.5
    assert m["tool_calls/mean"] == 0.0
    assert m["batch/rows"] == 2.0 and m["batch/trained_rows"] == 2.0 and m["batch/loss_tokens"] == 3.0
    untrained = collate([rows[0], row(4, 1, (0,), 1)], 0, advantages_NT=torch.zeros(2, 3))
    m = batch_metrics(untrained)
    assert m["batch/rows"] == 2.0 and m["batch/trained_rows"] == 1.0 and m["batch/loss_tokens"] == 2.0


def test_progress_plain_mode_is_throttled_and_readable():
    buf = io.StringIO()  # not a TTY -> plain
    with ProgressDisplay(10, "train", stream=buf, min_interval_s=3600) as p:
        assert p.mode == "plain"
        for s in range(1, 11):
            p.update(s, reward=0.25, acc=s / 10)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2  # the first and the last step only
    assert lines[0].startswith("[train] step 1/10 (10%) elapsed 0:00:00 eta ")
    assert lines[0].endswith("reward=0.25 acc=0.1")
    assert lines[1].startswith("[train] step 10/10 (100%)") and "eta 0:00:00" in lines[1]
    silent = io.StringIO()
    ProgressDisplay(5, stream=silent, mode="silent").update(1, reward=1.0)
    assert silent.getvalue() == ""


def test_progress_rich_mode_draws_fields():
    buf = io.StringIO()
    p = ProgressDisplay(4, "eval", stream=buf, mode="rich")
    p.update(2, accuracy=0.5)
    p.close()
    assert "eval" in buf.getvalue() and "2/4" in buf.getvalue() and "accuracy=0.5" in buf.getvalue()


def test_progress_resumed_eta_counts_from_the_resume_point(monkeypatch):
    import appo.train.progress as P

    now = [100.0]
    monkeypatch.setattr(P.time, "monotonic", lambda: now[0])
    p = ProgressDisplay(100, stream=io.StringIO(), mode="plain", start=50)
    now[0] += 10
    p.update(60)
    assert p.eta_s() == pytest.approx(40.0)  # 1 s/step since the resume, 40 steps left
