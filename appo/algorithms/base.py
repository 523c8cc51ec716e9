"""What an algorithm is to the trainer (:class:`Algorithm`), and the registry that finds one by name.

An algorithm is a rollout strategy (a name in :data:`appo.agent.ROLLOUT_STRATEGIES`) with its typed
options, an advantage estimator (a name in :data:`appo.core.ADVANTAGE_ESTIMATORS`) with its options, the
rule saying which rows the loss trains on, the policy APPO's Omega compares against, loss switches, and
the config rules it needs. Each built-in algorithm is one module of this package; another one is one file
anywhere, named in the config as ``algorithm.name=package.module:NAME`` or ``path/to/file.py:NAME``
(:mod:`appo.plugins`; ``NAME`` an :class:`Algorithm` instance or subclass), or registered in-process
with :func:`register_algorithm`.

Methods take the whole run config (:class:`appo.config.Config`) and only read it; this package never
imports the config package (the config imports it, to check and default per-algorithm keys).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from appo.agent.context import STRATEGY_OPTIONS, StrategyConfig
from appo.plugins import UnknownNameError, is_plugin_spec, load_plugin, register_unique
from appo.types import Rollout


class Algorithm:
    """One RL algorithm as the trainer reads it. Subclass, set the class attributes, override what
    differs; the defaults describe GRPO (independent rows, every row trained, no Omega)."""

    name: ClassVar[str] = ""
    """The ``algorithm.name`` it is registered under."""
    strategy: ClassVar[str] = "independent"
    """Rollout strategy (registry name in :mod:`appo.agent.context`)."""
    estimator: ClassVar[str] = "grpo"
    """Default advantage estimator (``algorithm.adv_estimator`` when that is null)."""
    branches: ClassVar[bool] = False
    """True when a prompt's rows are ``rollout.n_initial`` roots plus branch rows (so ``n_initial < n``)."""
    options_type: ClassVar[type | None] = None
    """Typed options (a dataclass) read from ``algorithm.options`` by :meth:`options`; None takes none. An
    algorithm with its own strategy sets the dataclass that strategy registered with, so the options are
    declared once (``tests/train/test_plugins.py``: one file holds both)."""
    section: ClassVar[str | None] = None
    """The built-in algorithms keep their options in their own config section (``appo``, ``arpo``,
    ``tree``: ``cfg.algorithm.<section>``, whose types are the strategies' options); None: ``options_type``."""

    def options(self, cfg: Any) -> Any:
        """This algorithm's typed options: its config section ``cfg.algorithm.<section>``, else
        ``options_type(**algorithm.options)`` (the config checked the keys and types when it was loaded), else
        None."""
        if self.section is not None:
            return getattr(cfg.algorithm, self.section)
        if self.options_type is None:
            return None
        return self.options_type(**dict(cfg.algorithm.options))

    def n_initial(self, cfg: Any) -> int:
        """Rows sampled from the prompt before any branching."""
        return cfg.rollout.n_initial if self.branches else cfg.rollout.n

    def strategy_config(self, cfg: Any) -> StrategyConfig:
        """The rollout strategy's input: the row budget ``rollout.n``, :meth:`n_initial`, and :meth:`options`
        when the strategy takes options (the strategy reads its own fields from them)."""
        takes = STRATEGY_OPTIONS.get(self.strategy)
        return StrategyConfig(n_total=cfg.rollout.n, n_initial=self.n_initial(cfg),
                              options=self.options(cfg) if takes is not None else None)

    def advantage_options(self, cfg: Any) -> dict:
        """Keyword options of the advantage estimator ``cfg.algorithm.adv_estimator``."""
        return {"norm_by_std": cfg.algorithm.norm_adv_by_std_in_grpo}

    def trained_rows(self, cfg: Any, rows: Sequence[Rollout]) -> list[bool]:
        """Per row, whether the loss trains on it (every row supplies advantage signal either way; which
        tokens of a row are trained is the row's own ``loss_mask``): by default every row, as GRPO, ARPO
        (a fork copies its parent's loss mask, so it trains on its whole response with its own advantage)
        and Tree-GRPO (a row is one root-to-leaf path) do (docs/algorithm.md, "Which rows are trained")."""
        return [True] * len(rows)

    def omega_anchor(self, cfg: Any) -> str | None:
        """The policy Omega compares the current one against while rolling out: ``previous`` (the policy
        before the last update), ``reference`` (the initial policy), ``rollout`` (the engine's own
        log-probs), or None when the algorithm does not score Omega."""
        return None

    def loss_options(self, cfg: Any) -> dict:
        """Fields of :class:`appo.train.update.UpdateOptions` this algorithm sets (e.g. future-KL)."""
        return {}

    def validate(self, cfg: Any) -> None:
        """Raise ``ValueError`` (one line: the key, its value, the fix) when ``cfg`` breaks a rule of this
        algorithm. The config loader turns it into a :class:`appo.config.ConfigError`."""
        r = cfg.rollout
        if self.branches and not r.n_initial < r.n:
            raise ValueError(
                f"rollout.n_initial={r.n_initial} must be < rollout.n={r.n} for algorithm.name={self.name} (the "
                f"rest are branch rows); fix: rollout.n_initial={max(1, r.n // 2)} or algorithm.name=grpo")

    def __repr__(self) -> str:
        return f"<algorithm {self.name!r}: strategy {self.strategy!r}, estimator {self.estimator!r}>"


ALGORITHMS: dict[str, Algorithm] = {}
"""Registered algorithms by name (the four built-ins once :mod:`appo.algorithms` is imported)."""


def register_algorithm(algorithm: Algorithm | type[Algorithm]) -> Algorithm | type[Algorithm]:
    """Add ``algorithm`` (an instance, or a subclass: instantiated without arguments) under its ``name``;
    refuses an empty or taken name. Usable as a class decorator; returns its argument."""
    algo = algorithm() if isinstance(algorithm, type) else algorithm
    if not isinstance(algo, Algorithm) or not algo.name:
        raise ValueError(f"{algorithm!r} is not an appo.algorithms.Algorithm with a name")
    register_unique(ALGORITHMS, algo.name, algo, "algorithm")
    return algorithm


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``: a registered name, or a plugin spec (``package.module:NAME`` or
    ``path/to/file.py:NAME``, :mod:`appo.plugins`; ``NAME`` is an :class:`Algorithm` instance or subclass).
    Raises :class:`appo.plugins.PluginError` (a ``ValueError``) naming the valid choices."""
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    if not is_plugin_spec(name):
        raise UnknownNameError(f"algorithm.name={name!r} is not one of {', '.join(sorted(ALGORITHMS))}, nor "
                               "'package.module:NAME' / 'path/to/file.py:NAME' naming an appo.algorithms.Algorithm")
    return load_plugin(name, Algorithm, label=f"algorithm.name={name!r}")
