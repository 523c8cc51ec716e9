"""The RL task after SmolLM2's cold start (:mod:`appo.train.word_rl`): variant word problems whose programs
print the gold answer, drawn from train and held-out streams that never share a question, on stories the SFT
demonstrations (:mod:`appo.train.tool_demos`) do not contain."""

from __future__ import annotations

import json

from appo.data.sources import load_examples
from appo.train import word_rl
from appo.train.tool_demos import _run_local, word_problems


def test_every_variant_template_occurs_and_its_program_prints_a_positive_integer():
    probs = word_rl.new_word_problems(400, seed=0, split="train")
    marks = ("to a friend", "A bakery bakes", "works ", "loses", "new students arrive", "How many more kilometers",
             "of change", "then sells")
    assert len(probs) == 400 and len(marks) == word_rl.NEW_TEMPLATES
    assert all(any(m in q for q, _ in probs) for m in marks)
    for q, prog in probs:
        value = int(_run_local(prog))
        assert value > 0, (q, prog)


def test_train_and_heldout_streams_are_disjoint_and_seeded():
    train = {q for q, _ in word_rl.new_word_problems(2000, 0, "train")}
    test = [q for q, _ in word_rl.new_word_problems(200, 0, "test")]
    assert not train & set(test)
    assert test == [q for q, _ in word_rl.new_word_problems(200, 0, "test")]
    assert test != [q for q, _ in word_rl.new_word_problems(200, 1, "test")]


def test_no_variant_question_is_a_demonstration_question():
    demos = {q for q, _ in word_problems(5000, 0, "train")} | {q for q, _ in word_problems(500, 0, "test")}
    variants = {q for q, _ in word_rl.new_word_problems(2000, 0, "train")}
    assert not demos & variants


def test_cli_writes_files_that_load_as_math_examples(tmp_path):
    assert word_rl.main(["--out", str(tmp_path), "--train", "50", "--heldout", "20"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "word_new_heldout.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and all(r["ability"] == "math" for r in rows)
    exs = load_examples([str(tmp_path / "word_new_train.jsonl")], "train")
    assert len(exs) == 50 and exs[0].kind == "math" and exs[0].metric == "math_equiv"
