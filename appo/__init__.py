"""appo: RL for tool-using LLM agents (APPO and the GRPO, ARPO, Tree-GRPO baselines).

The layers, each a package whose ``__init__`` docstring says what it may import (checked for cycles by
tests/test_import_graph.py): :mod:`appo.types` (records) <- :mod:`appo.core` (pure maths) <- engine, tools,
rewards, data <- :mod:`appo.agent` <- :mod:`appo.algorithms` <- :mod:`appo.config` <- :mod:`appo.train` <-
distributed, eval, report, analysis, study, bench, demo <- :mod:`appo.cli`.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("appo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
