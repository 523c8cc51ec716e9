"""The reward registry, the reference reward's dispatch and bonus, and custom reward loading."""

import textwrap

import pytest

from appo.rewards import REWARDS, RewardOutput, get_reward, register_reward
from appo.types import Example

MATH = Example("m/0", "What is 1/2?", ("\\frac{1}{2}",), "math", "math_equiv", "t")
QA = Example("q/0", "Where?", ("New York City", "NYC"), "qa", "f1", "t")
QA_EM = Example("q/1", "Where?", ("New York City",), "qa", "em", "t", extra_info={"level": 2})


def resp(box: str, tools: str = "") -> str:
    return f"<think>t</think>{tools}<think>u</think><answer>\\boxed{{{box}}}</answer>"


PY = "<python>print(1)</python><result>1</result>"
SE = "<search>q</search><result>r</result>"


def test_builtins_are_registered_and_duplicates_refused():
    assert {"default", "arpo", "answer", "math", "qa_f1", "qa_em", "format"} <= set(REWARDS)
    with pytest.raises(ValueError, match="already registered"):
        register_reward("default")(lambda examples, responses: [])


def test_default_dispatches_on_metric():
    out = REWARDS["default"]([MATH, QA, QA_EM], [resp("0.5"), resp("New York"), resp("New York")])
    assert out[0].score == 1.0 and out[0].metrics["acc"] == 1.0
    assert out[1].score == pytest.approx(0.8)  # F1 of "new york" vs "new york city" (see test_f1_arithmetic)
    assert out[1].metrics["em"] == 0.0 and out[1].metrics["f1"] == pytest.approx(0.8)
    assert out[2].score == 0.0  # metric em: no partial credit


def test_reference_reward_bonus_and_penalty():
    both = REWARDS["default"]([MATH, MATH, MATH], [resp("0.5", SE + PY), resp("0.5", PY), resp("0.3", SE + PY)])
    assert [o.score for o in both] == [pytest.approx(1.1), 1.0, 0.0]  # bonus only with both tools and score > 0
    assert both[0].metrics["both_tools"] == 1.0 and both[1].metrics["both_tools"] == 0.0
    partial = REWARDS["arpo"]([QA], [resp("New York", SE + PY)])[0]
    assert partial.score == pytest.approx(0.9)  # 0.8 + 0.1
    bad = REWARDS["default"]([MATH], ["<answer>\\boxed{0.5}</answer>"])[0]  # no think block
    assert bad.score == -1.0 and bad.metrics["format_ok"] == 0.0
    assert bad.metrics["acc"] == 1.0  # accuracy still reported


def test_answer_math_qa_and_format_rewards():
    no_format = "the answer is \\boxed{0.5}"
    assert REWARDS["answer"]([MATH], [no_format])[0].score == 1.0
    assert REWARDS["math"]([MATH], [no_format])[0].score == 1.0
    assert REWARDS["qa_em"]([QA], [resp("nyc")])[0].score == 1.0
    assert REWARDS["qa_f1"]([QA], [resp("New York")])[0].score == pytest.approx(0.8)
    assert [o.score for o in REWARDS["format"]([MATH, MATH], [no_format, resp("1")])] == [-1.0, 0.0]


def test_batch_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one response per"):
        REWARDS["default"]([MATH], [])


def test_get_reward_names_and_unknowns():
    assert get_reward("default") is REWARDS["default"]
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        get_reward("nope")


# ---- custom rewards ------------------------------------------------------------------------------


