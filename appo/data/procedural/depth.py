"""``depth``: an L-step tool task whose one decisive decision sits at a chosen step (issue 24).

Question (L = 5, decisive step 3; the decisive step's listing says ``Check``)::

    Start with 5. Step 1: + 1. Step 2: + 1. Step 3: Check - 1. Step 4: + 1. Step 5: + 1. What is the result?

Demonstration: one labelled thought (a copy of the step's listing) and one ``print(<running value> <op>
<operand>)`` call per step, the running value carried from the previous tool result, then the answer, as in
``chain`` with ``labels``. Every step but the decisive one is a *plain* step, ``+ 1``. By default the start
(``start``) and the decisive operand (``operand``) are fixed too (5 and 1), so a question is its decisive step
and that step's operator, and the whole trajectory but one token is determined by them: nothing has to be
copied digit by digit. That is deliberate. The demo's 1M-parameter model does not learn to copy digits from
the question at the SFT sizes this machine affords: the first version (five random one-digit steps after a
two-digit start, 4000 x 4 SFT) copied the start wrong in 91-94% of rollouts, and a second (a one-digit start,
plain ``+ 1`` steps, operand 1-9, 2400 x 2) in 91-100% (chance), so both solved 0% and every reward was 0.
A stronger model can widen ``start`` and ``operand`` for more varied questions. Because so few questions
exist, each draw gets its own split key: the held-out stream draws the same questions as the training one
(the task measures learning one decision, not generalisation).

The decisive step is hard *by construction of the start model*: in a share ``noise`` of the SFT
demonstrations (chosen per example by a hash of its id) the call at the ``Check`` step writes the
opposite operator (``+`` <-> ``-``) to the one the question names, and the demonstration carries the
wrong value on to a wrong answer. The start model therefore learns to flip a coin with weight about
``noise`` on one token, the operator of the decisive call, and copies everything else. Nothing in the
question is hidden: the right operator is always in the question (and in the step's thought), so RL
can learn to copy it there too. This is label noise on one token, not an intrinsically hard step; it
is what makes the decisive token's position known exactly.

Every example records where that token is (``extra_info["decisive"]``): the regular expression
``DECISIVE_PATTERN`` (the operator of a ``<python>print(<value> <op>`` call), which match
(``occurrence`` = decisive step - 1, 0-based) and which group; :func:`appo.agent.oracle.decisive_token`
maps it to a token position of a rollout. ``depth`` is a list of 1-based steps to draw the decisive
step from (one per question); the study's tasks use one each (``depth=[1]`` early, ``[3]`` middle, ``[5]``
late), each with its own start model SFT'd on its own spec.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from appo.data.procedural.base import Task, answer, register_task, split_of, think
from appo.types import Example

DECISIVE_PATTERN = r"<python>print\(-?\d+ ([+-])"
"""Where the decisive operator sits in a response of the tag protocol: group 1 of the k-th match."""


def step_text(k: int, op: str, operand: int, decisive: bool) -> str:
    """``Step <k+1>: <op> <operand>.`` (``Step <k+1>: Check <op> <operand>.`` for the decisive step): the
    question's listing of step k (0-based) and its thought's copy. The thought starts with the step's number,
    so which step is decisive is a copy keyed on ``Step <k+1>:``, as in ``chain`` with ``labels``."""
    return f"Step {k + 1}: {'Check ' if decisive else ''}{op} {operand}."


def flip(op: str) -> str:
    """The wrong operator a noisy demonstration writes at the decisive step."""
    return "-" if op == "+" else "+"


@register_task
class DepthTask(Task):
    """L steps of ``+ 1`` and one decisive ``Check`` step (``+``/``-`` its operand), one Python call each."""

    name = "depth"
    tools = ("python",)

    def __init__(self, steps: int = 5, depth: tuple[int, ...] = (3,), noise: float = 0.45,
                 start: tuple[int, int] = (5, 5), operand: tuple[int, int] = (1, 1), held_out: float = 0.1):
        """``steps``: L, the operations per question; ``depth``: 1-based steps the decisive step is drawn from
        (each in ``1..steps``); ``noise``: share of SFT demonstrations whose decisive call writes the wrong
        operator (the start model's target error there); ``start``: (min, max) of the start value; ``operand``:
        (min, max) of the decisive step's operand. Every other step is ``+ 1``."""
        super().__init__(held_out)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"depth: steps={steps!r} must be an int >= 1")
        depth = (depth,) if isinstance(depth, int) else tuple(depth)
        if not depth or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= steps for d in depth):
            raise ValueError(f"depth: depth={list(depth)} must be a non-empty list of steps in 1..{steps}")
        if not 0.0 <= float(noise) < 1.0:
            raise ValueError(f"depth: noise={noise} must be a share in [0, 1)")
        for name, pair, low in (("start", start, 0), ("operand", operand, 1)):
            if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair) \
                    or not low <= pair[0] <= pair[1]:
                raise ValueError(f"depth: {name}={list(pair)} must be [min, max] integers with {low} <= min <= max")
        self.steps, self.depth, self.noise = steps, depth, float(noise)
        self.start, self.operand = (int(start[0]), int(start[1])), (int(operand[0]), int(operand[1]))

    def _draw(self, rng: random.Random) -> tuple[str, Callable[[str], Example]]:
        start = rng.randint(*self.start)
        d = rng.choice(self.depth)
        ops = [(rng.choice("+-"), rng.randint(*self.operand)) if k + 1 == d else ("+", 1) for k in range(self.steps)]
        values, x = [], start
        for op, a in ops:
            x = x + a if op == "+" else x - a
            values.append(x)
        listed = " ".join(step_text(k, op, a, k + 1 == d) for k, (op, a) in enumerate(ops))
        question = f"Start with {start}. {listed} What is the result?"
        key = f"{rng.random()}:{start}:{ops}:{d}"  # a draw's own key: both splits draw the same few questions

        def build(example_id: str) -> Example:
            return Example(
                id=example_id, question=question, answers=(str(values[-1]),), kind="math", metric="math_equiv",
                data_source="proc_depth",
                extra_info={"task": self.name, "start": start, "steps": [list(s) for s in ops], "values": values,
                            "decisive_step": d,
                            "decisive": {"pattern": DECISIVE_PATTERN, "occurrence": d - 1, "group": 1}},
            )

        return key, build

    def noisy(self, example: Example) -> bool:
        """Whether this example's demonstration writes the wrong operator at the decisive step (a hash of
        its id falls in the top ``noise`` share)."""
        return self.noise > 0 and split_of(f"{example.id}:noise", 1.0 - self.noise) == "train"

    def demonstration(self, example: Example) -> list[str]:
        """One labelled thought and ``print(<value> <op> <operand>)`` per step, the value carried from the
        previous result; in a ``noise`` share of examples the decisive call's operator is flipped and the wrong
        value is carried to the answer (the start model's error profile); then the answer."""
        info = example.extra_info
        d, x, turns = int(info["decisive_step"]), int(info["start"]), []
        flipped = self.noisy(example)
        for k, (op, a) in enumerate(info["steps"]):
            written = flip(op) if flipped and k + 1 == d else op
            turns.append(think(step_text(k, op, int(a), k + 1 == d)) + f"<python>print({x} {written} {a})</python>")
            x = x + int(a) if written == "+" else x - int(a)
        return [*turns, think("I have the result.") + answer(str(x))]


