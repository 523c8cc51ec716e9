"""Cold-start tool-use demonstrations for a real instruct model, built here with no model and no hub.

Two sources, both answered by a Python program that the real sandboxed interpreter runs:

- **GSM8K worked solutions.** A GSM8K solution marks every computation with a calculator annotation,
  ``... 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs``. :func:`gsm8k_program` turns the annotations into one
  assignment each (``x1 = 16 - 3 - 4``), replacing a literal that equals an earlier step's value by that
  step's variable (``x2 = x1 * 2``), and prints the last one. The bundled *training* mix
  (``data/train/train_10k.parquet``) has no such rows: its 5,000 math rows are competition problems with
  an answer and no worked solution, so no program can be written for them without a model. The worked
  solutions here come from the bundled GSM8K file (``data/benchmarks/gsm8k.jsonl``) from row
  :data:`GSM8K_HELD_OUT` on; rows ``0 .. GSM8K_HELD_OUT - 1`` (what ``appo eval --benchmarks gsm8k
  --limit 200`` evaluates) are never read for demonstrations.
- **Procedural arithmetic word problems** (:func:`word_problems`): a few story templates with drawn
  numbers and names, two or three steps each, the program written with named variables. Train and
  held-out problems come from disjoint seeded streams and any held-out question text that also occurs in
  the train stream is dropped.

Each demonstration has two model turns in the ``tags`` protocol (the reward's format)::

    <think>I will compute it with Python.</think>
    <python>x1 = 16 - 3 - 4
    x2 = x1 * 2
    print(x2)</python>
    --- the agent loop appends <result>\\n18\\n</result> ---
    <think>The result is 18.</think>
    <answer>\\boxed{18}</answer>

The call body has no newline after ``<python>`` or before ``</python>``: the protocol strips a body, and
``appo serve`` writes a call back as ``<python>body</python>``, so these turns are the same text whether a
rollout, SFT or a chat client carries them.

A demonstration is kept only when (1) its program runs in the sandbox (:class:`appo.tools.PythonTool`)
without error, (2) the printed value is math-equivalent to the gold answer, and (3) the full response
(both turns with the sandbox's own result text between them, as the loop renders it) gets reward 1.0
from the ``default`` reward (format gate passed, ``acc`` 1). :func:`build` returns the kept rows and the
count of each rejection reason. Left out: search demonstrations (the bundled QA rows have no worked
search traces), answers from memory without the tool, and multi-call demonstrations.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

GSM8K_HELD_OUT = 200
"""GSM8K rows ``0 .. GSM8K_HELD_OUT - 1`` are the held-out evaluation slice and never become demonstrations."""
THINK_CALL = "<think>I will compute it with Python.</think>\n"
"""The thought before the call (one fixed sentence: the model learns when to call, not what to say)."""

_ANNOT_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_EXPR_OK = re.compile(r"^[\d.\s+\-*/()]+$")
_NUM_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)(?![\w.])")


def _same(a: str, b: str) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except ValueError:
        return False


def gsm8k_program(solution: str) -> str | None:
    """A Python program for a GSM8K worked solution, from its ``<<expr=value>>`` annotations; None when
    there are none or an expression holds anything but numbers, ``+ - * /`` and parentheses.

    Step ``i`` becomes ``x{i} = expr`` where every number in ``expr`` equal to an earlier annotation's
    value is replaced by the latest such step's variable; the program prints the last step. Leaves out:
    solutions whose final answer is stated without an annotation (the printed value then differs from the
    gold answer and :func:`build` rejects the row).
    """
    steps = _ANNOT_RE.findall(solution)
    if not steps:
        return None
    lines: list[str] = []
    values: list[tuple[str, str]] = []  # (value text, variable) of earlier steps
    for i, (expr, value) in enumerate(steps, 1):
        expr = expr.replace(",", "").strip()
        if not expr or not _EXPR_OK.match(expr) or not re.search(r"\d", expr):
            return None

        def sub(m: re.Match, _values=tuple(values)) -> str:
            for v, var in reversed(_values):
                if _same(m.group(1), v):
                    return var
            return m.group(1)

        expr = _NUM_RE.sub(sub, expr)
        expr = re.sub(r"\s*([+\-*/])\s*", r" \1 ", expr).strip()
        var = f"x{i}"
        lines.append(f"{var} = {expr}")
        values.append((value.replace(",", "").strip(), var))
    lines.append(f"print({values[-1][1]})")
    return "\n".join(lines)


# ------------------------------------------------------------------------- procedural word problems
_NAMES = ("Ana", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jamal", "Kira", "Leo", "Maya",
          "Noah", "Olga", "Pablo", "Rosa", "Sam", "Tara", "Umar")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "stamps", "coins")


def _problem(rng: random.Random) -> tuple[str, str]:
    """One word problem: (question, program). The program prints the answer (an integer)."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(8)
    r = rng.randint
    if kind == 0:
        a, b, c = r(5, 60), r(2, 12), r(3, 25)
        return (f"{name} has {a} {item}. {name} buys {b} packs with {c} {item} in each pack. How many {item} does "
                f"{name} have now?", f"bought = {b} * {c}\ntotal = {a} + bought\nprint(total)")
    if kind == 1:
        a, b = r(3, 20), r(6, 30)
        c = r(1, a * b - 1)
        return (f"A baker fills {a} trays with {b} {item} on each tray and sells {c} of them. How many {item} are "
                f"left?", f"made = {a} * {b}\nleft = made - {c}\nprint(left)")
    if kind == 2:
        a, b, c = r(8, 40), r(2, 9), r(3, 7)
        d = r(1, a * b * c - 1)
        return (f"{name} earns ${a} per hour, works {b} hours a day for {c} days, and then spends ${d}. How many "
                f"dollars does {name} have left?",
                f"per_day = {a} * {b}\nearned = per_day * {c}\nleft = earned - {d}\nprint(left)")
    if kind == 3:
        b, q, c = r(2, 12), r(3, 40), r(1, 30)
        return (f"{name} shares {b * q} {item} equally among {b} friends. Then each friend gets {c} more {item}. "
                f"How many {item} does each friend have?", f"each = {b * q} // {b}\ntotal = each + {c}\nprint(total)")
    if kind == 4:
        a, b, c = r(3, 30), r(15, 40), r(1, 20)
        c = min(c, a * b - 1)
        return (f"A school has {a} classes with {b} students in each class. {c} students are absent today. How "
                f"many students are present?", f"students = {a} * {b}\npresent = students - {c}\nprint(present)")
    if kind == 5:
        a, b, c, d = r(40, 120), r(2, 9), r(20, 90), r(1, 5)
        return (f"A train travels at {a} km per hour for {b} hours, then at {c} km per hour for {d} hours. How "
                f"many kilometers does it travel in total?",
                f"first = {a} * {b}\nsecond = {c} * {d}\ntotal = first + second\nprint(total)")
    if kind == 6:
        a, b, c = r(2, 15), r(3, 25), r(2, 15)
        d = r(3, 25)
        return (f"{name} buys {a} notebooks at ${b} each and {c} pens at ${d} each. How many dollars does "
                f"{name} spend?", f"notebooks = {a} * {b}\npens = {c} * {d}\ntotal = notebooks + pens\nprint(total)")
    a, b, c = r(100, 900), r(2, 6), r(5, 60)
    return (f"A farm has {a} {item}. It packs them into {b} equal boxes and gives away {c} {item} from one box. "
            f"How many {item} are still in that box?" if a % b == 0 and a // b > c else
            f"A farm has {a} {item} and gets {c} more every day for {b} days. How many {item} does it have then?",
            f"per_box = {a} // {b}\nleft = per_box - {c}\nprint(left)" if a % b == 0 and a // b > c else
            f"added = {c} * {b}\ntotal = {a} + added\nprint(total)")


