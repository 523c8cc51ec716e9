"""GRPO: ``rollout.n`` independent rows per prompt, group-relative advantages, every row trained."""

from __future__ import annotations

from appo.algorithms.base import Algorithm, register_algorithm


@register_algorithm
class GRPO(Algorithm):
    """GRPO (DeepSeekMath): independent rows (``rollout.n_initial`` is ignored), the ``grpo`` estimator."""

    name = "grpo"
    strategy = "independent"
    estimator = "grpo"
    branches = False