def write(tmp_path, body: str, name: str = "my_reward.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_verl_signature_float_and_dict(tmp_path):
    path = write(tmp_path, """
        def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            return float(str(ground_truth) in solution_str)

        def with_metrics(data_source, solution_str, ground_truth, extra_info=None):
            return {"score": 0.5, "acc": True, "note": "ignored text", "level": extra_info.get("level", -1)}

        def three_args(data_source, solution_str, ground_truth):
            return 1
    """)
    fn = get_reward(f"{path}:compute_score")
    assert fn.style == "verl"
    out = fn([QA_EM, QA], ["in New York City", "nowhere"])
    # QA has two aliases, so ground_truth is a list and str(list) is not in the text
    assert [o.score for o in out] == [1.0, 0.0]
    rich = get_reward(f"{path}:with_metrics")([QA_EM], ["x"])[0]
    assert rich == RewardOutput(0.5, {"acc": 1.0, "level": 2.0})
    assert get_reward(f"{path}:three_args")([MATH], ["x"])[0].score == 1.0


def test_trl_signature_columns_and_none(tmp_path):
    path = write(tmp_path, """
        def judge(prompts, completions, ground_truth, **kwargs):
            assert kwargs["data_source"] == ["t", "t"] and kwargs["level"] == [2, None]
            return [None if "skip" in c else float(c == ground_truth[i]) for i, c in enumerate(completions)]

        def named_only(prompts, completions, answers):
            return [float(c in a) for c, a in zip(completions, answers)]
    """)
    fn = get_reward(f"{path}:judge")
    assert fn.style == "trl"
    out = fn([QA_EM, MATH], ["New York City", "skip me"])
    assert out[0] == RewardOutput(1.0, {"skipped": 0.0})
    assert out[1] == RewardOutput(0.0, {"skipped": 1.0})  # None -> 0.0, counted as skipped
    assert [o.score for o in get_reward(f"{path}:named_only")([QA], ["NYC"])] == [1.0]


def test_native_signature(tmp_path):
    path = write(tmp_path, """
        from appo.rewards import RewardOutput

        def mine(examples, responses):
            return [RewardOutput(len(r)) for r in responses]
    """)
    assert get_reward(f"{path}:mine")([MATH], ["abc"])[0].score == 3.0


@pytest.mark.parametrize(
    "spec_suffix, body, error, match",
    [
        ("", "def f(prompts, completions): return []", ValueError, "is not 'path/to/file.py:function'"),
        (":missing", "def other(prompts, completions): return []", AttributeError,
         r"defines no 'missing'.*\['other'\]"),
        (":f", "raise RuntimeError('boom at import')", ImportError, "boom at import"),
        (":f", "def f(a, b): return 1", TypeError, "cannot tell its signature"),
        (":f", "def f(data_source, solution_str, ground_truth, tokenizer): return 1", TypeError, "'tokenizer'"),
        (":f", "f = 3", TypeError, "not callable"),
    ],
)
def test_bad_specs_name_the_file_and_fix(tmp_path, spec_suffix, body, error, match):
    path = write(tmp_path, body)
    with pytest.raises(error, match=match) as info:
        get_reward(f"{path}{spec_suffix}")
    assert "my_reward.py" in str(info.value)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        get_reward(str(tmp_path / "nope.py") + ":f")
    txt = tmp_path / "r.txt"
    txt.write_text("")
    with pytest.raises(ValueError, match="not a .py file"):
        get_reward(f"{txt}:f")


def test_bad_return_values(tmp_path):
    path = write(tmp_path, """
        def verl_bad(data_source, solution_str, ground_truth, extra_info=None):
            return "high"

        def trl_short(prompts, completions, **kwargs):
            return [1.0]

        def trl_needs(prompts, completions, reference):
            return [1.0] * len(completions)

        def raises(data_source, solution_str, ground_truth, extra_info=None):
            raise KeyError("oops")
    """)
    with pytest.raises(TypeError, match="returned 'high' for example 'm/0'"):
        get_reward(f"{path}:verl_bad")([MATH], ["x"])
    with pytest.raises(TypeError, match="of length 1.*list of 2 floats"):
        get_reward(f"{path}:trl_short")([MATH, MATH], ["x", "y"])
    with pytest.raises(TypeError, match=r"no column \['reference'\]"):
        get_reward(f"{path}:trl_needs")([MATH], ["x"])
    with pytest.raises(RuntimeError, match="raised on example 'm/0'"):
        get_reward(f"{path}:raises")([MATH], ["x"])
