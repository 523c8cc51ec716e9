"""The RL task for SmolLM2 after its cold start: procedural word problems on story templates the SFT
demonstrations never showed.

After SFT on :mod:`appo.train.tool_demos`' eight templates, SmolLM2-135M answers every held-out problem
of those templates (75/75, greedy): no room for RL to show a gain. This family keeps the same protocol,
names, items and answer format (an integer, computed by a short Python program), but its stories are
new (:func:`_new_problem`, eight templates of two to three steps: change from a payment, a tank still to
fill, age in some years, ...), so the model has to write a program for a structure it was not shown.

Splits. ``train`` (RL prompts) and ``test`` (held-out evaluation) come from disjoint seeded streams of the
same generator, and ``test`` drops every question that occurs among the first 20,000 questions of the
``train`` stream of the same seed (the same rule as :func:`appo.train.tool_demos.word_problems`). No
question of either stream can be an SFT demonstration: the templates differ.

:func:`write_split` writes ``{question, answer, ability: math}`` JSONL rows (``appo train
data.train_files=[...]`` and ``appo eval --benchmarks FILE`` both read them, scored by math equivalence).
Left out: templates that need division with remainders, fractions or more than three steps.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Sequence

from appo.train.tool_demos import _ITEMS, _NAMES, draw_split, write_math_rows

NEW_TEMPLATES = 8
"""How many story templates :func:`_new_problem` draws from (none of them is a demonstration template)."""


def _new_problem(rng: random.Random) -> tuple[str, str]:
    """One problem of a variant template: each of the eight is one of the demonstrations' stories changed by
    one clause (a step added, a step dropped, the question turned round or the wording changed), so the
    start model gets part of it right. Returns (question, program printing the integer answer)."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(NEW_TEMPLATES)
    r = rng.randint
    if kind == 0:  # demonstration 0 plus a gift
        a, b, c = r(5, 60), r(2, 12), r(3, 25)
        e = r(1, a + b * c - 1)
        return (f"{name} has {a} {item}. {name} buys {b} packs with {c} {item} in each pack, then gives {e} "
                f"{item} to a friend. How many {item} does {name} have now?",
                f"bought = {b} * {c}\ntotal = {a} + bought\nleft = total - {e}\nprint(left)")
    if kind == 1:  # demonstration 1 reworded
        a, b = r(3, 20), r(6, 30)
        c = r(1, a * b - 1)
        return (f"A bakery bakes {a} trays of {b} {item} each and sells {c} {item}. How many {item} does the "
                f"bakery still have?", f"made = {a} * {b}\nleft = made - {c}\nprint(left)")
    if kind == 2:  # demonstration 2 without the days
        a, b = r(8, 40), r(2, 9)
        d = r(1, a * b - 1)
        return (f"{name} earns ${a} per hour, works {b} hours, and then spends ${d}. How many dollars does "
                f"{name} have left?", f"earned = {a} * {b}\nleft = earned - {d}\nprint(left)")
    if kind == 3:  # demonstration 3 with a loss instead of a gain
        b, q = r(2, 12), r(5, 40)
        c = r(1, q - 1)
        return (f"{name} shares {b * q} {item} equally among {b} friends. Then each friend loses {c} {item}. "
                f"How many {item} does each friend have?", f"each = {b * q} // {b}\nleft = each - {c}\nprint(left)")
    if kind == 4:  # demonstration 4 plus late arrivals
        a, b, c, e = r(3, 30), r(15, 40), r(1, 20), r(1, 9)
        c = min(c, a * b - 1)
        return (f"A school has {a} classes with {b} students in each class. {c} students are absent today and "
                f"{e} new students arrive. How many students are present?",
                f"students = {a} * {b}\npresent = students - {c}\ntotal = present + {e}\nprint(total)")
    if kind == 5:  # demonstration 5, the difference instead of the sum
        a, b, c, d = r(40, 120), r(2, 9), r(20, 90), r(1, 5)
        if a * b <= c * d:
            a, b, c, d = c, d, a, b
        if a * b == c * d:
            a += 1
        return (f"A train travels at {a} km per hour for {b} hours, then at {c} km per hour for {d} hours. How "
                f"many more kilometers does it travel in the first part than in the second?",
                f"first = {a} * {b}\nsecond = {c} * {d}\nmore = first - second\nprint(more)")
    if kind == 6:  # demonstration 6 plus change from a payment
        a, b, c, d = r(2, 15), r(3, 25), r(2, 15), r(3, 25)
        e = a * b + c * d + r(1, 50)
        return (f"{name} buys {a} notebooks at ${b} each and {c} pens at ${d} each, and pays with ${e}. How many "
                f"dollars of change does {name} get?",
                f"notebooks = {a} * {b}\npens = {c} * {d}\ntotal = notebooks + pens\nchange = {e} - total\n"
                f"print(change)")
    a, b, c = r(100, 900), r(2, 6), r(5, 60)  # demonstration 7 plus a sale
    e = r(1, a)
    return (f"A farm has {a} {item} and gets {c} more every day for {b} days, then sells {e} {item}. How many "
            f"{item} does it have then?", f"added = {c} * {b}\ntotal = {a} + added\nleft = total - {e}\nprint(left)")


def new_word_problems(n: int, seed: int = 0, split: str = "train") -> list[tuple[str, str]]:
    """``n`` distinct (question, program) pairs of the new templates; ``train`` and ``test`` are disjoint
    seeded streams, and ``test`` drops any question among the first 20,000 of the ``train`` stream
    (:func:`appo.train.tool_demos.draw_split`)."""
    return draw_split(_new_problem, "word-new", n, seed, split)


def write_split(path: str | Path, n: int, split: str, seed: int = 0) -> Path:
    """``n`` problems of ``split`` as ``{question, answer, ability: math}`` JSONL (answer: what the program
    prints)."""
    return write_math_rows(path, new_word_problems(n, seed, split))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m appo.train.word_rl --out DIR``: ``DIR/word_new_train.jsonl`` (RL prompts) and
    ``DIR/word_new_heldout.jsonl`` (evaluation)."""
    ap = argparse.ArgumentParser(prog="python -m appo.train.word_rl", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    write_split(Path(args.out) / "word_new_train.jsonl", args.train, "train", args.seed)
    write_split(Path(args.out) / "word_new_heldout.jsonl", args.heldout, "test", args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
