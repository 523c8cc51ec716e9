"""The models and inputs the benchmark runs on: the tiny Llama and SmolLM2-135M, procedural prompts.

``tiny`` is the demo's base model (:func:`appo.models.demo_model.build_demo_base`: random init, hidden
128, 4 layers, 4 heads, 512-token BPE trained on the arithmetic task), built once into
``<cache>/bench-tiny`` (``$APPO_CACHE_DIR`` or ``~/.cache/appo/models``). Any other name goes to
:func:`appo.models.loading.load_model_and_tokenizer` (an alias such as ``smollm2-135m-instruct``, a
folder, a ``.gguf`` file). Models load in fp32 on the CPU, attention ``sdpa``.
"""

from __future__ import annotations

import random

import torch

from appo.data.procedural import get_task
from appo.models.loading import cache_root, load_model_and_tokenizer
from appo.prompts import SHORT


def model_path(name: str) -> str:
    """The path ``load_model_and_tokenizer`` takes for a benchmark model name (builds ``tiny`` once)."""
    if name != "tiny":
        return name
    from appo.models.demo_model import build_demo_base

    path = cache_root() / "bench-tiny"
    if not (path / "config.json").is_file():
        tmp = path.with_name(f"bench-tiny.tmp{random.randrange(1 << 30)}")
        build_demo_base(tmp, [get_task("arith")], SHORT)
        try:
            tmp.rename(path)
        except OSError:  # built by another process meanwhile
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return str(path)


def load_bench_model(name: str):
    """``(model, tokenizer)`` in eval mode, fp32, CPU, sdpa attention."""
    model, tok = load_model_and_tokenizer(model_path(name), "float32", "cpu")
    if getattr(model.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        model.set_attn_implementation("sdpa")
    return model, tok


def arith_examples(n: int, seed: int = 0):
    """``n`` procedural arithmetic examples (the task of the RL-step figures)."""
    return get_task("arith").generate(n, seed=seed)


def chat_prompt_ids(tok, examples, system_prompt: str = SHORT) -> list[list[int]]:
    """Chat-templated prompt ids (system prompt + question), as the trainer builds them (tags protocol)."""
    out = []
    for ex in examples:
        text = tok.apply_chat_template([{"role": "system", "content": system_prompt},
                                        {"role": "user", "content": ex.question}], tokenize=False,
                                       add_generation_prompt=True)
        out.append(list(tok.encode(text, add_special_tokens=False)))
    return out


def text_prompts(tok, n: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    """``n`` prompts of lengths spread over ``[lo, hi]`` tokens, cut from tokenized task text (seeded)."""
    rng = random.Random(seed)
    examples = arith_examples(64, seed=1)
    text = " ".join(f"{e.question} The answer is {e.answers[0]}." for e in examples)
    ids = tok(text)["input_ids"]
    while len(ids) < 2 * hi + 2:
        ids = ids + ids
    return cut_windows(ids, n, lo, hi, rng)


def cut_windows(ids: list[int], n: int, lo: int, hi: int, rng: random.Random) -> list[list[int]]:
    """``n`` contiguous windows of ``ids``, each of a length drawn uniformly from ``[lo, hi]`` and starting at
    a uniform offset (``rng`` draws length then start, per window); ``ids`` must be longer than ``hi``."""
    out = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        start = rng.randint(0, len(ids) - length - 1)
        out.append(ids[start : start + length])
    return out


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` left-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def pad_id(tok) -> int:
    """The tokenizer's pad id (0 when it has none)."""
    return tok.pad_token_id if tok.pad_token_id is not None else 0


__all__ = ["arith_examples", "chat_prompt_ids", "left_pad", "load_bench_model", "model_path", "pad_id",
           "text_prompts", "cut_windows"]
