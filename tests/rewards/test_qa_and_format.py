"""QA normalisation, EM and F1 by hand; the format check, one failure at a time."""

import pytest

from appo.rewards import answer_tokens, check_format, exact_match, f1_score, normalize_answer


def test_squad_normalisation():
    assert normalize_answer("The  Big-Apple!") == "bigapple"
    assert normalize_answer("An apple, a pear and THE plum.") == "apple pear and plum"
    assert normalize_answer("Alice’s “house”") == normalize_answer("Alices house")  # Unicode punctuation
    assert answer_tokens("3辆，共计") == ["3", "辆", "共", "计"]  # CJK: one token per character


def test_exact_match_is_max_over_aliases():
    aliases = ["New York City", "NYC", "the Big Apple"]
    assert exact_match("nyc", aliases) == 1.0
    assert exact_match("big apple", aliases) == 1.0
    assert exact_match("New York", aliases) == 0.0
    assert exact_match(None, aliases) == 0.0


def test_f1_arithmetic():
    # pred "new york" = [new, york]; gold "new york city" = [new, york, city]; common = 2
    # P = 2/2 = 1, R = 2/3, F1 = 2 * 1 * (2/3) / (1 + 2/3) = (4/3) / (5/3) = 0.8
    assert f1_score("New York", "New York City") == pytest.approx(0.8)
    # pred [city, of, new, york] vs gold [new, york]: common 2, P = 2/4, R = 1, F1 = 1 / 1.5 = 2/3
    assert f1_score("City of New York", ["New York"]) == pytest.approx(2 / 3)
    # max over aliases: "NYC" matches exactly -> 1.0
    assert f1_score("NYC", ["New York City", "NYC"]) == 1.0
    # repeated tokens count once per occurrence: pred [york, york], gold [york]: common 1, P 1/2, R 1 -> 2/3
    assert f1_score("york york", "york") == pytest.approx(2 / 3)
    assert f1_score("London", "Paris") == 0.0
    assert f1_score(None, "Paris") == 0.0


def test_f1_yes_no_rule():
    # HotpotQA: yes/no/noanswer get no partial credit.
    assert f1_score("no way", "no") == 0.0
    assert f1_score("yes", "yes") == 1.0
    assert f1_score("yes", "yes sir") == 0.0  # plain token F1 would give 2/3
    assert f1_score("it is yes", "yes it is") == 1.0  # neither side is exactly yes/no: plain F1


def test_f1_on_chinese_answers():
    # pred [3, 辆] vs gold [3, 辆, 车]: common 2, P 1, R 2/3 -> 0.8
    assert f1_score("3辆", "3辆车") == pytest.approx(0.8)


GOOD = (
    "<think>plan</think>\n<search>q</search>\n<result>\nr\n</result>\n"
    "<think>calc</think>\n<python>print(1)</python>\n<result>\n1\n</result>\n"
    "<think>done</think>\n<answer>The answer is \\boxed{1}</answer>"
)


def test_good_format_and_tools_used():
    check = check_format(GOOD)
    assert check.ok and check.reason == "ok"
    assert check.tools_used == ("search", "python")
    assert check_format("<think>a</think><answer>\\boxed{x}</answer>").ok  # no tools is fine


@pytest.mark.parametrize(
    "response, reason",
    [
        ("<answer>\\boxed{1}</answer>", "think_missing"),
        ("<think>a<think>b</think><answer>\\boxed{1}</answer>", "think_unpaired"),
        ("<think>a</think></think><answer>\\boxed{1}</answer>", "think_unpaired"),
        ("<think>a<answer>\\boxed{1}</answer>", "think_unpaired"),
        ("<think>a</think>", "answer_count"),
        ("<think>a</think><answer>\\boxed{1}</answer><answer>\\boxed{2}</answer>", "answer_count"),
        ("<think>a</think></answer>\\boxed{1}<answer>", "answer_order"),
        ("<think>a</think><answer>1</answer>", "no_boxed"),
        ("<think>a</think><answer>\\boxed{1</answer>", "no_boxed"),
        ("<think>a</think><python>x</python><answer>\\boxed{1}</answer>", "call_without_result"),
        ("<think>a</think><search>x</search>", "call_without_result"),
        ("<think>a</think><python>x<answer>\\boxed{1}</answer>", "python_unclosed"),
        ("<think>a</think><search>a</search><search>b</search><result>r</result><answer>\\boxed{1}</answer>",
         "call_without_result"),  # two calls sharing one result
        ("<think>a</think><result>made up</result><answer>\\boxed{1}</answer>", "result_without_call"),
        ("<think>a</think></search><answer>\\boxed{1}</answer>", "search_unpaired"),
    ],
)
def test_each_format_failure(response, reason):
    check = check_format(response)
    assert not check.ok
    assert check.reason == reason


def test_tags_inside_tool_output_do_not_count():
    response = (
        "<think>a</think><search>q</search><result>page: <think> <answer>x</answer> <python></result>"
        "<answer>\\boxed{1}</answer>"
    )
    assert check_format(response).ok


def test_hermes_calls_need_responses_and_report_names():
    call = '<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"}}\n</tool_call>'
    ok = f"<think>a</think>{call}<tool_response>\n1\n</tool_response><think>b</think><answer>\\boxed{{1}}</answer>"
    check = check_format(ok)
    assert check.ok and check.tools_used == ("python",)
    assert check_format(f"<think>a</think>{call}<answer>\\boxed{{1}}</answer>").reason == "call_without_result"


def test_user_tool_tags():
    response = "<think>a</think><calc>1+1</calc><result>2</result><answer>\\boxed{2}</answer>"
    assert check_format(response, tool_tags=("calc",)).tools_used == ("calc",)
    # not configured: still read as a call because a result block follows its closing tag
    assert check_format(response).tools_used == ("calc",)
    # configured tags are also checked for being closed
    unclosed = "<think>a</think><calc>1+1<answer>\\boxed{2}</answer>"
    assert check_format(unclosed, tool_tags=("calc",)).reason == "calc_unclosed"
    stray_result = "<think>a</think>\n<result>x</result><answer>\\boxed{2}</answer>"
    assert check_format(stray_result).reason == "result_without_call"
