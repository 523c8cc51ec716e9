"""``chain``: a running value carried through 3-4 Python calls, one operation per call.

Question: ``Start with 17. Then * 6, then + 45, then - 30. What is the result?``. Demonstration (one turn
per step, then the answer):

    <think>Step 1.</think>
    <python>print(17 * 6)</python>
    --- the loop appends <result>102</result> ---
    <think>Step 2.</think>
    <python>print(102 + 45)</python>
    --- <result>147</result> ---
    <think>Step 3.</think>
    <python>print(147 - 30)</python>
    --- <result>117</result> ---
    <think>I have the result.</think>
    <answer>\\boxed{117}</answer>

The steps apply left to right, so writing the whole chain as one Python expression is wrong whenever a
``*`` follows a ``+`` or ``-`` (Python's precedence differs): the task is solved by chaining. What decides
the outcome lies *inside* the trajectory: each call after the first must copy the previous call's result
(a value the model only sees in the tool's output) and the next operator and operand from the question,
so a slip in the middle of a rollout (one digit of a carried value, one operand) loses the reward while
the opening is the same fixed ``<think>Step 1.</think>`` for every question. That is the shape on which
APPO's mid-trajectory branch points should matter, unlike ``arith``, where the decision that matters
most is the opening one (call the tool or answer from memory).

Every intermediate value stays in ``[0, max_value]`` (a step that would leave it is redrawn), so
carried numbers have at most ``len(str(max_value))`` digits. Difficulty knobs: number of steps, the
start's digits, the operators, the multiplier range, the addends' digits, and ``labels``.

``labels=true`` numbers the operations in the question and names each one in the step's thought:

    Start with 17. Step 1: * 6. Step 2: + 45. Step 3: - 30. What is the result?
    <think>Step 2: + 45.</think>
    <python>print(102 + 45)</python>

Finding "the k-th operation" of an unlabelled list is a counting problem that a 4-layer, 1M-parameter
model does not learn from a few thousand demonstrations (it copies the first operand it sees); with
labels it is a copy keyed on ``Step k:``, which such a model learns. The decisions that matter stay in
the middle of the trajectory: which operation the thought copies, and the carried value.
"""

from __future__ import annotations

import random
from typing import Callable

from appo.data.procedural.arith import evaluate
from appo.data.procedural.base import Task, answer, register_task, think
from appo.types import Example


def _pair(name: str, value: tuple[int, int], low: int) -> tuple[int, int]:
    if len(value) != 2 or value[0] < low or value[1] < value[0]:
        raise ValueError(f"chain: {name}={value} must be (min, max) with {low} <= min <= max")
    return int(value[0]), int(value[1])


def step_label(k: int, op: str, operand: int) -> str:
    """``Step <k + 1>: <op> <operand>.``: how a labelled question lists step ``k`` (0-based) and how that
    step's thought repeats it (one format, so the thought is a copy of the question's text)."""
    return f"Step {k + 1}: {op} {operand}."


def run_chain(start: int, steps: list[tuple[str, int]]) -> list[int]:
    """The running values after each ``(op, operand)`` step applied left to right (one per step)."""
    values, current = [], start
    for op, operand in steps:
        current = evaluate(f"{current} {op} {operand}")
        values.append(current)
    return values


@register_task
class ChainTask(Task):
    """A start value and 3-4 operations applied in order, one Python call per operation."""

    name = "chain"
    tools = ("python",)

    def __init__(
        self,
        steps: tuple[int, int] = (3, 4),
        start_digits: tuple[int, int] = (1, 2),
        ops: tuple[str, ...] = ("+", "-", "*"),
        multiplier: tuple[int, int] = (2, 9),
        addend_digits: tuple[int, int] = (1, 2),
        max_value: int = 999,
        labels: bool = False,
        held_out: float = 0.1,
    ):
        """``steps``: (min, max) operations per question; ``start_digits``: digits of the start value;
        ``ops``: operators to draw from; ``multiplier``: (min, max) operand of ``*``; ``addend_digits``:
        digits of the operand of ``+`` / ``-``; ``max_value``: every running value stays in
        ``[0, max_value]``; ``labels``: number the operations in the question (``Step 2: + 45.``) and
        repeat the step's operation in its thought."""
        super().__init__(held_out)
        self.steps = _pair("steps", steps, 1)
        self.start_digits = _pair("start_digits", start_digits, 1)
        self.multiplier = _pair("multiplier", multiplier, 0)
        self.addend_digits = _pair("addend_digits", addend_digits, 1)
        bad = [op for op in ops if op not in ("+", "-", "*")]
        if not ops or bad:
            raise ValueError(f"chain: ops={ops} must be a non-empty subset of ('+', '-', '*')")
        if max_value < 10 ** self.start_digits[1] - 1:
            raise ValueError(f"chain: max_value={max_value} must be at least the largest start value "
                             f"({10 ** self.start_digits[1] - 1}); raise it or lower start_digits")
        if not isinstance(labels, bool):
            raise ValueError(f"chain: labels={labels!r} must be true or false")
        self.ops, self.max_value, self.labels = tuple(ops), int(max_value), labels

    def _digits_number(self, rng: random.Random, digits: tuple[int, int]) -> int:
        d = rng.randint(*digits)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    def _step(self, rng: random.Random, current: int) -> tuple[str, int]:
        """One operation that keeps the running value in range (``+ 0`` would be a no-op: operands >= 1)."""
        for _ in range(1000):
            op = rng.choice(self.ops)
            if op == "*":
                operand = rng.randint(*self.multiplier)
            else:
                operand = max(1, self._digits_number(rng, self.addend_digits))
            value = evaluate(f"{current} {op} {operand}")
            if 0 <= value <= self.max_value:
                return op, operand
        raise ValueError(f"chain: no operation keeps {current} within [0, {self.max_value}]; "
                         "widen max_value or the operators")

    def _draw(self, rng: random.Random) -> tuple[str, Callable[[str], Example]]:
        start = self._digits_number(rng, self.start_digits)
        steps, current = [], start
        for _ in range(rng.randint(*self.steps)):
            op, operand = self._step(rng, current)
            steps.append((op, operand))
            current = evaluate(f"{current} {op} {operand}")
        values = run_chain(start, steps)
        chain = ", then ".join(f"{op} {operand}" for op, operand in steps)
        key = f"{start}: {chain}"
        if self.labels:
            listed = " ".join(step_label(k, op, operand) for k, (op, operand) in enumerate(steps))
            question = f"Start with {start}. {listed} What is the result?"
        else:
            question = f"Start with {start}. Then {chain}. What is the result?"

        def build(example_id: str) -> Example:
            return Example(
                id=example_id,
                question=question,
                answers=(str(values[-1]),),
                kind="math",
                metric="math_equiv",
                data_source="proc_chain",
                extra_info={"task": self.name, "start": start, "steps": [list(s) for s in steps],
                            "values": values, "expression": key},
            )

        return key, build

    def demonstration(self, example: Example) -> list[str]:
        """One ``print(<running value> <op> <operand>)`` call per step, the running value being the previous
        call's result (with ``labels``, the step's thought names its operation); then the answer."""
        info = example.extra_info
        steps = [(op, int(operand)) for op, operand in info["steps"]]
        values = run_chain(int(info["start"]), steps)
        inputs = [int(info["start"]), *values[:-1]]
        turns = [think(step_label(k, op, operand) if self.labels else f"Step {k + 1}.")
                 + f"<python>print({x} {op} {operand})</python>"
                 for k, (x, (op, operand)) in enumerate(zip(inputs, steps))]
        return [*turns, think("I have the result.") + answer(str(values[-1]))]
