"""Engine test fixtures: the tiny Llama with sharpened logits (so top-k/top-p and stop strings bite)."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import sharpen


@pytest.fixture(scope="module")
def sharp_model(tiny_model_dir):
    """A module-shared tiny Llama (fp32, eval, sdpa) with peaked next-token distributions. Do not modify."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return sharpen(model)


@pytest.fixture()
def own_model(tiny_model_dir):
    """A fresh sharpened copy that a test may modify."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return sharpen(model)



@pytest.fixture(autouse=True)
def one_thread():
    """Engine tests run their tiny kernels on one thread (restored after each test).

    With two intra-op threads on a shared 2-core machine, each small parallel kernel waits for a thread
    another process holds: measured 100x slower attention calls under load, so timings swing 10x.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