def draw_split(problem, stream: str, n: int, seed: int = 0, split: str = "train") -> list[tuple[str, str]]:
    """``n`` distinct (question, program) pairs from ``problem(rng)``; ``split`` ``train`` or ``test`` draws from
    disjoint seeded streams (``f"{stream}/{split}/{seed}"``), and ``test`` drops any question that the first
    20,000 train questions of the same seed contain."""
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r} must be 'train' or 'test'")
    rng = random.Random(f"{stream}/{split}/{seed}")
    banned: set[str] = set()
    if split == "test":
        train_rng = random.Random(f"{stream}/train/{seed}")
        banned = {problem(train_rng)[0] for _ in range(20_000)}
    out: dict[str, str] = {}
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct word problems")
        q, prog = problem(rng)
        if q not in banned and q not in out:
            out[q] = prog
    return list(out.items())


def word_problems(n: int, seed: int = 0, split: str = "train") -> list[tuple[str, str]]:
    """``n`` distinct (question, program) pairs of the demonstrations' templates (:func:`draw_split`)."""
    return draw_split(_problem, "word-problems", n, seed, split)


# ------------------------------------------------------------------------------------------- build
@dataclass
class BuildReport:
    """What :func:`build` kept and why it dropped the rest."""

    kept: Counter = field(default_factory=Counter)
    """Kept demonstrations per source."""
    rejected: Counter = field(default_factory=Counter)
    """Dropped candidates per ``source/reason`` (``no_program``, ``sandbox_error``, ``wrong_value``,
    ``reward``)."""


