"""The demo's base model: a tokenizer trained on the procedural tasks' text and a random-init tiny Llama.

:func:`build_demo_base` writes an HF folder that every other command loads like any model path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from appo.data.procedural import Task
from appo.models.tiny import build_tiny_model, save_pretrained, train_tokenizer


def tokenizer_corpus(tasks: Sequence[Task], system_prompt: str, n_per_task: int = 400, seed: int = 0) -> list[str]:
    """Texts the tokenizer learns from: the system prompt, questions, demonstrations, result blocks and
    search documents of each task (the same strings the model will read and write)."""
    texts = [system_prompt]
    for task in tasks:
        for ex in task.generate(n_per_task, seed=seed):
            texts.append(ex.question + "\n" + "\n<result>\n" .join(task.demonstration(ex)))
            texts.append("\n<result>\n" + " ".join(ex.answers) + "\n</result>\n")
        texts.extend(doc["text"] for doc in task.corpus()[: 4 * n_per_task])
    return texts


def build_demo_base(out_dir: str | Path, tasks: Sequence[Task], system_prompt: str, *, vocab_size: int = 512,
                    hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4, seed: int = 0) -> Path:
    """Train a BPE tokenizer on the tasks' text and save it with a random-init Llama of the given size
    to ``out_dir`` (an HF folder). Deterministic for a seed."""
    tokenizer = train_tokenizer(tokenizer_corpus(tasks, system_prompt, seed=seed), vocab_size=vocab_size)
    model = build_tiny_model(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                             max_position_embeddings=1024, seed=seed)
    return save_pretrained(model, tokenizer, out_dir)
