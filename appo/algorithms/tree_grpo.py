"""Tree-GRPO: trees of whole agent steps, with its options (``algorithm.tree``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appo.agent.context import StrategyConfig
from appo.algorithms.base import Algorithm, register_algorithm


@dataclass(frozen=True)
class TreeConfig:
    """Tree-GRPO: trees of whole agent steps; ``rollout.n_initial`` trees per prompt."""

    expand_nodes: int = 2
    """Nodes (agent steps) expanded per iteration and tree, chosen at random."""
    expand_iters: int = 1
    """Expansion iterations; expansion also stops when the prompt's budget of ``rollout.n`` rows is used."""


@register_algorithm
class TreeGRPO(Algorithm):
    """Tree-GRPO: trees of whole agent steps (the ``tree`` strategy, the ``tree_grpo`` estimator).

    ``rollout.n_initial`` trees per prompt, expanded at agent-step boundaries; every leaf row is trained."""

    name = "tree_grpo"
    strategy = "tree"
    estimator = "tree_grpo"
    branches = True

    def strategy_config(self, cfg: Any) -> StrategyConfig:
        """Budget, trees and ``algorithm.tree``."""
        o = cfg.algorithm.tree
        return StrategyConfig(n_total=cfg.rollout.n, n_initial=self.n_initial(cfg), tree_expand_nodes=o.expand_nodes,
                              tree_max_rounds=o.expand_iters)

    def validate(self, cfg: Any) -> None:
        """The branching rule, and ``algorithm.tree.expand_iters >= 0``, ``expand_nodes >= 1``."""
        super().validate(cfg)
        o = cfg.algorithm.tree
        if o.expand_iters < 0:
            raise ValueError(f"algorithm.tree.expand_iters={o.expand_iters} must be >= 0")
        if o.expand_nodes < 1:
            raise ValueError(f"algorithm.tree.expand_nodes={o.expand_nodes} must be >= 1")
