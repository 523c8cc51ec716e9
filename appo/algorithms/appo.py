"""APPO: branching anywhere by the Branching Score, procedure-level scaling, with its options
(``algorithm.appo``) and its Omega anchor policy (docs/algorithm.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from appo.agent.context import StrategyConfig
from appo.algorithms.base import Algorithm, register_algorithm
from appo.types import Rollout


@dataclass(frozen=True)
class AppoConfig:
    """APPO's branching and procedure-level scaling (docs/algorithm.md sections 2-8)."""

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
    re-draws) / std_branch`` on top of its advantage; ``none`` (ablation) leaves the decision itself
    without branch signal unless ``train_on_branches``."""
    prefix_combine: Literal["sum", "mean"] = "sum"
    """Shared-prefix tokens of the dual-group advantage: ``sum`` ``A_init + mean A_branch`` (the paper,
    up to twice the scale of the tokens after the split), ``mean`` ``(A_init + mean A_branch) / 2``."""
    points: Literal["score", "entropy", "random"] = "score"
    """How branch points are chosen: ``score`` (the Branching Score Z(H) * Z(Omega)); ablations
    ``entropy`` (BS = Z(H), Omega ignored) and ``random`` (uniform over valid model tokens)."""
    train_on_branches: bool = False
    """Train on branch rows too; by default they only supply advantage signal (loss mask 0), as in the
    reference. APPO only: ARPO and Tree-GRPO always train every row (:meth:`APPO.trained_rows`)."""


@register_algorithm
class APPO(Algorithm):
    """APPO: branches where the Branching Score is highest, Omega against an anchor, future-KL in the loss.

    ``rollout.n_initial`` roots per prompt, the ``appo`` strategy and estimator, Omega against
    ``algorithm.appo.anchor``."""

    name = "appo"
    strategy = "appo"
    estimator = "appo"
    branches = True

    def strategy_config(self, cfg: Any) -> StrategyConfig:
        """Budget, roots, and Omega / fork / point choice from ``algorithm.appo``."""
        o = cfg.algorithm.appo
        return StrategyConfig(n_total=cfg.rollout.n, n_initial=self.n_initial(cfg), omega_gamma=o.gamma,
                              omega_clip_eps=o.omega_clip_eps, omega_form=o.omega_form,
                              omega_noise_ratio=o.omega_noise_ratio, appo_fork=o.fork, appo_points=o.points)

    def advantage_options(self, cfg: Any) -> dict:
        """GRPO's std switch, plus (estimator ``appo``) branch-proximity scaling, the shared-prefix combination
        and the re-drawn token's contrast (``fork=redraw`` with ``redraw_credit=contrast``)."""
        opts = super().advantage_options(cfg)
        if cfg.algorithm.adv_estimator == "appo":
            o = cfg.algorithm.appo
            opts.update(proximity_scaling=o.proximity_scaling, decay=o.proximity_decay, prefix_combine=o.prefix_combine,
                        redraw_contrast=o.fork == "redraw" and o.redraw_credit == "contrast")
        return opts

    def trained_rows(self, cfg: Any, rows: Sequence[Rollout]) -> list[bool]:
        """Initial rows only (branch rows supply the branch contrast only, the reference's default);
        ``algorithm.appo.train_on_branches`` trains branch rows too."""
        return [r.origin == "initial" or bool(cfg.algorithm.appo.train_on_branches) for r in rows]

    def omega_anchor(self, cfg: Any) -> str:
        """``algorithm.appo.anchor``."""
        return cfg.algorithm.appo.anchor

    def loss_options(self, cfg: Any) -> dict:
        """Future-KL scaling of the advantage (``algorithm.appo.future_kl``, ``future_kl_coef``)."""
        o = cfg.algorithm.appo
        return {"future_kl": o.future_kl, "future_kl_coef": o.future_kl_coef}
