"""Where the start model's decisive error sits on the ``depth`` task (issue 24): for each dumped row that reaches the
decisive step, whether that step's thought (``<think>Step k: Check <op>``) and the decisive call's operator (the
k-th ``print(<value> <op>`` call, :data:`appo.data.procedural.depth.DECISIVE_PATTERN`) name the question's operator.

The task is built so that only the call's operator is uncertain (the SFT data flips it and keeps the thought right);
a start model that also flips the thought has a second uncertain token just before the decisive one, which does not
change the reward but draws entropy-based branch points and makes the rows' prefixes differ.

    python scripts/depth_thought_vs_call.py runs/study_depth_late/depth_late/runs/grpo/seed*/rollouts/step_000001.json
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from appo.data.procedural.depth import DECISIVE_PATTERN

STEP = re.compile(r"Step (\d+): Check ([+-])")


def thought_and_call(question: str, text: str) -> str | None:
    """``"thought right|WRONG, call right|WRONG"`` for one response to a ``depth`` question (None when the question
    has no ``Check`` step); ``"no decisive step"`` when the response has no thought or call for it."""
    m = STEP.search(question)
    if m is None:
        return None
    k, right = int(m.group(1)), m.group(2)
    thought = re.search(rf"<think>Step {k}: Check ([+-])", text)
    calls = list(re.finditer(DECISIVE_PATTERN, text))
    if thought is None or len(calls) < k:
        return "no decisive step"
    word = {True: "right", False: "WRONG"}
    return f"thought {word[thought.group(1) == right]}, call {word[calls[k - 1].group(1) == right]}"


def count(path: str | Path) -> Counter:
    """:func:`thought_and_call` over every row of one rollout dump."""
    c: Counter = Counter()
    for prompt in json.loads(Path(path).read_text())["prompts"]:
        for row in prompt["rows"]:
            label = thought_and_call(prompt["question"], "".join(row["tokens"]))
            if label is not None:
                c[label] += 1
    return c


def main() -> None:
    total: Counter = Counter()
    for path in sys.argv[1:]:
        c = count(path)
        total += c
        n = sum(c.values())
        print(path, n, {k: f"{v} ({100 * v / n:.0f}%)" for k, v in sorted(c.items())})
    n = sum(total.values())
    if len(sys.argv) > 2 and n:
        print("all", n, {k: f"{v} ({100 * v / n:.0f}%)" for k, v in sorted(total.items())})


if __name__ == "__main__":
    main()
