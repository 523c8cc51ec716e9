"""The procedural-task interface, its registry, and the train / test split rule shared by all tasks.

A task draws questions from an unbounded seeded stream. Splits never overlap, for any seeds: every
candidate question has a *split key* (the expression for ``arith``, the anchor entity for ``multihop``),
hashed with SHA-256 to a number in [0, 1); keys below ``held_out`` belong to ``test``, the rest to
``train``, and each split's stream drops candidates of the other split. Same task knobs + same seed +
same split -> the same examples, on every machine (``random.Random`` seeded with a string is
deterministic; Python's salted ``hash`` is never used).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from abc import ABC, abstractmethod
from itertools import islice
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Literal, Sequence

from appo.plugins import UnknownNameError, register_unique
from appo.rewards.base import RewardOutput
from appo.types import Example

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


def split_of(key: str, held_out: float) -> Split:
    """``test`` when SHA-256(key) maps below ``held_out`` (a fraction in [0, 1)), else ``train``."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)
    return "test" if bucket < held_out else "train"


def think(text: str) -> str:
    """A short reasoning block, as every demonstration turn starts."""
    return f"<think>{text}</think>\n"


def answer(value: str) -> str:
    """The final answer block with its box."""
    return f"<answer>\\boxed{{{value}}}</answer>"


class Task(ABC):
    """A procedural task: a seeded question stream, a demonstration writer, a verifier."""

    name: ClassVar[str] = ""
    """Registry name; also the id prefix of its examples."""
    tools: ClassVar[tuple[str, ...]] = ()
    """Tools the demonstrations call."""

    def __init__(self, held_out: float = 0.1):
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"{self.name}: held_out={held_out} must lie strictly between 0 and 1 (a fraction of keys)")
        self.held_out = held_out

    @abstractmethod
    def _draw(self, rng: random.Random) -> tuple[str, Callable[[str], Example]]:
        """One candidate: its split key and a builder taking the example id."""

    def iterate(self, seed: int, split: Split = "train") -> Iterator[Example]:
        """Unbounded stream of examples of ``split`` for ``seed`` (ids ``<name>[-test]/<seed>/<index>``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = random.Random(f"{self.name}:{seed}")
        prefix = self.name if split == "train" else f"{self.name}-{split}"
        index, misses = 0, 0
        while True:
            key, build = self._draw(rng)
            if split_of(key, self.held_out) != split:
                misses += 1
                if misses > 100_000:
                    raise RuntimeError(
                        f"{self.name}: no {split!r} question in 100000 draws; the question space is too small "
                        "for this held_out fraction (raise the task's size knobs or change held_out)"
                    )
                continue
            misses = 0
            yield build(f"{prefix}/{seed}/{index}")
            index += 1

    def generate(self, n: int, seed: int, split: Split = "train") -> list[Example]:
        """The first ``n`` examples of :meth:`iterate`."""
        return list(islice(self.iterate(seed, split), n))

    @abstractmethod
    def demonstration(self, example: Example) -> list[str]:
        """Model-side turn texts for SFT in the tag protocol: every turn but the last ends with a closed
        tool call; the last holds the answer block. Tool results are not written (the loop adds them)."""

    def corpus(self, seed: int | None = None) -> list[dict]:
        """Search documents ``{"id", "title", "text"}`` the task needs; empty for tasks without search."""
        return []

    def write_corpus(self, path: str | os.PathLike, seed: int | None = None) -> Path:
        """Write :meth:`corpus` as JSONL (one ``{"id", "title", "text"}`` per line) for a BM25 backend."""
        return write_jsonl(self.corpus(seed), path)

    def verify(self, examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
        """Score full responses with the ``default`` reward (the reference reward)."""
        from appo.rewards import REWARDS

        return REWARDS["default"](examples, responses)


TASKS: dict[str, type[Task]] = {}
"""Task name -> class; instantiate with its knobs, e.g. ``TASKS["arith"](n_operands=(2, 4))``."""


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task to :data:`TASKS` under ``cls.name``; refuses duplicates."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name; set the class attribute `name`")
    return register_unique(TASKS, cls.name, cls, "task")


def get_task(name: str, **knobs) -> Task:
    """Instantiate the task registered as ``name`` with ``knobs``."""
    if name not in TASKS:
        raise UnknownNameError(f"unknown procedural task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name](**knobs)


def write_jsonl(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write ``rows`` as JSON lines (UTF-8, one object per line); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
