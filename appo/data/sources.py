"""Training data for the trainer: dataset specs -> Examples, search corpora, and a resumable sampler.

A data spec is a benchmark name (``gsm8k``), a file (``train/train_10k.parquet``, ``my.jsonl``) or a
procedural task: ``proc:<task>`` with optional knobs as a query string, values read as YAML
(``proc:arith?n_operands=[2,3]&digits=[2,3]``, ``proc:multihop?hops=[2]&kb_size=100``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import parse_qsl

import torch
import yaml

from appo.data import load_dataset
from appo.data.procedural import Task, get_task, write_jsonl
from appo.types import Example, Metric, TaskKind

PROC_PREFIX = "proc:"
DEFAULT_PROC_TRAIN = 20_000
"""Examples drawn from a procedural task for training when ``data.train_max_samples`` is -1."""
DEFAULT_PROC_VAL = 200
"""Held-out examples drawn from a procedural task when ``data.val_max_samples`` is -1."""


def parse_task_spec(spec: str) -> tuple[str, dict]:
    """``proc:name?k=v&...`` -> (name, knobs). Values are parsed as YAML; lists become tuples."""
    body = spec[len(PROC_PREFIX):]
    name, _, query = body.partition("?")
    knobs = {}
    for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        value = yaml.safe_load(raw)
        knobs[key] = tuple(value) if isinstance(value, list) else value
    return name, knobs


def task_of(spec: str) -> Task | None:
    """The procedural task a spec names, or None for files and benchmarks."""
    if not str(spec).startswith(PROC_PREFIX):
        return None
    name, knobs = parse_task_spec(str(spec))
    try:
        return get_task(name, **knobs)
    except TypeError as exc:
        raise ValueError(f"data spec {spec!r}: {exc}; see the task's docstring for its knobs") from None


def load_examples(specs: Sequence[str], split: str, limit: int = -1, seed: int = 0,
                  kind: TaskKind | None = None, metric: Metric | None = None) -> list[Example]:
    """Examples of every spec, concatenated. ``split`` picks train/test streams of procedural tasks and the
    split of a dataset folder (other files are used whole); ``limit`` caps each spec (-1: files whole,
    procedural tasks ``DEFAULT_PROC_TRAIN`` / ``DEFAULT_PROC_VAL``); ``kind`` / ``metric`` (config
    ``data.task`` / ``data.metric``) override the scoring of file and dataset rows."""
    out: list[Example] = []
    for spec in specs:
        task = task_of(spec)
        if task is not None:
            n = limit if limit > 0 else (DEFAULT_PROC_TRAIN if split == "train" else DEFAULT_PROC_VAL)
            out.extend(task.generate(n, seed=seed, split=split))
        else:
            out.extend(load_dataset(spec, limit=limit if limit > 0 else None, kind=kind, metric=metric,
                                    split=split))
    return out


def data_overrides(task: str, metric: str) -> tuple[TaskKind | None, Metric | None]:
    """Config ``data.task`` / ``data.metric`` as loader overrides (``auto`` -> None)."""
    return (None if task == "auto" else task), (None if metric == "auto" else metric)


def examples_for(cfg_data, dataset, split: str) -> list[Example]:
    """Examples of an in-memory dataset handed to ``train()`` (:func:`appo.data.hf.examples_from`), with the
    config's ``task`` / ``metric`` and sample cap (``train_max_samples`` / ``val_max_samples``)."""
    from appo.data.hf import examples_from

    kind, metric = data_overrides(cfg_data.task, cfg_data.metric)
    cap = cfg_data.train_max_samples if split == "train" else cfg_data.val_max_samples
    return examples_from(dataset, want=split, kind=kind, metric=metric, limit=cap if cap > 0 else None)


def write_task_corpus(specs: Sequence[str], path: str | Path) -> Path | None:
    """Write the search documents of all procedural specs (deduplicated by id) to ``path`` as JSONL;
    None when no spec has a corpus."""
    docs: dict[str, dict] = {}
    for spec in specs:
        task = task_of(spec)
        for doc in task.corpus() if task is not None else ():
            docs.setdefault(doc["id"], doc)
    return write_jsonl(list(docs.values()), path) if docs else None


@dataclass
class PromptSampler:
    """Draws ``batch_size`` example indices per step, epoch by epoch, resumable from ``state_dict``.

    Each epoch is a permutation seeded by ``(seed, epoch)`` (or the identity without shuffle); a batch
    that crosses an epoch's end continues in the next epoch, so every example is seen once per epoch.
    """

    n: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    epoch: int = 0
    position: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("the training set is empty; check data.train_files")

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=gen).tolist()

    def next_indices(self) -> list[int]:
        """The next batch of example indices."""
        out: list[int] = []
        while len(out) < self.batch_size:
            order = self._order(self.epoch)
            take = order[self.position : self.position + self.batch_size - len(out)]
            out.extend(take)
            self.position += len(take)
            if self.position >= self.n:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        """Epoch and position, for checkpoints."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
