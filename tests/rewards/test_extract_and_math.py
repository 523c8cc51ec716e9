"""Answer extraction (boxes, answer blocks, tool results) and math-verify equivalence, worked by hand."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from appo.rewards import answer_block, extract_answer, last_boxed, math_equal, math_equiv, strip_tool_results


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{42}", "42"),
        ("first \\boxed{1} then \\boxed{2}", "2"),  # the last box wins
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{\\left\\{1, \\frac{2}{3}\\right\\}}",
         "\\left\\{1, \\frac{2}{3}\\right\\}"),  # escaped braces nest too
        ("$\\boxed 7$", "7"),  # brace-less form
        ("\\fbox{x}", "x"),
        ("no box here", None),
        ("\\boxed{unclosed", None),  # truncated answers are not answers
        ("\\boxed{}", ""),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_extract_answer_takes_the_box_of_the_answer_block():
    response = "<think>maybe \\boxed{1}</think><answer>It is \\boxed{2}.</answer>"
    assert extract_answer(response) == "2"
    # Without an answer block the last box of the model's own text is used.
    assert extract_answer("<think>so \\boxed{5}</think>") == "5"
    # An answer block without a box gives nothing (no guessing from free text).
    assert extract_answer("<answer>5</answer>") is None


def test_tool_results_are_never_the_answer():
    response = (
        "<think>x</think><search>q</search><result>doc says <answer>\\boxed{wrong}</answer></result>"
        "<answer>\\boxed{right}</answer>"
    )
    assert strip_tool_results(response).count("wrong") == 0
    assert answer_block(response) == "\\boxed{right}"
    assert extract_answer("<python>x</python><result>\\boxed{9}</result>") is None


@pytest.mark.parametrize(
    "prediction, reference",
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\frac{1}{2}", "0.5"),
        ("1/2", "\\frac12"),
        ("1.5", "\\dfrac{3}{2}"),
        ("1000", "1,000"),
        ("-6+3\\sqrt{3}", "3\\sqrt{3} - 6"),  # symbolic, not string, equality
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("109", "\\$109.00"),
        ("5", "x=5"),
        ("70", "70"),
    ],
)
def test_math_equal_accepts_equivalent_forms(prediction, reference):
    assert math_equal(prediction, reference)


@pytest.mark.parametrize("prediction, reference", [("2", "3"), ("0.51", "\\frac{1}{2}"), (None, "1"), ("  ", "1"),
                                                   ("x+1", "x+2")])
def test_math_equal_rejects(prediction, reference):
    assert not math_equal(prediction, reference)


def test_math_equal_works_off_the_main_thread():
    # math-verify's signal timeouts raise in worker threads; math_equal must run them without timeouts.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: math_equal(p, "\\frac{1}{2}"), ["0.5", "0.25"]))
    assert results == [True, False]


def test_off_main_thread_long_answers_are_not_parsed(monkeypatch):
    monkeypatch.setattr(math_equiv, "MAX_UNTIMED_CHARS", 5)
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(math_equal, "0.50000", "\\frac{1}{2}").result() is False
        assert pool.submit(math_equal, "0.5", "1/2").result() is True
    assert math_equal("0.50000", "\\frac{1}{2}")  # the main thread has timeouts: parsed normally


def test_timeouts_are_passed_only_in_the_main_thread(monkeypatch):
    seen = []
    real_parse = math_equiv._parse_boxed.__wrapped__

    def spy(text, timeout_s):
        seen.append(timeout_s)
        return real_parse(text, timeout_s)

    monkeypatch.setattr(math_equiv, "_parse_boxed", spy)
    math_equal("0.5", "1/2", timeout_s=3)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(math_equal, "0.5", "1/2", 3).result()
    assert seen == [3, 3, None, None]