_CALL = re.compile(r"<python>(.*?)</python>", re.S)


def first_wrong_step(example: Example, response: str) -> int:
    """The 1-based step of a response's first wrong call (the k-th ``<python>`` call is right iff it is exactly
    ``print(<correct running value> <op_k> <operand_k>)``; a missing call is wrong); ``L + 1`` when every call
    is right but the answer is not; 0 when the whole response is right. Leaves out: partial credit."""
    info = example.extra_info
    calls = _CALL.findall(response)
    inputs = [int(info["start"]), *info["values"][:-1]]
    for k, (x, (op, a)) in enumerate(zip(inputs, info["steps"])):
        if k >= len(calls) or calls[k].strip() != f"print({x} {op} {a})":
            return k + 1
    boxed = re.search(r"\\boxed\{(-?\d+)\}", response)
    return 0 if boxed and boxed.group(1) == str(info["values"][-1]) else len(info["steps"]) + 1


def error_profile(examples: list[Example], responses: list[str]) -> dict[str, float]:
    """Per-step error rates of responses to ``depth`` examples (one response per entry; repeat an example for
    several samples): ``step_k`` = P(step k wrong | steps before it right), ``answer`` = P(answer wrong | every
    call right), ``decisive`` = the same conditional rate at each example's own decisive step, ``op_step_k`` =
    share of responses whose k-th call (when made) writes another operator than the question's (whatever the
    carried value), ``acc`` = share fully right, ``n`` = responses. Leaves out: which token of a wrong call
    erred."""
    if len(examples) != len(responses) or not examples:
        raise ValueError(f"error_profile needs one response per example, got {len(examples)} and {len(responses)}")
    steps = max(len(e.extra_info["steps"]) for e in examples)
    first = [first_wrong_step(e, r) for e, r in zip(examples, responses)]
    out: dict[str, float] = {"n": float(len(first)), "acc": sum(f == 0 for f in first) / len(first)}
    for k in range(1, steps + 2):
        reached = [f for f in first if f == 0 or f >= k]
        name = f"step_{k}" if k <= steps else "answer"
        out[name] = sum(f == k for f in reached) / len(reached) if reached else float("nan")
    for k in range(1, steps + 1):  # the operator alone, whatever the carried value: the decisive step's coin
        ops = [_call_op(e, r, k) for e, r in zip(examples, responses)]
        made = [o for o in ops if o is not None]
        out[f"op_step_{k}"] = sum(not o for o in made) / len(made) if made else float("nan")
    reached_d = [(f, e.extra_info["decisive_step"]) for f, e in zip(first, examples)
                 if f == 0 or f >= e.extra_info["decisive_step"]]
    out["decisive"] = sum(f == d for f, d in reached_d) / len(reached_d) if reached_d else float("nan")
    return out


def _call_op(example: Example, response: str, k: int) -> bool | None:
    """Whether the k-th (1-based) call of ``response`` writes step k's operator; None when there is no k-th call
    of the form ``print(<value> <op> ...``."""
    m = [x for x in re.finditer(DECISIVE_PATTERN, response)]
    if k > len(m):
        return None
    return m[k - 1].group(1) == example.extra_info["steps"][k - 1][0]
