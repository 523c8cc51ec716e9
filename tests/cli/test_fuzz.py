"""Fuzzing what users type: config overrides on ``appo train --print-config`` and rows of a data file.
Whatever the input, the command ends in a result or in one ``appo <command>: error:`` line with exit code
2, never a traceback (hypothesis; in-process for speed, plus a few of the shapes as subprocesses)."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from cli_helpers import assert_input_error, run_cli, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appo.cli_errors import describe_error
from appo.config import Config
from appo.config.typed_yaml import all_keys

KEYS = all_keys(Config)
SCALARS = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["true", "false", "null", "", "~", "[]", "{}", "-1", "0", "1e-5", "nan", ".inf",
                                     "[1, 2", "{a: 1", "'", "\"", "[[1]]", "{n: 4}", "proc:arith", "a: b: c",
                                     "!!python/none",
                                     "&x 1", "*x", "@", "%", "\\", "[console, jsonl]"]),
                    st.text(string.printable, max_size=12))
KEY = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k + ".sub"),
                st.text(string.ascii_letters + "._-", min_size=0, max_size=20),
                st.sampled_from(["actor_rollout_ref.actor.optim.lr", "actor_rollout_ref.foo", "a..b", ".", "=x"]))
OVERRIDE = st.one_of(st.builds(lambda k, v: f"{k}={v}", KEY, SCALARS), st.text(string.printable, max_size=16))


def _check(code: int, out: str, err: str, command: str) -> None:
    assert "Traceback" not in err and "Traceback" not in out
    if code == 0:
        return
    assert_input_error(code, err, command)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(OVERRIDE, min_size=1, max_size=4))
def test_config_overrides_end_in_a_config_or_one_line(capsys, overrides):
    argv = ["train", "--print-config", "--", *overrides]  # "--": overrides that look like options stay overrides
    code, out, err = run_main(argv, capsys)
    _check(code, out, err, "train")


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
FIELDS = st.sampled_from(["question", "problem", "prompt", "answer", "answers", "solution", "ground_truth",
                          "reward_model", "data_source", "ability", "extra_info", "messages", "completion", "target",
                          "id", "kind"])
ROW = st.one_of(st.dictionaries(FIELDS, JSON_VALUES, max_size=5),
                st.fixed_dictionaries({"prompt": st.lists(st.dictionaries(st.sampled_from(["role", "content"]),
                                                                          JSON_VALUES, max_size=2), max_size=2),
                                       "reward_model": JSON_VALUES}),
                JSON_VALUES)
LINES = st.lists(st.one_of(ROW.map(json.dumps), st.text(string.printable, max_size=10)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(LINES, st.sampled_from(["rows.jsonl", "rows.json", "gsm8k.jsonl"]))
def test_data_rows_end_in_examples_or_one_line(lines, name):
    from appo.data import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        if name.endswith(".json"):
            path.write_text("[" + ",".join(x for x in lines if _is_json(x)) + "]")
        else:
            path.write_text("\n".join(lines))
        try:
            examples = load_dataset(path)
        except Exception as exc:  # what the CLI would print: one mapped line (a None here is an unmapped bug)
            err = describe_error(exc)
            assert err is not None, repr(exc)
            assert err.code == 2 and "\n" not in err.message and err.message
            return
        assert all(ex.question and ex.answers for ex in examples)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_a_few_shapes_as_subprocesses(tmp_path):
    for args, needle in ((["rollout.n=[1"], "rollout.n='[1'"), (["=5"], "not of the form key.sub=value"),
                         (["actor.optim=3"], "actor.optim must be a mapping")):
        res = run_cli("train", "--print-config", *args, cwd=tmp_path, timeout=120)
        assert_input_error(res.returncode, res.stderr, "train", needle)
