"""APPO: branching anywhere by the Branching Score, procedure-level scaling, and its Omega anchor policy
(docs/algorithm.md); its options (``algorithm.appo``) are declared beside the ``appo`` strategy,
:class:`~appo.agent.strategy_options.AppoConfig`."""

from __future__ import annotations

from typing import Any, Sequence

from appo.agent.strategy_options import AppoConfig
from appo.algorithms.base import Algorithm, register_algorithm
from appo.types import Rollout


@register_algorithm
class APPO(Algorithm):
    """APPO: branches where the Branching Score is highest, Omega against an anchor, future-KL in the loss.

    ``rollout.n_initial`` roots per prompt, the ``appo`` strategy and estimator, Omega against
    ``algorithm.appo.anchor``."""

    name = "appo"
    strategy = "appo"
    estimator = "appo"
    branches = True
    section = "appo"

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


__all__ = ["APPO", "AppoConfig"]