def demo_turns(program: str, printed: str) -> list[str]:
    """The two model turns of a demonstration (module docstring): call, then the boxed printed value."""
    return [f"{THINK_CALL}<python>{program}</python>",
            f"<think>The result is {printed}.</think>\n<answer>\\boxed{{{printed}}}</answer>"]


def check_demo(question: str, gold: str, program: str, python_tool, reward_fn) -> tuple[list[str] | None, str]:
    """Run ``program`` in the sandbox and score the rendered response; ``(turns, "")`` when it passes,
    ``(None, reason)`` otherwise (see :class:`BuildReport`)."""
    from appo.agent.protocols import TagsProtocol
    from appo.rewards.math_equiv import math_equal
    from appo.types import Example

    result = python_tool.safe_call({"code": program})
    printed = result.text.strip()
    if not result.ok or "\n" in printed:
        return None, "sandbox_error"
    if not math_equal(printed, gold):
        return None, "wrong_value"
    turns = demo_turns(program, printed)
    response = turns[0] + TagsProtocol().result_text(None, result, after_eos=False) + turns[1]
    example = Example(id="check", question=question, answers=(gold,), kind="math", metric="math_equiv",
                      data_source="check")
    if reward_fn([example], [response])[0].score != 1.0:
        return None, "reward"
    return turns, ""


def candidates(n_word: int, gsm8k_limit: int | None, seed: int, data_dir: str | None
               ) -> list[tuple[str, str, str, str | None]]:
    """(source, question, gold answer, program or None) for every candidate demonstration."""
    from appo.data import load_benchmark

    out: list[tuple[str, str, str, str | None]] = []
    rows = load_benchmark("gsm8k", data_dir=data_dir)[GSM8K_HELD_OUT:]
    if gsm8k_limit is not None:
        rows = rows[:gsm8k_limit]
    for ex in rows:
        out.append(("gsm8k", ex.question, ex.answers[0], gsm8k_program(ex.extra_info["solution"])))
    for q, prog in word_problems(n_word, seed, "train"):
        out.append(("word", q, _run_local(prog), prog))
    return out


def _run_local(program: str) -> str:
    """The value a word-problem program prints, computed here (the gold answer; the sandbox must agree)."""
    scope: dict = {}
    lines = program.splitlines()
    exec("\n".join(lines[:-1]), {"__builtins__": {}}, scope)  # noqa: S102 - our own generated arithmetic
    return str(scope[lines[-1][len("print("):-1]])


