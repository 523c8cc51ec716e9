"""ARPO: entropy-driven branching after tool results; its options (``algorithm.arpo``) are the ``arpo``
strategy's, :class:`~appo.agent.strategy_options.ArpoConfig`."""

from __future__ import annotations

from appo.agent.strategy_options import ArpoConfig
from appo.algorithms.base import Algorithm, register_algorithm


@register_algorithm
class ARPO(Algorithm):
    """ARPO: forks after tool results where the entropy rises (the ``arpo`` strategy and estimator).

    ``rollout.n_initial`` roots per prompt; every row, initial and forked, is trained."""

    name = "arpo"
    strategy = "arpo"
    estimator = "arpo"
    branches = True
    section = "arpo"


__all__ = ["ARPO", "ArpoConfig"]
