"""The registry of named reward functions, and :func:`get_reward` that resolves a config string.

A reward spec is either a registered name (``default``, ``arpo``, ``answer``, ``math``, ``qa_f1``,
``qa_em``, ``format``, ``llm_judge``) or ``path/to/file.py:function`` / ``package.module:function`` for a
user's own function (see :mod:`appo.rewards.custom` for the signatures accepted).
"""

from __future__ import annotations

from typing import Callable

from appo.plugins import UnknownNameError, register_unique
from appo.rewards.base import RewardFn
from appo.rewards.builtin import BUILTIN_REWARDS
from appo.rewards.llm_judge import llm_judge

REWARDS: dict[str, RewardFn] = {**BUILTIN_REWARDS, "llm_judge": llm_judge}
"""Named reward functions; every value implements :class:`~appo.rewards.base.RewardFn`."""


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding a batch reward function to :data:`REWARDS` under ``name``; refuses duplicates."""

    def decorator(fn: RewardFn) -> RewardFn:
        return register_unique(REWARDS, name, fn, "reward")

    return decorator


def get_reward(spec: str) -> RewardFn:
    """Resolve ``spec``: a name in :data:`REWARDS`, or ``path/to/file.py:function`` (imported on each call)."""
    if spec in REWARDS:
        return REWARDS[spec]
    if ":" in spec or spec.endswith(".py"):
        from appo.rewards.custom import load_custom_reward

        return load_custom_reward(spec)
    raise UnknownNameError(
        f"unknown reward {spec!r}; use one of {sorted(REWARDS)} or a custom function as "
        "'path/to/file.py:function' or 'package.module:function'"
    )
