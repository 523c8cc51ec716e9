"""Several reward functions with weights, as TRL's ``reward_funcs`` / ``reward_weights``.

The row's reward is the weighted sum over the functions,

    R = sum_k w_k * r_k          (w_k = 1 for every k when no weights are given, as in TRL),

where ``r_k`` is function k's score for the row. Each function's score is logged as its own metric,
``<name>`` (so ``reward/<name>`` in the step's metrics; ``name`` is the registered name or the function
name of ``file.py:function``, with ``_2``, ``_3``... on repeats). Each function's own metrics (``acc``,
``f1``, ``format_ok``...) are kept under their names too; when two functions report the same metric, the
first function's value is the plain key and the later one's is ``<name>/<key>``.

Differences from TRL: a TRL-style function returning None for a row scores it 0 (appo has one reward per
row; the ``skipped`` metric shows the rate) where TRL sums over the functions that apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from appo.rewards.base import RewardFn, RewardOutput
from appo.rewards.registry import get_reward
from appo.types import Example


def reward_name(spec: str) -> str:
    """The metric name of a reward spec: a registered name as is, ``file.py:fn`` -> ``fn``."""
    return spec.rpartition(":")[2] if ":" in spec else spec


@dataclass
class WeightedRewards:
    """A :class:`~appo.rewards.base.RewardFn` summing named reward functions with weights (module docstring)."""

    names: tuple[str, ...]
    """Metric name of each function (unique)."""
    fns: tuple[RewardFn, ...]
    """The functions, in order."""
    weights: tuple[float, ...]
    """One weight per function."""

    def __call__(self, examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
        """Score a batch with every function and combine (R = sum_k w_k r_k)."""
        per_fn = []
        for name, fn in zip(self.names, self.fns):
            out = list(fn(examples, responses))
            if len(out) != len(examples):
                raise ValueError(f"reward {name!r} returned {len(out)} outputs for {len(examples)} responses")
            per_fn.append(out)
        combined = []
        for row in zip(*per_fn):
            metrics: dict[str, float] = {}
            for name, output in zip(self.names, row):
                metrics[name] = output.score
                for key, value in output.metrics.items():
                    metrics[key if key not in metrics else f"{name}/{key}"] = value
            combined.append(RewardOutput(sum(w * o.score for w, o in zip(self.weights, row)), metrics))
        return combined


def build_weighted(funcs: Sequence[str | RewardFn], weights: Sequence[float] = (),
                   kwargs: Sequence[dict] | None = None) -> WeightedRewards:
    """Resolve ``funcs`` (registered names, ``file.py:function`` specs, or callables) with ``weights``
    (empty: all 1.0). Raises ValueError naming the mismatch when the counts differ or a weight is not finite."""
    if not funcs:
        raise ValueError("reward.funcs is empty; list at least one reward (a registered name or file.py:function)")
    if weights and len(weights) != len(funcs):
        raise ValueError(f"reward.weights has {len(weights)} entries for {len(funcs)} reward.funcs; give one weight "
                         "per function (or none: all 1.0)")
    ws = tuple(float(w) for w in weights) if weights else (1.0,) * len(funcs)
    if not all(math.isfinite(w) for w in ws):
        raise ValueError(f"reward.weights must be finite numbers, got {list(weights)}")
    names: list[str] = []
    fns: list[RewardFn] = []
    for spec in funcs:
        base = reward_name(spec) if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
        fns.append(get_reward(spec) if isinstance(spec, str) else spec)
    return WeightedRewards(tuple(names), tuple(fns), ws)
