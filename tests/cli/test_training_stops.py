"""Ctrl-C during training stops at a safe point and prints the checkpoint and the command that resumes;
a resume with settings that change the trajectory is refused unless allowed by name."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml
from cli_helpers import ROOT, assert_input_error, run_cli, run_main, tiny_train_args

from appo.train.interrupt import StopRequest


def train_until_first_step(tmp_path, tiny_model, *overrides: str) -> tuple[subprocess.Popen, object]:
    """`appo train` on the tiny model in a subprocess (pipes for stdout and stderr), returned once its first
    step is logged (at most 240 s), with the run folder."""
    import os

    run = tmp_path / "run"
    args = tiny_train_args(tiny_model, run, *overrides)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "appo", "train", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    return proc, run


def test_ctrl_c_finishes_the_step_saves_and_prints_the_resume_command(tmp_path, tiny_model):
    proc, run = train_until_first_step(tmp_path, tiny_model, "trainer.total_training_steps=8", "trainer.save_freq=100")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    line = next(x for x in err.splitlines() if x.startswith("appo train: training stopped by Ctrl-C"))
    steps = int(line.split("after ")[1].split(" completed")[0])
    ckpt = run / "checkpoints" / f"step_{steps:06d}"
    assert 1 <= steps < 8 and f"last checkpoint {ckpt}" in line and ckpt.is_dir()
    assert "stopping after this step" in err
    resume = shlex.split(line.split("resume with: ")[1])
    assert resume[:2] == ["appo", "train"]
    res = run_cli(*resume[1:], cwd=tmp_path)  # the printed command, as a user would paste it
    assert res.returncode == 0, res.stderr
    assert "trained 8 steps" in res.stdout
    logged = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 9))  # no step lost, none repeated


def test_stop_request_turns_the_first_sigint_into_a_request_and_the_second_into_an_interrupt(capsys):
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup / a background job
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert "Ctrl-C again to stop now" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) == before  # the handler it found is put back


class _GuardSigterm(Exception):
    """Raised by the test's own SIGTERM handler: a StopRequest that does not take SIGTERM fails the test
    instead of letting the default action kill the test run."""


def test_stop_request_turns_sigterm_into_exit_143_and_puts_the_handler_back(capsys):
    def guard(signum, frame):
        raise _GuardSigterm

    before = signal.signal(signal.SIGTERM, guard)
    try:
        with StopRequest() as stop:
            with pytest.raises(SystemExit) as exited:
                signal.raise_signal(signal.SIGTERM)
            assert exited.value.code == 143 and stop.terminated and not stop.requested
        assert "SIGTERM: stopping now" in capsys.readouterr().err
        assert signal.getsignal(signal.SIGTERM) is guard  # the handler it found is put back
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_stops_training_at_once_with_143_and_no_traceback(tmp_path, tiny_model):
    """What a scheduler or `kill` sends: the run stops mid-step (no new checkpoint), exits 143 (128 + SIGTERM)
    with one line and no traceback, after its `finally` blocks ran (the real-vLLM test checks that vLLM's
    engine processes are gone: tests/vllm_real/test_vllm_train_real.py). The default action killed the process
    before any cleanup."""
    proc, _ = train_until_first_step(tmp_path, tiny_model, "trainer.total_training_steps=50", "trainer.save_freq=1")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, (out, err)
    assert "Traceback" not in err, err
    assert "SIGTERM: stopping now" in err
    assert "trained 50 steps" not in out


def test_resume_refuses_trajectory_changes_unless_allowed(tmp_path, tiny_model, capsys):
    run = tmp_path / "run"
    base = tiny_train_args(tiny_model, run, "trainer.total_training_steps=1")
    code, out, err = run_main(["train", *base], capsys)
    assert code == 0, err
    code, _, err = run_main(["train", *base, "trainer.total_training_steps=2", "actor.optim.lr=5e-3",
                             "algorithm.name=grpo"], capsys)
    assert_input_error(code, err, "train", str(run), "at step 1", "actor.optim.lr: 0.01 -> 0.005",
                       "algorithm.name: appo -> grpo", "trainer.resume_allow_changes=[algorithm.name,",
                       "actor.optim.lr]", "trainer.resume_mode=disable")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["actor"]["optim"]["lr"] == 0.01  # the refused attempt left the run's config alone
    code, out, err = run_main(["train", *base, "trainer.total_training_steps=2", "actor.optim.lr=5e-3",
                               "trainer.resume_allow_changes=[actor.optim]"], capsys)
    assert code == 0 and "trained 2 steps" in out, err
    code, out, err = run_main(["train", *base, "trainer.total_training_steps=3", "actor.optim.lr=5e-3",
                               "trainer.logger=[console]", "rollout.max_batch_size=4"], capsys)
    assert code == 0 and "trained 3 steps" in out, err  # saved lr is now 5e-3; logging and batching may change
