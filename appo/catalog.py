"""What appo ships, by kind: the Python call behind ``appo list {benchmarks,tools,rewards,algorithms,configs}``.

:func:`catalog` reads the live registries (so names a user registered in the same process are listed
too): bundled benchmarks and procedural tasks (``appo.data``), tool builders (``appo.tools.registry``),
rewards (``appo.rewards.registry``), algorithms (the ``algorithm.name`` values, advantage estimators and
policy losses of ``appo.core``), and the configs shipped in ``appo/presets``. Each entry has a one-line
description (the first docstring line of what is registered). Left out: tools and rewards that exist
only as ``file.py:function`` references.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

KINDS = ("benchmarks", "tools", "rewards", "algorithms", "configs")
"""The kinds :func:`catalog` lists."""


@dataclass(frozen=True)
class Entry:
    """One listed name."""

    name: str
    """What to write in a config or on the command line."""
    description: str
    """One line."""


def _doc(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n")[0].strip()


def _benchmarks() -> list[Entry]:
    from appo.data.benchmarks import BENCHMARKS
    from appo.data.procedural import TASKS

    out = [Entry(name, f"{spec.kind} benchmark, metric {spec.metric}") for name, spec in sorted(BENCHMARKS.items())]
    out += [Entry(f"proc:{name}", f"procedural task: {_doc(cls)}") for name, cls in sorted(TASKS.items())]
    return out


def _tools() -> list[Entry]:
    from appo.tools.registry import TOOL_BUILDERS

    out = [Entry(name, _doc(fn) or f"the {name} tool") for name, fn in sorted(TOOL_BUILDERS.items())]
    return out + [Entry("path/to/file.py:function", "a typed Python function with a docstring, as a tool")]


def _rewards() -> list[Entry]:
    from appo.rewards.registry import REWARDS

    out = [Entry(name, _doc(fn)) for name, fn in sorted(REWARDS.items())]
    return out + [Entry("path/to/file.py:function", "your function in verl's, TRL's or appo's signature")]


def _algorithms() -> list[Entry]:
    from appo.algorithms import ALGORITHMS
    from appo.core import ADVANTAGE_ESTIMATORS, POLICY_LOSSES

    out = [Entry(name, f"algorithm.name: {_doc(type(algo))}") for name, algo in sorted(ALGORITHMS.items())]
    out += [Entry("package.module:NAME", "algorithm.name: an appo.algorithms.Algorithm from your own file")]
    out += [Entry(name, f"algorithm.adv_estimator: {_doc(fn)}") for name, fn in sorted(ADVANTAGE_ESTIMATORS.items())]
    out += [Entry(name, f"actor.policy_loss: {_doc(fn)}") for name, fn in sorted(POLICY_LOSSES.items())]
    return out


def _configs() -> list[Entry]:
    from appo.presets import shipped_config_names, shipped_config_path

    out = []
    for name in shipped_config_names():
        first = next((line.lstrip("# ").strip() for line in shipped_config_path(name).read_text().splitlines()
                      if line.startswith("#") and line.lstrip("# ").strip()), "")
        out.append(Entry(name, first))
    return out


def catalog(kind: str) -> list[Entry]:
    """The entries of ``kind`` (one of :data:`KINDS`), sorted within each group; raises ValueError naming
    the valid kinds otherwise."""
    readers = {"benchmarks": _benchmarks, "tools": _tools, "rewards": _rewards, "algorithms": _algorithms,
               "configs": _configs}
    if kind not in readers:
        raise ValueError(f"cannot list {kind!r}; choose one of {', '.join(KINDS)}")
    return readers[kind]()


def format_catalog(entries: list[Entry]) -> str:
    """Two aligned columns: name, description."""
    width = max((len(e.name) for e in entries), default=0)
    return "\n".join(f"{e.name:<{width}}  {e.description}".rstrip() for e in entries)
