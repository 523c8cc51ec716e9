"""The ``vllm`` bench section where vLLM does not import (the main venv): one skipped figure saying why, no
crash; the figures themselves run from ``.venv-vllm`` (docs/perf.md)."""

from __future__ import annotations

import appo.engine.registry as R
import appo.perf.vllm_rollout as B


def test_vllm_section_is_recorded_as_skipped_without_vllm(monkeypatch):
    monkeypatch.setattr(R, "vllm_importable", lambda: False)
    (fig,) = B.vllm_rollout_figures("tiny", 1, (4,), new_tokens=2, prompt_len=8, repeats=1)
    assert fig["section"] == "vllm" and "make vllm-env" in fig["skipped"]
