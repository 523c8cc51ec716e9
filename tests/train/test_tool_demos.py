"""Cold-start demonstrations: GSM8K annotations -> programs, word problems, and the sandbox + reward checks."""

from __future__ import annotations

import json

import pytest

from appo.rewards import get_reward
from appo.tools.python_sandbox import PythonTool
from appo.train.tool_demos import GSM8K_HELD_OUT, build, check_demo, gsm8k_program, main, sft_subset, word_problems

JANET = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
         "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18")


def test_gsm8k_program_chains_earlier_values_as_variables():
    assert gsm8k_program(JANET) == "x1 = 16 - 3 - 4\nx2 = x1 * 2\nprint(x2)"
    assert gsm8k_program("no annotations here\n#### 3") is None
    assert gsm8k_program("bad <<abs(-3)=3>>3\n#### 3") is None  # only numbers and + - * / ( )


@pytest.fixture(scope="module")
def sandbox():
    tool = PythonTool()
    yield tool
    tool.close()


def test_check_demo_runs_the_sandbox_and_the_reward(sandbox):
    reward = get_reward("default")
    turns, why = check_demo("Janet ...", "18", gsm8k_program(JANET), sandbox, reward)
    assert why == "" and turns[1].endswith("<answer>\\boxed{18}</answer>")
    assert "<python>x1 = 16 - 3 - 4" in turns[0] and turns[0].endswith("print(x2)</python>")
    assert check_demo("q", "19", gsm8k_program(JANET), sandbox, reward) == (None, "wrong_value")
    assert check_demo("q", "18", "print(1/0)", sandbox, reward) == (None, "sandbox_error")


def test_word_problems_are_distinct_seeded_and_held_out():
    train = word_problems(300, seed=0, split="train")
    test = word_problems(100, seed=0, split="test")
    assert train == word_problems(300, seed=0, split="train")
    assert len({q for q, _ in train}) == 300
    assert not {q for q, _ in test} & {q for q, _ in word_problems(20_000, seed=0, split="train")}


def test_build_keeps_only_checked_rows_and_never_reads_the_held_out_gsm8k_rows(tmp_path):
    rows, report = build(n_word=12, gsm8k_limit=12)
    from appo.data import load_benchmark

    held_out = {ex.question for ex in load_benchmark("gsm8k", limit=GSM8K_HELD_OUT)}
    assert rows and not {r["question"] for r in rows} & held_out
    assert report.kept["word"] == 12
    assert sum(report.kept.values()) == len(rows)
    assert sum(report.kept.values()) + sum(report.rejected.values()) == 24
    sub = sft_subset(rows, 8, word_share=0.5)
    assert len(sub) == 8 and sum(r["source"] == "word" for r in sub) == 4


def test_cli_writes_the_files_appo_sft_and_appo_eval_read(tmp_path):
    assert main(["--out", str(tmp_path), "--word", "8", "--gsm8k-limit", "8", "--sft-examples", "4",
                 "--word-heldout", "5"]) == 0
    demos = [json.loads(line) for line in (tmp_path / "demos_sft.jsonl").read_text().splitlines()]
    assert len(demos) == 4 and all({"question", "answers", "turns"} <= set(d) for d in demos)
    from appo.data import load_dataset

    held = load_dataset(str(tmp_path / "word_heldout.jsonl"))
    assert len(held) == 5 and all(ex.metric == "math_equiv" for ex in held)
    # a second, word-heavy SFT subset drawn from the same demos.jsonl, without rebuilding (no sandbox runs)
    before = [(tmp_path / f).read_text() for f in ("demos.jsonl", "demos_sft.jsonl")]
    assert main(["--out", str(tmp_path), "--subset-only", "--sft-examples", "8", "--word-share", "0.75",
                 "--sft-file", "word_heavy.jsonl"]) == 0
    heavy = [json.loads(line) for line in (tmp_path / "word_heavy.jsonl").read_text().splitlines()]
    assert [d["source"] for d in heavy].count("word") == 6 and len(heavy) == 8
    assert [(tmp_path / f).read_text() for f in ("demos.jsonl", "demos_sft.jsonl")] == before  # left as they were
