"""Reading raw rows from JSONL and parquet files, and the error every loader raises for a bad row."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

logger = logging.getLogger("appo.data")
T = TypeVar("T")


class DataError(ValueError):
    """A data file or one of its rows cannot be read. The message names the file, the row and the fix."""

    def __init__(self, path: str | os.PathLike, row: int | None, problem: str, fix: str = ""):
        self.path, self.row, self.problem = str(path), row, problem
        where = f"{self.path}" if row is None else f"{self.path}, row {row}"
        super().__init__(f"{where}: {problem}" + (f"; {fix}" if fix else ""))


class EmptyAnswerError(DataError):
    """A row whose reference answer is blank: it can be read but not scored, so loaders skip it."""


def collect(path: str | os.PathLike, convert: Callable[[dict, int], T | None], limit: int | None = None) -> list[T]:
    """Convert the rows of ``path`` in order; ``convert`` returning None skips a row on purpose, and a
    row with a blank answer (:class:`EmptyAnswerError`) is skipped with a warning naming file and row.
    Any other :class:`DataError` propagates. ``limit`` caps the number of converted rows returned."""
    out: list[T] = []
    for row_index, row in read_rows(path):
        if limit is not None and len(out) >= limit:
            break
        try:
            item = convert(row, row_index)
        except EmptyAnswerError as exc:
            logger.warning("skipping a row that cannot be scored: %s", exc)
            continue
        if item is not None:
            out.append(item)
    return out


def plain(value: Any) -> Any:
    """numpy arrays / scalars from pyarrow or pandas -> lists / Python scalars, recursively."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def read_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(row index, row dict)`` from a ``.jsonl`` / ``.json`` / ``.parquet`` file, in file order.

    JSONL: one JSON object per non-blank line; the row index counts rows, not lines (the error names
    both). A ``.json`` file may hold a list of objects. Parquet is read with pyarrow.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise DataError(path, None, f"not a readable parquet file ({exc})") from exc
        for i, row in enumerate(table.to_pylist()):
            yield i, plain(row)
        return
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(path, None, f"invalid JSON ({exc})", "a .json file must hold a list of objects") from exc
        if not isinstance(data, list):
            raise DataError(path, None, "a .json data file must hold a list of row objects", "or use .jsonl")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise DataError(path, i, f"row is a {type(row).__name__}, not an object")
            yield i, row
        return
    if suffix != ".jsonl":
        raise DataError(path, None, f"unsupported file type {suffix!r}", "use .jsonl, .json or .parquet")
    row_index = 0
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, row_index, f"line {line_no} is not valid JSON ({exc.msg})",
                                "fix or remove the line") from exc
            if not isinstance(row, dict):
                raise DataError(path, row_index, f"line {line_no} is a JSON {type(row).__name__}, not an object")
            yield row_index, row
            row_index += 1


def first_field(row: dict, names: tuple[str, ...]) -> tuple[str, Any] | None:
    """``(name, value)`` of the first of ``names`` present in ``row`` with a non-null value, or None."""
    for name in names:
        if row.get(name) is not None:
            return name, row[name]
    return None


def require_field(
    path: str | os.PathLike, row_index: int, row: dict, names: tuple[str, ...], what: str
) -> tuple[str, Any]:
    """Like :func:`first_field`, raising a :class:`DataError` naming the missing field when none is there."""
    found = first_field(row, names)
    if found is None:
        expected = " or ".join(repr(n) for n in names)
        raise DataError(path, row_index, f"missing {what} field {expected} (row has {sorted(row)})",
                        "add the field or fix the row")
    return found
