"""The pure algorithm core: branching, advantages, losses. Tensors and plain numbers in, tensors out.

Nothing here reads a config object, logs, or touches a model; the maths is in docs/algorithm.md.

May import: :mod:`appo.plugins`, :mod:`appo.types` (tests/test_import_graph.py checks it against README.md).
"""

from appo.core.advantages import (
    ADVANTAGE_ESTIMATORS,
    appo_advantage,
    arpo_advantage,
    get_advantage_estimator,
    grpo_advantage,
    register_advantage,
    tree_grpo_advantage,
    tree_roots,
)
from appo.core.branching import (
    OMEGA_FORMS,
    BranchingScore,
    arpo_branch_probability,
    branching_score,
    likelihood_gain,
    omega_noise_rows,
    select_branch_points,
    suffix_gain,
    token_entropy,
    topk_entropy,
)
from appo.core.losses import (
    POLICY_LOSSES,
    aggregate,
    apply_future_kl,
    future_kl_scale,
    get_policy_loss,
    kl_penalty,
    ppo_clip,
    register_policy_loss,
)
from appo.core.ops import discounted_suffix_sum, group_zscore, masked_mean, zscore_masked

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "OMEGA_FORMS",
    "POLICY_LOSSES",
    "BranchingScore",
    "aggregate",
    "apply_future_kl",
    "appo_advantage",
    "arpo_advantage",
    "arpo_branch_probability",
    "branching_score",
    "discounted_suffix_sum",
    "future_kl_scale",
    "get_advantage_estimator",
    "get_policy_loss",
    "group_zscore",
    "grpo_advantage",
    "kl_penalty",
    "likelihood_gain",
    "masked_mean",
    "omega_noise_rows",
    "ppo_clip",
    "register_advantage",
    "register_policy_loss",
    "select_branch_points",
    "suffix_gain",
    "token_entropy",
    "topk_entropy",
    "tree_grpo_advantage",
    "tree_roots",
    "zscore_masked",
]
