"""Shared fixtures: a tiny tokenizer and model built locally (no hub), cached for the session."""

from __future__ import annotations

import random

import pytest
import torch

from appo.models.tiny import build_tiny_model, save_pretrained, train_tokenizer

torch.set_num_threads(2)


def _corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        a, b, c = rng.randint(10, 9999), rng.randint(10, 9999), rng.randint(1, 99)
        texts.append(
            f"What is {a} * {b} + {c}? <think>I need to compute this.</think>\n"
            f"<python>print({a} * {b} + {c})</python>\n<result>\n{a * b + c}\n</result>\n"
            f"<answer>The answer is \\boxed{{{a * b + c}}}</answer>"
        )
        texts.append(
            "Who wrote the book? <search>author of the book</search>\n<result>\nThe book was written by "
            "Alice Smith in Paris.\n</result>\n<answer>\\boxed{Alice Smith}</answer>"
        )
        texts.append('<tool_call>\n{"name": "python", "arguments": {"code": "print(1 + 2)"}}\n</tool_call>')
    return texts


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A 512-token BPE tokenizer with a ChatML chat template."""
    return train_tokenizer(_corpus(), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A saved HF folder with a random-init 1M-parameter Llama and the tiny tokenizer."""
    model = build_tiny_model(tiny_tokenizer, seed=0)
    return save_pretrained(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture()
def tiny_model(tiny_model_dir):
    """A fresh copy of the tiny model (fp32, eval mode) loaded from ``tiny_model_dir``."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture()
def one_thread():
    """One intra-op torch thread for the test (restored after): the models are tiny, so on a busy 2-core
    machine OpenMP's spinning threads cost far more (10-50x per step) than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
