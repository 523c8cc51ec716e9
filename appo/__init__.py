"""appo: RL for tool-using LLM agents (APPO and the GRPO, ARPO, Tree-GRPO baselines).

The layers, bottom to top (README.md "Architecture" holds the exact import map, which
tests/test_import_graph.py checks against the code): :mod:`appo.types`, :mod:`appo.plugins`, :mod:`appo.paths`
<- :mod:`appo.core` (pure maths), :mod:`appo.rewards` <- data, tools <- models <- engine <- :mod:`appo.agent` <-
:mod:`appo.algorithms` <- :mod:`appo.config`; eval <- distributed <- :mod:`appo.train` <- serve, bench, demo <- study
<- :mod:`appo.cli`; analysis and report read run folders and never import train.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("appo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
