"""The one record every dataset loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TaskKind = Literal["math", "qa"]
Metric = Literal["math_equiv", "f1", "em"]


@dataclass(frozen=True)
class Example:
    """A question with its reference answers, normalised across verl parquet, benchmarks and generators."""

    id: str
    """Stable id: ``<source>/<row index>`` for files, ``<task>/<seed>/<index>`` for generated tasks."""
    question: str
    """The user question, without any system prompt."""
    answers: tuple[str, ...]
    """Reference answers; QA lists aliases, math has one canonical answer (LaTeX or plain)."""
    kind: TaskKind
    """``math`` (scored by equivalence) or ``qa`` (scored by F1 / EM against aliases)."""
    metric: Metric
    """The headline metric for this example."""
    data_source: str
    """Dataset name (``gsm8k``, ``hotpotqa``, ``proc_arith``, ...), as verl's ``data_source``."""
    messages: tuple[dict, ...] | None = None
    """Prompt messages when the data carries its own (verl rows: system + user); None = build from question."""
    extra_info: dict = field(default_factory=dict)
    """Anything else the source provides (verl ``extra_info``, difficulty knobs, ...)."""
