"""Lenient outcome functions for analysing models that ignore the answer format.

The reference reward gives -1 to every response that fails the format check, and ``answer`` needs a
``\\boxed{}``; a small instruct model (SmolLM2-135M) that never writes either has a constant reward, so no
position can have influence. :func:`last_number_reward` scores what such a model does write: use it as
``--reward appo/analysis/outcomes.py:last_number_reward`` (or pass the function as ``reward=``).
"""

from __future__ import annotations

import re
from typing import Sequence

from appo.rewards.base import RewardOutput
from appo.rewards.extract import extract_answer, strip_tool_results
from appo.rewards.math_equiv import math_equal
from appo.types import Example

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (thousands separators dropped), or None."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def last_number_reward(examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
    """1.0 when the answer (the boxed one when the response has a box, else the last number outside tool
    results) is math-equivalent to a reference answer, else 0.0. No format gate: for outcome analysis of
    models that do not follow the protocol, not for training."""
    if len(examples) != len(responses):
        raise ValueError(f"last_number_reward got {len(examples)} examples and {len(responses)} responses")
    out = []
    for ex, resp in zip(examples, responses):
        boxed = extract_answer(resp)
        pred = boxed if boxed is not None else last_number(strip_tool_results(resp))
        ok = pred is not None and any(math_equal(pred, ref) for ref in ex.answers)
        out.append(RewardOutput(float(ok), {"acc": float(ok), "boxed": float(boxed is not None)}))
    return out
