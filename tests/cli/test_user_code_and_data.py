"""Errors in a user's own reward or tool module show the user's frame and a one-line summary; data files
that are empty or not quite verl name the file and the fix. Exit code 2, no traceback."""

from __future__ import annotations

import json

from cli_helpers import assert_input_error, run_cli, run_main

EVAL = ["--limit", "2", "--max-response-tokens", "8", "--device", "cpu", "--batch-size", "2"]


def _eval(model, benchmarks, out, *extra):
    return ["eval", "--model", model, "--benchmarks", benchmarks, "--tools", "", "--out", out, *EVAL, *extra]


def test_reward_that_raises_shows_the_users_line(tmp_path, tiny_model):
    reward = tmp_path / "my_reward.py"
    reward.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
                      "    scale = 0\n"
                      "    return len(solution_str) / scale\n")
    res = run_cli(*_eval(tiny_model, "proc:arith", tmp_path / "o.json", "--reward", f"{reward}:compute_score"),
                  cwd=tmp_path)
    line = assert_input_error(res.returncode, res.stderr, "eval", "ZeroDivisionError", f"{reward}:3 in compute_score",
                              "return len(solution_str) / scale", "fix your code there")
    assert "custom reward" in line  # the library's context: which reward, which example


def test_reward_module_that_fails_to_import(tmp_path, tiny_model, capsys):
    bad = tmp_path / "broken.py"
    bad.write_text("import math\nVALUE = math.sqrt(-1)\ndef f(examples, responses):\n    return []\n")
    code, _, err = run_main(_eval(tiny_model, "proc:arith", tmp_path / "o.json", "--reward", f"{bad}:f"), capsys)
    assert_input_error(code, err, "eval", "ValueError: math domain error", f"{bad}:2 in <module>",
                       "VALUE = math.sqrt(-1)")
    bad.write_text("def f(examples, responses)\n    return []\n")
    code, _, err = run_main(_eval(tiny_model, "proc:arith", tmp_path / "o.json", "--reward", f"{bad}:f"), capsys)
    assert_input_error(code, err, "eval", f"{bad}:1: SyntaxError", "fix the file")


def test_tool_module_that_raises_at_import(tmp_path, tiny_model, capsys):
    tools = tmp_path / "my_tools.py"
    tools.write_text("CONFIG = {}\nPRICES = CONFIG['prices']\n\n"
                     "def price(item: str) -> str:\n    \"\"\"Price.\n\n    Args:\n        item: name\n    \"\"\"\n"
                     "    return '1'\n")
    argv = _eval(tiny_model, "proc:arith", tmp_path / "o.json")
    argv[argv.index("--tools") + 1] = f"{tools}:price"
    code, _, err = run_main(argv, capsys)
    assert_input_error(code, err, "eval", "KeyError", f"{tools}:2 in <module>", "PRICES = CONFIG['prices']")


def test_empty_data_file_names_the_file(tmp_path, tiny_model, capsys):
    empty = tmp_path / "questions.jsonl"
    empty.write_text("\n")
    code, _, err = run_main(_eval(tiny_model, str(empty), tmp_path / "o.json"), capsys)
    assert_input_error(code, err, "eval", str(empty), "no rows", "add rows")


def test_verl_row_without_reward_model_names_reward_model(tmp_path, tiny_model, capsys):
    rows = tmp_path / "verl_rows.jsonl"
    rows.write_text(json.dumps({"data_source": "x", "prompt": [{"role": "user", "content": "1+1?"}]}) + "\n")
    code, _, err = run_main(_eval(tiny_model, str(rows), tmp_path / "o.json"), capsys)
    line = assert_input_error(code, err, "eval", str(rows), "row 0", "missing verl field 'reward_model'",
                              "ground_truth")
    assert "field 'prompt' is not" not in line  # it used to blame the prompt


def test_a_bug_in_appo_keeps_its_traceback(monkeypatch, capsys):
    import pytest

    import appo.catalog

    # format_catalog swapped for a two-argument class: the call in appo.cli raises a TypeError that is no
    # deliberate message (a bug), so it is not dressed up as an input error
    monkeypatch.setattr(appo.catalog, "format_catalog", appo.catalog.Entry)
    with pytest.raises(TypeError):
        run_main(["list", "tools"], capsys)
