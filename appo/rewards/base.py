"""The reward interface: a batch of (example, response text) pairs in, one RewardOutput per pair out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from appo.types import Example


@dataclass(frozen=True)
class RewardOutput:
    """The score of one response and the metrics behind it."""

    score: float
    """Scalar reward used for advantages."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Named parts (``acc``, ``f1``, ``em``, ``format_ok``, ...), averaged into the step's metrics."""


class RewardFn(Protocol):
    """Scores a batch. ``responses[i]`` is the full decoded response (model text and tool results)."""

    def __call__(self, examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
        ...