def build(n_word: int = 600, gsm8k_limit: int | None = None, seed: int = 0, data_dir: str | None = None,
          workers: int = 4) -> tuple[list[dict], BuildReport]:
    """Demonstration rows ``{question, answers, turns, kind, metric, source, program}``: every checked GSM8K
    row from :data:`GSM8K_HELD_OUT` on (``gsm8k_limit`` caps how many are tried) and the checked ones of
    ``n_word`` word problems of the train stream, in that order. Programs run in the real sandbox
    (``workers`` at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    from appo.rewards import get_reward
    from appo.tools.python_sandbox import PythonTool

    report = BuildReport()
    tool, reward_fn = PythonTool(max_workers=workers), get_reward("default")
    cands = candidates(n_word, gsm8k_limit, seed, data_dir)

    def one(c):
        source, q, gold, prog = c
        if prog is None:
            return None, "no_program"
        return check_demo(q, gold, prog, tool, reward_fn)

    rows: list[dict] = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for (source, q, gold, prog), (turns, why) in zip(cands, pool.map(one, cands)):
                if turns is None:
                    report.rejected[f"{source}/{why}"] += 1
                    continue
                report.kept[source] += 1
                rows.append({"question": q, "answers": [gold], "turns": turns, "kind": "math",
                             "metric": "math_equiv", "source": source, "program": prog})
    finally:
        tool.close()
    return rows, report


def sft_subset(rows: Sequence[dict], n: int, word_share: float = 0.25, seed: int = 0) -> list[dict]:
    """``n`` rows drawn without replacement (seeded): ``round(n * word_share)`` word problems, the rest GSM8K,
    shuffled together (a slow CPU trains on a few hundred of the demonstrations, not all)."""
    rng = random.Random(f"sft-subset/{seed}")
    n_word = round(n * word_share)
    by = {s: [r for r in rows if r["source"] == s] for s in ("gsm8k", "word")}
    if n_word > len(by["word"]) or n - n_word > len(by["gsm8k"]):
        raise ValueError(f"sft_subset: asked for {n - n_word} GSM8K and {n_word} word rows; have "
                         f"{len(by['gsm8k'])} and {len(by['word'])}")
    out = rng.sample(by["gsm8k"], n - n_word) + rng.sample(by["word"], n_word)
    rng.shuffle(out)
    return out


def write_heldout_word_problems(path: str | Path, n: int = 200, seed: int = 0) -> Path:
    """The procedural held-out set as a JSONL benchmark file for ``appo eval``: ``{question, answer, ability:
    math}`` rows, so they are scored by math equivalence (a bare number answer would load as QA/F1)."""
    return write_math_rows(path, word_problems(n, seed, "test"))


def write_math_rows(path: str | Path, pairs: Sequence[tuple[str, str]]) -> Path:
    """(question, program) pairs as ``{question, answer, ability: math}`` JSONL, the answer being what the
    program prints (run locally); the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for q, prog in pairs:
            f.write(json.dumps({"question": q, "answer": _run_local(prog), "ability": "math"}) + "\n")
    return path


def _write_subset(path: Path, rows: Sequence[dict], n: int, word_share: float, seed: int) -> None:
    with open(path, "w") as f:
        for r in sft_subset(rows, n, word_share, seed):
            f.write(json.dumps(r) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m appo.train.tool_demos --out DIR``: write ``DIR/demos.jsonl`` (for ``appo sft``),
    ``DIR/demos_sft.jsonl`` (``--sft-examples`` of them, the ones ``appo sft`` trains on),
    ``DIR/word_heldout.jsonl`` (for ``appo eval``) and ``DIR/demos_report.json``."""
    ap = argparse.ArgumentParser(prog="python -m appo.train.tool_demos", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--word", type=int, default=600, help="procedural word problems to try (train stream)")
    ap.add_argument("--word-heldout", type=int, default=200, help="procedural held-out problems to write")
    ap.add_argument("--gsm8k-limit", type=int, default=None, help="GSM8K rows to try (from row 200 on; all)")
    ap.add_argument("--sft-examples", type=int, default=128, help="demonstrations written to demos_sft.jsonl")
    ap.add_argument("--word-share", type=float, default=0.25, help="share of word problems in demos_sft.jsonl")
    ap.add_argument("--sft-file", default="demos_sft.jsonl", help="name of the SFT subset file in --out")
    ap.add_argument("--subset-only", action="store_true",
                    help="only draw the SFT subset from an existing DIR/demos.jsonl (no sandbox runs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.subset_only:
        rows = [json.loads(line) for line in (out / "demos.jsonl").read_text().splitlines() if line.strip()]
        _write_subset(out / args.sft_file, rows, args.sft_examples, args.word_share, args.seed)
        return 0
    rows, report = build(args.word, args.gsm8k_limit, args.seed)
    with open(out / "demos.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    _write_subset(out / args.sft_file, rows, args.sft_examples, args.word_share, args.seed)
    write_heldout_word_problems(out / "word_heldout.jsonl", args.word_heldout, args.seed)
    summary = {"kept": dict(report.kept), "rejected": dict(report.rejected), "total": len(rows),
               "sft_examples": args.sft_examples, "gsm8k_rows_held_out": GSM8K_HELD_OUT,
               "word_heldout": args.word_heldout}
    (out / "demos_report.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
