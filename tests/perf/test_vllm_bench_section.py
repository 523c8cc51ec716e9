"""The ``vllm`` bench section where vLLM does not import (the main venv): one skipped figure saying why, no
crash; the figures themselves run from ``.venv-vllm`` (docs/perf.md)."""

from __future__ import annotations

import appo.engine.registry as R
import appo.perf.vllm_rollout as B


def test_vllm_section_is_recorded_as_skipped_without_vllm(monkeypatch):
    monkeypatch.setattr(R, "vllm_importable", lambda: False)
    (fig,) = B.vllm_rollout_figures("tiny", 1, (4,), new_tokens=2, prompt_len=8, repeats=1)
    assert fig["section"] == "vllm" and "make vllm-env" in fig["skipped"]


def test_cpu_bind_names_as_many_allowed_cores_as_threads():
    import os

    cores = sorted(os.sched_getaffinity(0))
    assert B.cpu_bind(1) == str(cores[0])
    assert B.cpu_bind(len(cores) + 5) == ",".join(map(str, cores))  # never more than this process may use


def test_kv_cache_bytes_follows_the_model_shape():
    from types import SimpleNamespace

    smol = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    assert B.kv_cache_bytes(smol, 100_000) == int(1.5 * 2 * 30 * 3 * 64 * 4 * 100_000)
    assert B.kv_cache_bytes(smol, 1) == 64 << 20  # the floor


def test_an_engine_that_fails_to_start_is_recorded_not_raised(monkeypatch, tiny_model_dir):
    import appo.engine.vllm as V

    def refuse(*a, **k):
        raise ValueError("vLLM cannot load this model")

    monkeypatch.setattr(B, "vllm_unavailable", lambda: None)
    monkeypatch.setattr(V, "VLLMEngine", refuse)
    (fig,) = B.vllm_rollout_figures(str(tiny_model_dir), 1, (4,), new_tokens=2, prompt_len=8, repeats=1)
    assert fig["section"] == "vllm" and fig["skipped"] == "failed: ValueError: vLLM cannot load this model"


def test_the_logprob_check_prints_as_one_table_line():
    from appo.perf import format_line
    from appo.perf.report import markdown_table

    rec = {"section": "vllm", "name": "tiny log-probs vs teacher forcing", "check": "vLLM vs teacher forcing",
           "rows": 8, "tokens": 256, "max_abs_diff": 9.5e-7, "mean_abs_diff": 1e-7}
    assert "max |diff| 9.50e-07" in format_line(rec) and "256 tokens" in format_line(rec)
    assert "max 9.5e-07" in markdown_table([{"figures": [rec]}])
