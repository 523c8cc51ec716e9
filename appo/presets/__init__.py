"""The presets: the YAML configs shipped inside the package (``demo``, ``smollm2_135m``, ``paper_7b``,
``study``), found by name (``-c demo``). :mod:`appo.config` is the machinery that reads them (was
``appo.configs``, a name one letter from that package's).

They are package data, read through :mod:`importlib.resources`, so a plain (non-editable) ``pip install``
finds them as well as a source checkout does. This module only locates files; parsing and validation live
in :func:`appo.config.load_config`. It imports nothing from the rest of ``appo``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


class ConfigNotFoundError(ValueError):
    """A ``--config`` argument that is neither an existing YAML file nor a shipped config's name."""


def shipped_config_names() -> list[str]:
    """The names of the configs shipped with appo (file stems of ``appo/presets/*.yaml``), sorted."""
    root = resources.files(__name__)
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def shipped_config_path(name: str) -> Path:
    """The file of the shipped config ``name`` (``demo`` or ``demo.yaml``); raises ConfigNotFoundError."""
    stem = name.removesuffix(".yaml")
    candidate = resources.files(__name__) / f"{stem}.yaml"
    if not candidate.is_file():
        raise ConfigNotFoundError(_not_found(name))
    return Path(str(candidate))


def resolve_config(name_or_path: str | Path | None) -> Path | None:
    """A config given as a YAML file path or as a shipped config's name (``demo`` -> the shipped
    ``demo.yaml``); None stays None. An existing file wins over a shipped name. Raises
    :class:`ConfigNotFoundError` (one line naming the argument and the valid names) otherwise."""
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in ("", ".yaml") and path.parent == Path("."):
        return shipped_config_path(str(name_or_path))
    if path.parts[-2:-1] == ("configs",) and path.parts[:-2] in ((), ("appo",)):  # the old checkout paths
        return shipped_config_path(path.name)  # configs/NAME.yaml and appo/configs/NAME.yaml (before the rename)
    raise ConfigNotFoundError(_not_found(str(name_or_path)))


def _not_found(name: str) -> str:
    return (f"config {name!r} not found: pass a YAML file that exists or one of the shipped names "
            f"({', '.join(shipped_config_names())}); `appo list configs` lists them")
