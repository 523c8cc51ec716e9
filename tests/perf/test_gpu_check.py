"""``scripts/gpu_check.py`` on the CPU (``--cpu-dry-run``) and the estimates of :mod:`appo.perf.gpu`.

The dry run is the script's own test mode: every row at toy sizes. The default test runs a subset of
rows in-process (~15 s); the ``slow`` one runs the whole dry run as a subprocess, as the device run does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from appo.perf.gpu import ModelShape, build_speed_model, measure_ceilings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up while being built
    spec.loader.exec_module(mod)
    return mod


def tiny_llama(kv_heads: int = 1):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=kv_heads, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def test_model_shape_counts_tied_embedding_once_and_kv_bytes():
    m = tiny_llama()
    s = ModelShape.of(m)
    # embed 50*16 (tied: once) + per layer q,o 16*16, k,v 16*4, mlp 3*16*32, 2 norms of 16; final norm 16
    per_layer = 2 * 16 * 16 + 2 * 16 * 4 + 3 * 16 * 32 + 2 * 16
    assert s.params == 50 * 16 + 3 * per_layer + 16
    assert s.kv_bytes_per_token == 2 * 3 * 1 * 4 * 4  # K and V, 3 layers, 1 KV head of dim 4, fp32
    assert s.hidden == 16 and s.layers == 3 and s.dtype_bytes == 4


def test_estimates_follow_their_formulas():
    s = ModelShape(params=1000, layers=2, hidden=8, kv_bytes_per_token=10, dtype_bytes=2)
    assert s.forward_flops(3, 5) == 3 * (2 * 1000 + 4 * 2 * 8 * 5)
    assert s.train_flops(3, 5) == 3 * s.forward_flops(3, 5)
    assert s.decode_flops(4, 10, 6) == s.forward_flops(24, 13)
    # 6 steps: weights each step; KV read of 4 rows over contexts 10..15
    assert s.decode_bytes(4, 10, 6) == 6 * 1000 * 2 + 4 * 10 * sum(range(10, 16))


def test_ceilings_measure_something_on_cpu():
    c = measure_ceilings("cpu", matmul_n=64, copy_bytes=1 << 16, repeats=2)
    assert c["matmul_tflops"] > 0 and c["copy_gb_s"] > 0


def test_speed_model_has_the_asked_shape(tmp_path):
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 64}
    path = build_speed_model(tmp_path / "m", vocab_size=400, shape=shape, corpus_chars=50_000)
    cfg = json.loads((path / "config.json").read_text())
    assert {k: cfg[k] for k in shape} == shape
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    assert cfg["vocab_size"] == len(tok) >= 400 and tok.eos_token_id is not None


def test_report_keeps_going_after_a_failed_row_and_writes_json(tmp_path):
    mod = load_script()
    out = tmp_path / "r.json"
    report = mod.Report(out, {"device": "x"}, None)
    report.run("bad", lambda: 1 / 0)
    report.run("good", lambda: {"ok": True, "value": 3})
    report.skip("later", "budget")
    doc = json.loads(out.read_text())
    assert doc["checks"]["bad"]["ok"] is False and "ZeroDivisionError" in doc["checks"]["bad"]["error"]
    assert doc["checks"]["good"] == {"ok": True, "value": 3, "seconds": doc["checks"]["good"]["seconds"]}
    assert doc["checks"]["later"]["ok"] is None and list(doc["checks"]) == ["bad", "good", "later"]


def test_dry_run_rows_pass_in_process(tmp_path):
    mod = load_script()
    out = tmp_path / "dry.json"
    rows = "engine_fp32,engine_bf16,train_bf16,train_mixed,speed_rollout"
    torch_threads = torch.get_num_threads()
    try:
        rc = mod.main(["--cpu-dry-run", "--only", rows, "--out", str(out), "--workdir", str(tmp_path / "w")])
    finally:
        torch.set_num_threads(torch_threads)
    doc = json.loads(out.read_text())
    assert rc == 0, doc
    assert set(doc["checks"]) == set(rows.split(","))
    assert all(r["ok"] is True for r in doc["checks"].values()), doc
    tr = doc["checks"]["train_bf16"]
    assert tr["pg_loss_step_then_5_updates"][-1] < tr["pg_loss_step_then_5_updates"][1]
    assert tr["lr1e-6_adamw_step_changed_fraction_of_weights"]["float32"] > 0.5
    mixed = doc["checks"]["train_mixed"]
    assert mixed["weights"] == "float32, bf16 compute"
    changed = mixed["lr1e-6_adamw_step_changed_fraction_of_weights"]
    assert changed["float32_bf16_compute"] > 0.9 > changed["bfloat16"]
    ro = doc["checks"]["speed_rollout"]
    assert ro["engine_tok_s"] > 0 and ro["generate_tok_s"] > 0 and ro["rows"] == mod.DRY_SIZES.rollout_rows


def test_budget_skips_speed_sections(tmp_path):
    mod = load_script()
    out = tmp_path / "b.json"
    rc = mod.main(["--cpu-dry-run", "--only", "ceilings,speed_rollout,speed_rl_step", "--budget-s", "0",
                   "--out", str(out), "--workdir", str(tmp_path / "w")])
    doc = json.loads(out.read_text())
    assert rc == 0
    assert {k: v["ok"] for k, v in doc["checks"].items()} == {"ceilings": None, "speed_rollout": None,
                                                               "speed_rl_step": None}
    assert "budget" in doc["checks"]["speed_rollout"]["skipped"]


@pytest.mark.slow
def test_whole_dry_run_as_a_subprocess(tmp_path):
    out = tmp_path / "dry.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", "--out", str(out)], check=False,
                         capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    doc = json.loads(out.read_text())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    expected = {"engine_fp32", "engine_bf16", "train_bf16", "train_mixed", "checkpoint_resume", "vllm_engine",
                "ceilings", "speed_rollout", "speed_rl_step", "fsdp2_world1"}
    assert set(doc["checks"]) == expected
    assert all(r["ok"] is True for k, r in doc["checks"].items() if k != "vllm_engine"), doc


@pytest.mark.slow
def test_rl_step_deadline_keeps_the_warmup_and_stops(tmp_path):
    pytest.importorskip("trl")
    from appo.perf.rl_step import rl_step_figures

    lines = []
    figs = rl_step_figures("tiny", 1, prompts=2, rows=2, max_response=4, micro_rows=2, repeats=3, deadline=0.0,
                           progress=lines.append)
    assert [f["skipped"] for f in figs] == ["no timed repeat finished before the deadline"] * 2
    assert set(figs[0]["details"]["warmup_s"]) == {"grpo", "appo", "trl"}
    assert any(line.startswith("rl_step round 0 trl") for line in lines)
    assert not any(line.startswith("rl_step round 1") for line in lines)


def test_gpu_profile_script_dry_run(tmp_path):
    """scripts/gpu_profile_rollout.py (the GPU RL-step profile) runs end to end at toy sizes on the CPU."""
    spec = importlib.util.spec_from_file_location("gpu_profile_rollout", ROOT / "scripts" / "gpu_profile_rollout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "p.json"
    threads = torch.get_num_threads()
    try:
        assert mod.main(["--device", "cpu", "--small", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    doc = json.loads(out.read_text())
    assert doc["sdpa"]["max_diff_grouped_vs_gqa"] < 1e-5 and doc["sdpa"]["mask+enable_gqa_ms"] > 0
    assert doc["trainer"]["timing"]["timing_s/gen"] > 0 and "fast_decode" in doc["trainer"]["cprofile_tottime"]
    assert doc["engine_alone"]["mixed_prompts"]["decode_steps"] > 0
