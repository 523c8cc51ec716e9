"""Hugging Face ``datasets`` in, Examples out: in-memory objects and local folders / Arrow files.

- :func:`examples_from` takes what a TRL or verl user holds in Python: a ``datasets.Dataset``, a
  ``DatasetDict`` (one split is used), an ``IterableDataset``, or a list of row dicts (or of Examples,
  returned as they are). Rows go through :func:`appo.data.chat_rows.normalise_row`.
- :func:`load_local` reads a local path with ``datasets``: a folder written by ``save_to_disk``
  (``load_from_disk``), a folder of data files (``load_dataset(folder)``: parquet, jsonl, json, csv, arrow,
  the builder inferred from the files), or a single ``.arrow`` file (``Dataset.from_file``). A split may be
  named after ``#`` (``my_data#validation``). Nothing is downloaded: only local paths are read.

Split choice for a ``DatasetDict``: the named split, else the one the caller asks for (``train`` for
``data.train_files``, ``test`` for ``data.val_files``, which also accepts ``validation`` / ``valid`` /
``val``), else the only split; otherwise an error lists the splits. ``datasets`` is imported only here,
on use (it is in ``requirements/cpu.txt`` and the ``datasets`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from appo.data.chat_rows import guess_kind, normalise_row
from appo.data.rows import DataError, EmptyAnswerError, logger, plain
from appo.types import Example, Metric, TaskKind

SPLIT_ALIASES = {"test": ("test", "validation", "valid", "val"), "train": ("train",)}
"""Splits tried, in order, for the split a loader asks for."""


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ImportError("reading a Hugging Face dataset needs the `datasets` package: pip install 'appo[datasets]'") \
            from None
    return datasets


def pick_split(splits: dict, split: str | None, want: str, origin: str) -> Any:
    """The split of a DatasetDict-like mapping (see the module docstring)."""
    names = list(splits)
    if split is not None:
        if split not in splits:
            raise ValueError(f"{origin}: no split {split!r}; it has {names}")
        return splits[split]
    for name in SPLIT_ALIASES.get(want, (want,)):
        if name in splits:
            return splits[name]
    if len(names) == 1:
        return splits[names[0]]
    raise ValueError(f"{origin}: has splits {names} and none is {want!r}; name one, as '{origin}#{names[0]}'")


def examples_from(
    data: Any,
    *,
    split: str | None = None,
    want: str = "train",
    source: str = "dataset",
    kind: TaskKind | None = None,
    metric: Metric | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Examples of an in-memory dataset (see the module docstring); the Python way in for ``train(cfg,
    train_dataset=...)``. ``split`` names a DatasetDict's split (else ``want`` and its aliases); ``source``
    is the id prefix and ``data_source`` of rows without their own; ``kind`` / ``metric`` override the
    guess per row; ``limit`` caps the number of examples. Rows with a blank answer are skipped with a
    warning; any other unreadable row raises :class:`~appo.data.rows.DataError` naming the row."""
    if isinstance(data, dict):  # a DatasetDict (a dict subclass) or {split: rows}
        data = pick_split(data, split, want, source)
    rows: Iterable = data
    out: list[Example] = []
    origin = f"<{source}>"
    for i, row in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        if isinstance(row, Example):
            out.append(row)
            continue
        if not isinstance(row, dict):
            raise DataError(origin, i, f"row is a {type(row).__name__}, not a dict of columns",
                            "pass a datasets.Dataset, a DatasetDict or a list of dicts")
        try:
            out.append(normalise_row(plain(row), origin, i, source, kind, metric))
        except EmptyAnswerError as exc:
            logger.warning("skipping a row that cannot be scored: %s", exc)
    return out


def split_spec(spec: str) -> tuple[str, str | None]:
    """``path#split`` -> (path, split); a spec without ``#`` has no split."""
    path, sep, split = str(spec).partition("#")
    return path, (split or None) if sep else None


def is_local_dataset(spec: str | os.PathLike) -> bool:
    """True when ``spec`` (minus a ``#split``) is a folder or an ``.arrow`` file that :func:`load_local` reads."""
    path = Path(split_spec(str(spec))[0]).expanduser()
    return path.is_dir() or (path.suffix == ".arrow" and path.is_file())


def load_local(spec: str | os.PathLike, want: str = "train", kind: TaskKind | None = None,
               metric: Metric | None = None, limit: int | None = None) -> list[Example]:
    """Examples of a local folder or ``.arrow`` file read with ``datasets`` (see the module docstring)."""
    text, split = split_spec(str(spec))
    path = Path(text).expanduser()
    datasets = _datasets()
    source = path.stem or "dataset"
    try:
        if path.is_file():
            data = datasets.Dataset.from_file(str(path))
        elif (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            data = datasets.load_from_disk(str(path))
        else:
            data = datasets.load_dataset(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(path, None, f"datasets cannot read this folder ({str(exc)[:200]})",
                        "give a save_to_disk folder, a folder of parquet/jsonl/arrow files, or one .arrow file") \
            from None
    if isinstance(data, dict):
        data = pick_split(data, split, want, text)
    elif split is not None:
        raise ValueError(f"{text}: is a single dataset without splits; drop '#{split}'")
    return examples_from(data, source=source, kind=kind, metric=metric, limit=limit)


__all__ = ["examples_from", "guess_kind", "is_local_dataset", "load_local", "pick_split", "split_spec"]
