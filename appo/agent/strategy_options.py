"""The typed options of the built-in rollout strategies, declared once: the strategy reads them from
``StrategyConfig.options``, the algorithm hands over its config section, and the config schema's
``algorithm.appo`` / ``algorithm.arpo`` / ``algorithm.tree`` sections are these classes (APPO's holds the
algorithm's advantage and loss switches too, so that every APPO setting is declared in one place).

A strategy registered with ``register_strategy(name, options=SomeDataclass)`` gets ``SomeDataclass()``
when a caller passes no options (:func:`strategy_options`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class AppoConfig:
    """APPO's branching and procedure-level scaling (docs/algorithm.md sections 2-8).

    The ``appo`` strategy reads how Omega is scored and where branch points fork (``gamma``, ``omega_*``,
    ``fork``, ``points``); the algorithm (:class:`appo.algorithms.appo.APPO`) reads the anchor and the
    advantage and loss switches (the rest)."""

    anchor: Literal["previous", "rollout", "reference"] = "previous"
    """Policy that Omega compares against: ``previous`` (before the last update), ``rollout`` (the
    engine's own log-probs; the reference code's choice) or ``reference`` (the initial policy)."""
    gamma: float = 1.0
    """Discount of the likelihood-gain sum in Omega (the paper: 1; FIPO's future-KL uses 2^(-1/64))."""
    omega_clip_eps: float = 0.2
    """Omega is clipped to ``[1 - eps, 1 + eps]`` (``omega_form`` clipped and mean)."""
    omega_form: Literal["clipped", "mean", "sum"] = "mean"
    """How the suffix sum S of log-prob gains becomes Omega: ``mean`` ``clip(exp(S / remaining tokens))``
    (length-normalised; the default: the best Branching Score variant measured in docs/analysis.md, though
    not clearly better than entropy alone), ``clipped`` ``clip(exp(S))`` (the paper), ``sum`` S (unclipped)."""
    omega_noise_ratio: float = 2.0
    """Omega of a row counts as numerical noise, and BS falls back to Z(H), when the spread of its suffix
    sum is at most this many times the spread of the measured trainer-vs-engine mismatch (``rollout``
    anchor; for the other anchors only the zero-variance test applies)."""
    proximity_scaling: bool = False
    """Branch-proximity scaling ``M_t = 1 + (BS_b / max BS) * decay^(split_b - t)`` of the token advantage."""
    proximity_decay: float = 0.9
    """Decay per token of the branch-proximity scaling."""
    future_kl: bool = True
    """Future-KL scaling of the advantage inside the loss, ``A * (1 + b * f_t)``."""
    future_kl_coef: float = 1.0
    """``b`` in the future-KL scaling."""
    fork: Literal["after", "redraw"] = "after"
    """Where a branch point t forks: ``after`` keeps token t and re-samples from t + 1 (prefix
    ``response[:t+1]``, the paper and the reference code; token t is in the shared prefix and gets the
    branch contrast); ``redraw`` re-samples token t (prefix ``response[:t]``), the token whose entropy
    scored the point (its credit: ``redraw_credit``)."""
    redraw_credit: Literal["contrast", "none"] = "contrast"
    """``fork=redraw`` only: ``contrast`` gives the parent's re-drawn token t ``(R_i - mean R of its
    re-draws) / std of the prompt's rewards`` on top of its advantage; ``none`` (ablation) leaves the decision
    itself without branch signal unless ``train_on_branches``."""
    prefix_combine: Literal["sum", "mean"] = "sum"
    """Shared-prefix tokens of the dual-group advantage: ``sum`` ``A_init + mean A_branch`` (the paper,
    up to twice the scale of the tokens after the split), ``mean`` ``(A_init + mean A_branch) / 2``."""
    points: Literal["score", "entropy", "random", "oracle"] = "score"
    """How branch points are chosen: ``score`` (the Branching Score Z(H) * Z(Omega)); ablations
    ``entropy`` (BS = Z(H), Omega ignored), ``random`` (uniform over valid model tokens) and ``oracle``
    (the point whose fork re-samples the task's known decisive token, one per initial row: the upper
    bound of any score; needs a task that records it, e.g. ``proc:depth``)."""
    train_on_branches: bool = False
    """Train on branch rows too; by default they only supply advantage signal (loss mask 0), as in the
    reference. APPO only: ARPO and Tree-GRPO always train every row (:meth:`APPO.trained_rows`)."""

    def __post_init__(self) -> None:
        if self.points not in ("score", "entropy", "random", "oracle"):
            raise ValueError(f"algorithm.appo.points={self.points!r} must be 'score', 'entropy', 'random' or "
                             "'oracle'")
        if self.omega_form not in ("clipped", "mean", "sum"):
            raise ValueError(f"algorithm.appo.omega_form={self.omega_form!r} must be 'clipped', 'mean' or 'sum'")
        if not self.omega_noise_ratio >= 0:
            raise ValueError(f"algorithm.appo.omega_noise_ratio={self.omega_noise_ratio} must be >= 0")
        if self.fork not in ("redraw", "after"):
            raise ValueError(f"algorithm.appo.fork={self.fork!r} must be 'redraw' or 'after'")


@dataclass(frozen=True)
class ArpoConfig:
    """The ``arpo`` strategy: ARPO's entropy-driven branching after tool results."""

    tau: float = 0.5
    """Base branch probability."""
    beta: float = 0.2
    """Weight of the entropy change in the branch probability ``clip(tau + beta * dH, 0, 1)``."""
    entropy_window: int = 20
    """Tokens after a tool result (and of the first round) whose entropies are summed and divided by log |V|
    (the reference's normalised entropy; a sum, not a mean)."""
    entropy_at: Literal["call_turn", "after_result"] = "call_turn"
    """Whose entropy the fork decision after tool result r reads: ``call_turn`` (the reference code, the
    default since issue 24: the turn that made call r, so dH = 0 and p = tau at the first result) or
    ``after_result`` (the paper's wording and this project's behaviour before issue 24: the new turn)."""

    def __post_init__(self) -> None:
        if self.entropy_at not in ("call_turn", "after_result"):
            raise ValueError(f"algorithm.arpo.entropy_at={self.entropy_at!r} must be 'call_turn' or "
                             "'after_result'")
        if self.entropy_window < 1:
            raise ValueError(f"algorithm.arpo.entropy_window={self.entropy_window} must be >= 1")


@dataclass(frozen=True)
class TreeConfig:
    """The ``tree`` strategy (Tree-GRPO): trees of whole agent steps; ``rollout.n_initial`` trees per prompt."""

    expand_nodes: int = 2
    """Nodes (agent steps) expanded per iteration and tree, chosen at random (Tree-GRPO's N)."""
    expand_iters: int = 1
    """Expansion iterations (Tree-GRPO's L) before the rest of the budget is filled with new trees; 0 expands
    until the prompt's budget of ``rollout.n`` rows is used (expansion always stops there)."""

    def __post_init__(self) -> None:
        if self.expand_iters < 0:
            raise ValueError(f"algorithm.tree.expand_iters={self.expand_iters} must be >= 0")
        if self.expand_nodes < 1:
            raise ValueError(f"algorithm.tree.expand_nodes={self.expand_nodes} must be >= 1")


def strategy_options(options: Any, kind: type[T]) -> T:
    """``options`` when it is a ``kind`` (or a subclass, e.g. the whole ``algorithm.appo`` section),
    ``kind()`` when it is None; a ``TypeError`` naming both otherwise."""
    if options is None:
        return kind()
    if not isinstance(options, kind):
        raise TypeError(f"strategy options {options!r} are not a {kind.__module__}.{kind.__name__}")
    return options
