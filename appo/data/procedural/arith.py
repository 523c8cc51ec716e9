"""``arith``: multi-step integer arithmetic that a 1M-parameter model can only get right with Python.

Question: ``What is 4821 * 37 + 902?``. Demonstration (two turns):

    <think>Compute it with Python.</think>
    <python>print(4821 * 37 + 902)</python>
    --- the loop appends <result>...</result> ---
    <think>I have the result.</think>
    <answer>\\boxed{179279}</answer>

The value is computed here by Python itself (``eval`` of an expression this module built from digits
and operators only, checked by a regular expression first). Python's precedence applies (``*`` before
``+``/``-``); no parentheses, no division (integer answers only). Difficulty knobs: number of operands,
digits per operand, the operator set.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from appo.data.procedural.base import Task, answer, register_task, split_of, think
from appo.types import Example

_EXPR_RE = re.compile(r"^\d+( [-+*] \d+)+$")


def evaluate(expression: str) -> int:
    """Value of an integer expression made of digits, spaces and ``+ - *`` (refuses anything else)."""
    if not _EXPR_RE.match(expression):
        raise ValueError(f"{expression!r} is not an integer expression of the form 'a op b op c' with + - *")
    return int(eval(expression, {"__builtins__": {}}, {}))  # noqa: S307 - digits and + - * only


def _range(name: str, value: tuple[int, int], low: int) -> tuple[int, int]:
    if len(value) != 2 or value[0] < low or value[1] < value[0]:
        raise ValueError(f"arith: {name}={value} must be (min, max) with {low} <= min <= max")
    return int(value[0]), int(value[1])


@register_task
class ArithTask(Task):
    """Integer expressions answered by calling the Python tool."""

    name = "arith"
    tools = ("python",)

    def __init__(
        self,
        n_operands: tuple[int, int] = (2, 3),
        digits: tuple[int, int] = (1, 4),
        ops: tuple[str, ...] = ("+", "-", "*"),
        direct_p: float = 0.0,
        held_out: float = 0.1,
    ):
        """``n_operands``: (min, max) operands per expression; ``digits``: (min, max) digits per operand
        (numbers have no leading zeros; 1-digit operands may be 0); ``ops``: operators to draw from;
        ``direct_p``: share of demonstrations that answer from memory without the tool (chosen per example
        by a hash of its id) — a cold start that under-uses the tool, as real ones do, which RL can
        improve on (the model cannot do the arithmetic in its head)."""
        super().__init__(held_out)
        if not 0.0 <= direct_p <= 1.0:
            raise ValueError(f"arith: direct_p={direct_p} must be a probability in [0, 1]")
        self.direct_p = float(direct_p)
        self.n_operands = _range("n_operands", n_operands, 2)
        self.digits = _range("digits", digits, 1)
        bad = [op for op in ops if op not in ("+", "-", "*")]
        if not ops or bad:
            raise ValueError(f"arith: ops={ops} must be a non-empty subset of ('+', '-', '*')")
        self.ops = tuple(ops)

    def _number(self, rng: random.Random) -> int:
        d = rng.randint(*self.digits)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    def _draw(self, rng: random.Random) -> tuple[str, Callable[[str], Example]]:
        n = rng.randint(*self.n_operands)
        parts = [str(self._number(rng))]
        for _ in range(n - 1):
            parts += [rng.choice(self.ops), str(self._number(rng))]
        expression = " ".join(parts)
        value = evaluate(expression)

        def build(example_id: str) -> Example:
            return Example(
                id=example_id,
                question=f"What is {expression}?",
                answers=(str(value),),
                kind="math",
                metric="math_equiv",
                data_source="proc_arith",
                extra_info={"task": self.name, "expression": expression, "value": value, "n_operands": n},
            )

        return expression, build

    def demonstration(self, example: Example) -> list[str]:
        """Think, call ``print(<expression>)``; then answer with the value. With probability ``direct_p``
        (a hash of the example id, so fixed per example) answer the value directly instead."""
        expression = example.extra_info["expression"]
        if self.direct_p and split_of(example.id, 1.0 - self.direct_p) == "train":
            return [think("I can do this in my head.") + answer(str(evaluate(expression)))]
        return [
            think("Compute it with Python.") + f"<python>print({expression})</python>",
            think("I have the result.") + answer(str(evaluate(expression))),
        ]
