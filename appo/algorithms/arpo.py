"""ARPO: entropy-driven branching after tool results, with its options (``algorithm.arpo``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appo.agent.context import StrategyConfig
from appo.algorithms.base import Algorithm, register_algorithm


@dataclass(frozen=True)
class ArpoConfig:
    """ARPO's entropy-driven branching after tool results."""

    tau: float = 0.5
    """Base branch probability."""
    beta: float = 0.2
    """Weight of the entropy change in the branch probability ``clip(tau + beta * dH, 0, 1)``."""
    entropy_window: int = 20
    """Tokens after a tool result over which the entropy is measured."""


@register_algorithm
class ARPO(Algorithm):
    """ARPO: forks after tool results where the entropy rises (the ``arpo`` strategy and estimator).

    ``rollout.n_initial`` roots per prompt; every row, initial and forked, is trained."""

    name = "arpo"
    strategy = "arpo"
    estimator = "arpo"
    branches = True

    def strategy_config(self, cfg: Any) -> StrategyConfig:
        """Budget, roots and ``algorithm.arpo``."""
        o = cfg.algorithm.arpo
        return StrategyConfig(n_total=cfg.rollout.n, n_initial=self.n_initial(cfg), arpo_tau=o.tau, arpo_beta=o.beta,
                              arpo_entropy_window=o.entropy_window)

    def validate(self, cfg: Any) -> None:
        """The branching rule, and ``algorithm.arpo.entropy_window >= 1``."""
        super().validate(cfg)
        if cfg.algorithm.arpo.entropy_window < 1:
            raise ValueError(f"algorithm.arpo.entropy_window={cfg.algorithm.arpo.entropy_window} must be >= 1")
