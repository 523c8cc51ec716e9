"""Tree-GRPO: trees of whole agent steps; its options (``algorithm.tree``) are the ``tree`` strategy's,
:class:`~appo.agent.strategy_options.TreeConfig`."""

from __future__ import annotations

from appo.agent.strategy_options import TreeConfig
from appo.algorithms.base import Algorithm, register_algorithm


@register_algorithm
class TreeGRPO(Algorithm):
    """Tree-GRPO: trees of whole agent steps (the ``tree`` strategy, the ``tree_grpo`` estimator).

    ``rollout.n_initial`` trees per prompt, expanded at agent-step boundaries; every leaf row is trained."""

    name = "tree_grpo"
    strategy = "tree"
    estimator = "tree_grpo"
    branches = True
    section = "tree"


__all__ = ["TreeConfig", "TreeGRPO"]
