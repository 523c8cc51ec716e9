"""Tier-3 smoke runs as subprocesses: the main job and the study, each shrunk to about a minute."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file


def _run(*args: str, timeout: int = 600) -> str:
    proc = subprocess.run([sys.executable, "-m", "appo", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    stdout = _run("demo", "--quick", "--out", str(out), "trainer.num_threads=1")
    assert "held-out accuracy" in stdout and "report:" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["val_examples"] == 16
    assert (out / "train" / "report" / "index.html").is_file()
    sft = load_file(out / "sft" / "sft_model" / "model.safetensors")
    base = load_file(out / "base" / "model.safetensors")
    assert any(not torch.equal(sft[k], base[k]) for k in base), "SFT did not change the weights"
    metrics = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2]


def test_study_smoke(tmp_path):
    out = tmp_path / "study"
    stdout = _run("study", "--smoke", "--out", str(out))
    assert stdout.count("done:") == 4 and "FAILED" not in stdout
    doc = (out / "results.md").read_text()
    for name in ("grpo", "arpo", "tree_grpo", "appo"):
        assert f"| {name} | 1 |" in doc
    assert (out / "results" / "arith_main.png").read_bytes()[:4] == b"\x89PNG"
