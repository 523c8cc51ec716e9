"""Algorithms: one module per algorithm (:mod:`~appo.algorithms.grpo`, :mod:`~appo.algorithms.arpo`,
:mod:`~appo.algorithms.tree_grpo`, :mod:`~appo.algorithms.appo`), each an :class:`Algorithm` spec the trainer
reads (rollout strategy and its typed options, advantage estimator and its options, which rows are trained,
APPO's Omega anchor, loss switches, config rules), and the registry (:func:`get_algorithm`,
:func:`register_algorithm`; ``algorithm.name=package.module:NAME`` loads one from outside the package).

May import: :mod:`appo.agent`, :mod:`appo.plugins`, :mod:`appo.types` (the strategies and their options). Not the
config package, the trainer or the engines: they import this.
"""

from appo.algorithms import appo, arpo, grpo, tree_grpo  # noqa: F401 - each registers its algorithm
from appo.algorithms.appo import APPO, AppoConfig
from appo.algorithms.arpo import ARPO, ArpoConfig
from appo.algorithms.base import ALGORITHMS, Algorithm, get_algorithm, register_algorithm
from appo.algorithms.grpo import GRPO
from appo.algorithms.tree_grpo import TreeConfig, TreeGRPO

__all__ = [
    "ALGORITHMS", "APPO", "ARPO", "Algorithm", "AppoConfig", "ArpoConfig", "GRPO", "TreeConfig", "TreeGRPO",
    "get_algorithm", "register_algorithm",
]
