"""One entry point for datasets: :func:`load_dataset` takes a benchmark name or a file path."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from appo.data.benchmarks import (
    BENCHMARKS, BenchmarkSpec, load_benchmark, normalise_gsm8k, normalise_math, normalise_plain,
    read_examples, source_name,
)
from appo.data.paths import describe_roots, find_data_file
from appo.data.records import Example, Metric, TaskKind
from appo.data.rows import DataError, read_rows
from appo.data.verl import default_metric, is_verl_row, load_verl_parquet, looks_like_verl


def _normalise_math_or_gsm8k(row: dict, path: str, row_index: int, spec: BenchmarkSpec) -> Example:
    if isinstance(row.get("answer"), str) and "####" in row["answer"]:
        return normalise_gsm8k(row, path, row_index, spec)
    return normalise_math(row, path, row_index, spec)


def _guess_kind(row: dict) -> TaskKind:
    answer = row.get("answer")
    if "problem" in row or "solution" in row or (isinstance(answer, str) and "####" in answer):
        return "math"
    return "qa"


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
) -> list[Example]:
    """Load Examples from a benchmark name, a verl parquet file, or a JSONL / JSON / parquet file of rows.

    - a name in :data:`~appo.data.benchmarks.BENCHMARKS` -> :func:`load_benchmark`;
    - a file whose rows are verl rows -> :func:`~appo.data.verl.verl_row_to_example` per row;
    - a file named like a benchmark (``math.jsonl``, ``gsm8k.jsonl``) -> that benchmark's normaliser;
    - any other file -> question/answer fields found by name; ``kind`` defaults to ``math`` when rows
      have ``problem`` or ``solution`` fields or a ``#### N`` answer, else ``qa``.

    ``kind`` and ``metric`` override what the loader would choose. Paths are tried as given, then
    relative to the data directories (see :mod:`appo.data.paths`).
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
    path = resolve_path(spec, data_dir)
    if path is None:
        raise FileNotFoundError(
            f"dataset {spec_text!r} is neither a benchmark name ({', '.join(sorted(BENCHMARKS))}) nor an existing "
            f"file; {describe_roots(data_dir)}"
        )
    first = next(iter(read_rows(path)), None)
    if first is None:
        raise DataError(path, None, "the file has no rows", "add rows (one JSON object per line for .jsonl) "
                        "or remove it from the data list")
    if is_verl_row(first[1]) or looks_like_verl(first[1]):  # the verl reader names a missing reward_model
        return load_verl_parquet(path, limit=limit, kind=kind, metric=metric)
    name = source_name(path)
    known = BENCHMARKS.get(name)
    if known is not None and (kind is None or kind == known.kind):
        spec_obj = replace(known, metric=metric or known.metric)
    else:
        file_kind = kind or _guess_kind(first[1])
        normaliser = _normalise_math_or_gsm8k if file_kind == "math" else normalise_plain
        spec_obj = BenchmarkSpec(name, (str(path),), file_kind, metric or default_metric(file_kind), normaliser, False)
    return read_examples(path, spec_obj, limit)
