"""One entry point for datasets: :func:`load_dataset` takes a benchmark name or a file path."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from appo.data.benchmarks import BENCHMARKS, load_benchmark, read_examples, source_name
from appo.data.chat_rows import ANSWER_FIELDS, guess_kind, normalise_row
from appo.data.hf import is_local_dataset, load_local
from appo.data.rows import DataError, collect, first_field, read_rows
from appo.data.verl import default_metric, is_verl_row, load_verl_parquet, looks_like_verl
from appo.paths import describe_roots, find_data_file
from appo.types import Example, Metric, TaskKind


def resolve_path(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path | None:
    """``spec`` as an existing file: as given (relative to the working directory), else relative to a
    data directory (``train/train_10k.parquet``), else None."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    return find_data_file(str(spec), data_dir)


def load_dataset(
    spec: str | os.PathLike,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    kind: TaskKind | None = None,
    metric: Metric | None = None,
    split: str = "train",
) -> list[Example]:
    """Load Examples from a benchmark name, a data file, or a local Hugging Face dataset.

    - a name in :data:`~appo.data.benchmarks.BENCHMARKS` -> :func:`load_benchmark`;
    - a folder (``save_to_disk`` output, or a folder of parquet / jsonl / arrow files) or an ``.arrow`` file,
      optionally ``#split`` -> :func:`appo.data.hf.load_local` (``split`` picks a DatasetDict's split
      when the spec names none);
    - a file whose rows are verl rows -> :func:`~appo.data.verl.verl_row_to_example` per row;
    - a file named like a benchmark (``math.jsonl``, ``gsm8k.jsonl``) -> that benchmark's normaliser;
    - any other ``.jsonl`` / ``.json`` / ``.parquet`` file -> :func:`appo.data.chat_rows.normalise_row` per row
      (TRL conversational or standard rows, or question/answer rows); ``kind`` defaults to the guess
      from the first row (:func:`~appo.data.chat_rows.guess_kind`), for the whole file.

    ``kind`` and ``metric`` override what the loader would choose. Paths are tried as given, then
    relative to the data directories (see :mod:`appo.paths`).
    """
    spec_text = str(spec)
    if spec_text in BENCHMARKS:
        examples = load_benchmark(spec_text, limit=limit, data_dir=data_dir)
        if kind is not None or metric is not None:
            examples = [
                replace(e, kind=kind or e.kind, metric=metric or (default_metric(kind) if kind else e.metric))
                for e in examples
            ]
        return examples
    if is_local_dataset(spec_text):
        return load_local(spec_text, want=split, kind=kind, metric=metric, limit=limit)
    path = resolve_path(spec, data_dir)
    if path is None:
        raise FileNotFoundError(
            f"dataset {spec_text!r} is neither a benchmark name ({', '.join(sorted(BENCHMARKS))}), an existing "
            f"file nor a dataset folder; {describe_roots(data_dir)}"
        )
    first = next(iter(read_rows(path)), None)
    if first is None:
        raise DataError(path, None, "the file has no rows", "add rows (one JSON object per line for .jsonl) "
                        "or remove it from the data list")
    if is_verl_row(first[1]) or (looks_like_verl(first[1]) and first_field(first[1], ANSWER_FIELDS) is None):
        # the verl reader names a missing or mangled reward_model
        return load_verl_parquet(path, limit=limit, kind=kind, metric=metric)
    name = source_name(path)
    known = BENCHMARKS.get(name)
    if known is not None and (kind is None or kind == known.kind):
        return read_examples(path, replace(known, metric=metric or known.metric), limit)
    file_kind = kind or guess_kind(first[1])
    return collect(path, lambda row, i: normalise_row(row, str(path), i, name, file_kind, metric), limit)
