"""Where appo finds its data files.

Search order for a relative data path such as ``benchmarks/gsm8k.jsonl``:

1. the ``data_dir`` argument of the loader, when given;
2. the directory in the ``APPO_DATA_DIR`` environment variable, when set;
3. the bundled ``data/`` folder of a source checkout: the repository root is the parent of the
   ``appo`` package, which holds for ``pip install -e .`` and for running from the checkout.

The first directory that holds the file wins, so a user can keep only the files they add (say the
full MATH test set) in their own folder and still reach the bundled ones. A regular (non-editable)
``pip install`` copies only the ``appo`` package, not ``data/`` (6 MB of third-party datasets under their
own licences, some research-use only: GAIA, HLE, WebWalkerQA, xbench); such an install finds no bundled
data and the error says to set ``APPO_DATA_DIR`` to a checkout's ``data/`` folder. What runs without a
checkout needs no data file: the demo, the study and ``appo train -c demo`` use procedural tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "APPO_DATA_DIR"
"""Environment variable naming a data directory searched before the bundled one."""


def bundled_data_dir() -> Path | None:
    """The repository's ``data/`` folder next to the ``appo`` package, or None when not present."""
    candidate = Path(__file__).resolve().parents[1] / "data"  # appo/paths.py -> the checkout root
    return candidate if candidate.is_dir() else None


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for data files, in order (see the module docstring)."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    bundled = bundled_data_dir()
    if bundled is not None:
        roots.append(bundled)
    return roots


def find_data_file(relative: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing ``<root>/<relative>`` over :func:`data_roots`, or None."""
    for root in data_roots(data_dir):
        path = root / relative
        if path.is_file():
            return path
    return None


def describe_roots(data_dir: str | os.PathLike | None = None) -> str:
    """Human-readable list of the searched directories and the fix, for error messages (one line)."""
    roots = data_roots(data_dir)
    where = f"searched {', '.join(str(r) for r in roots)}" if roots else "no data directory to search"
    if bundled_data_dir() is None:
        return (f"{where}; this install carries no bundled data (a wheel ships only the package): set "
                f"{ENV_VAR} to the data/ folder of an appo checkout, or to a folder of your own files")
    return f"{where}; pass data_dir=..., or set {ENV_VAR} to a folder holding it"
