"""Protocols: parsing (tags, hermes), result rendering, prompts, demonstrations, fuzzing."""

from __future__ import annotations

import json

import pytest
from agent_doubles import CrashingTool, StubPython, StubSearch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appo.agent.protocols import (
    PROTOCOLS,
    HermesProtocol,
    TagsProtocol,
    ToolProtocol,
    get_protocol,
    register_protocol,
    render_demonstration,
    turn_end_id,
)
from appo.types import Example, ToolResult

TOOLS = {"python": StubPython(), "search": StubSearch()}
EX = Example(id="t/0", question="What is 2+3?", answers=("5",), kind="math", metric="math_equiv", data_source="t")


# -- tags ---------------------------------------------------------------------------------------------
def test_tags_stop_strings_cover_tools_reference_tags_and_answer():
    stops = TagsProtocol().stop_strings({"python": StubPython()})
    assert set(stops) == {"</python>", "</search>", "</answer>"}


def test_tags_call_body_goes_to_tag_argument_dedented():
    act = TagsProtocol().parse_turn("<think>hm</think> <python>\n  x = 1\n  print(x)\n</python>", "stop", TOOLS)
    assert act.kind == "call" and act.error is None
    assert act.call.name == "python" and act.call.arguments == {"code": "x = 1\nprint(x)"}
    assert act.call_start == len("<think>hm</think> ")
    assert act.call.raw == "<python>\n  x = 1\n  print(x)\n</python>"


def test_tags_search_and_answer_and_end():
    p = TagsProtocol()
    assert p.parse_turn("<search> capital of France </search>", "stop", TOOLS).call.arguments == {
        "query": "capital of France"}
    assert p.parse_turn("<think>x</think><answer>\\boxed{5}</answer>", "stop", TOOLS).kind == "answer"
    assert p.parse_turn("<answer>\\boxed{5}</answer><|im_end|>", "eos", TOOLS).kind == "answer"
    assert p.parse_turn("I think it is 5.<|im_end|>", "eos", TOOLS).kind == "end"


@pytest.mark.parametrize("text,finish,err", [
    ("<search>q</search>", "stop", "unknown_tool"),          # search not configured
    ("<python>   \n </python>", "stop", "empty"),
    ("print(1)</python>", "stop", "parse"),                   # close without open
    ("<think>a</think><python>print(1)<|im_end|>", "eos", "unclosed"),
])
def test_tags_malformed_calls_give_error_results(text, finish, err):
    act = TagsProtocol().parse_turn(text, finish, {"python": StubPython()})
    assert act.kind == "call" and act.error is not None
    assert act.error.ok is False and act.error.error == err and act.error.text.startswith("Error:")


def test_tags_user_tool_without_tag_argument_uses_first_required_parameter():
    class Calc(StubPython):
        name = "calc"
        tag_argument = ""
        parameters = {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}

    act = TagsProtocol().parse_turn("<calc>1+1</calc>", "stop", {"calc": Calc()})
    assert act.call.arguments == {"expr": "1+1"}
    assert "</calc>" in TagsProtocol().stop_strings({"calc": Calc()})


def test_tags_result_text_exact_whitespace():
    assert TagsProtocol().result_text(None, ToolResult("42"), False) == "\n<result>\n42\n</result>\n"


# -- hermes -------------------------------------------------------------------------------------------
def _hcall(name, args):
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": args})}\n</tool_call>'


def test_hermes_parses_valid_call_and_string_arguments():
    p = HermesProtocol()
    act = p.parse_turn("Let me compute. " + _hcall("python", {"code": "print(1)"}), "stop", TOOLS)
    assert act.kind == "call" and act.error is None and act.call.arguments == {"code": "print(1)"}
    assert act.call_start == len("Let me compute. ")
    raw = '<tool_call>{"name": "search", "arguments": "{\\"query\\": \\"x\\"}"}</tool_call>'
    assert p.parse_turn(raw, "stop", TOOLS).call.arguments == {"query": "x"}


@pytest.mark.parametrize("text,err", [
    ("<tool_call>{not json}</tool_call>", "parse"),
    ('<tool_call>["python"]</tool_call>', "parse"),
    ('<tool_call>{"name": "python", "arguments": [1]}</tool_call>', "parse"),
    (_hcall("calculator", {"x": 1}), "unknown_tool"),
    ("oops </tool_call>", "parse"),
])
def test_hermes_malformed_calls_give_error_results(text, err):
    act = HermesProtocol().parse_turn(text, "stop", TOOLS)
    assert act.kind == "call" and act.error.ok is False and act.error.error == err


def test_hermes_final_message_is_answer_and_unclosed_call_is_error():
    p = HermesProtocol()
    assert p.parse_turn("The answer is \\boxed{5}.<|im_end|>", "eos", TOOLS).kind == "answer"
    act = p.parse_turn('<tool_call>{"name": "python"<|im_end|>', "eos", TOOLS)
    assert act.kind == "call" and act.error.error == "unclosed"


def test_hermes_result_suffix_matches_chat_template(tiny_tokenizer):
    """The suffix is what the template writes between the model's call and the next assistant turn."""
    p = HermesProtocol()
    call = _hcall("python", {"code": "print(1)"})
    text = p.result_text(tiny_tokenizer, ToolResult("1"), after_eos=False)
    assert text == ("<|im_end|>\n<|im_start|>user\n<tool_response>\n1\n</tool_response><|im_end|>\n"
                    "<|im_start|>assistant\n")
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": call}]
    without = tiny_tokenizer.apply_chat_template(msgs, tokenize=False)
    with_tool = tiny_tokenizer.apply_chat_template(msgs + [{"role": "tool", "content": "1"}], tokenize=False,
                                                   add_generation_prompt=True)
    head = without[: without.rindex(call) + len(call)]
    assert head + text == with_tool
    # After the model's own EOS the closer's EOS is not repeated.
    assert p.result_text(tiny_tokenizer, ToolResult("1"), after_eos=True).startswith("\n<|im_start|>user")
    ids = p.result_ids(tiny_tokenizer, ToolResult("1"))
    assert ids[0] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")


# -- prompts ------------------------------------------------------------------------------------------
def test_build_prompt_uses_messages_or_default_system_prompt(tiny_tokenizer):
    tags = get_protocol("tags")
    ids = tags.build_prompt_ids(EX, tiny_tokenizer, TOOLS)
    text = tiny_tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\n") and "<python>" in text and "<answer>" in text
    assert text.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    verl = Example(id="v/0", question="Q?", answers=("a",), kind="qa", metric="f1", data_source="v",
                   messages=({"role": "system", "content": "SYS"}, {"role": "user", "content": "Q?"}))
    text = tiny_tokenizer.decode(tags.build_prompt_ids(verl, tiny_tokenizer, TOOLS), skip_special_tokens=False)
    assert text == "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    text = tiny_tokenizer.decode(tags.build_prompt_ids(verl, tiny_tokenizer, TOOLS, system_prompt="NEW"),
                                 skip_special_tokens=False)
    assert "NEW" in text and "SYS" not in text


def test_hermes_prompt_lists_tool_schemas(tiny_tokenizer):
    ids = get_protocol("hermes").build_prompt_ids(EX, tiny_tokenizer, TOOLS)
    text = tiny_tokenizer.decode(ids, skip_special_tokens=False)
    assert "<tools>" in text and '"name": "python"' in text and '"name": "search"' in text
    assert text.endswith("<|im_start|>assistant\n")


# -- registry -----------------------------------------------------------------------------------------
def test_registry_refuses_duplicates_and_unknown_names():
    assert set(PROTOCOLS) >= {"tags", "hermes"}
    with pytest.raises(ValueError, match="already registered"):
        register_protocol("tags")(TagsProtocol)
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("xml")
    assert isinstance(get_protocol("hermes"), ToolProtocol)


# -- demonstrations -----------------------------------------------------------------------------------
def test_render_demonstration_tags_masks_and_real_tool(tiny_tokenizer):
    tools = {"python": StubPython()}
    turns = ["<think>add</think><python>print(2+3)</python>", "<answer>\\boxed{5}</answer>"]
    ids, mask = render_demonstration("tags", tiny_tokenizer, tools, EX, turns)
    prompt = get_protocol("tags").build_prompt_ids(EX, tiny_tokenizer, tools)
    assert ids[: len(prompt)] == prompt and set(mask[: len(prompt)]) == {0}
    t0 = tiny_tokenizer.encode(turns[0], add_special_tokens=False)
    res = tiny_tokenizer.encode("\n<result>\nout:10\n</result>\n", add_special_tokens=False)
    t1 = tiny_tokenizer.encode(turns[1], add_special_tokens=False)
    eot = turn_end_id(tiny_tokenizer)
    assert ids[len(prompt):] == t0 + res + t1 + [eot]
    assert mask[len(prompt):] == [1] * len(t0) + [0] * len(res) + [1] * (len(t1) + 1)
    assert tools["python"].seen == [{"code": "print(2+3)"}]


def test_render_demonstration_hermes_and_errors(tiny_tokenizer):
    tools = {"python": CrashingTool()}
    turns = [_hcall("python", {"code": "1/0"}), "It is \\boxed{5}."]
    ids, mask = render_demonstration("hermes", tiny_tokenizer, tools, EX, turns)
    resp = [(i, m) for i, m in zip(ids, mask)][len(get_protocol("hermes").build_prompt_ids(EX, tiny_tokenizer, tools)):]
    tool_text = tiny_tokenizer.decode([i for i, m in resp if m == 0], skip_special_tokens=False)
    assert "Error: RuntimeError: boom" in tool_text and tool_text.endswith("<|im_start|>assistant\n")
    assert resp[-1] == (tiny_tokenizer.convert_tokens_to_ids("<|im_end|>"), 1)
    with pytest.raises(ValueError, match="does not end with a tool call"):
        render_demonstration("tags", tiny_tokenizer, {"python": StubPython()}, EX, ["no call here",
                                                                                    "<answer>1</answer>"])


# -- fuzzing ------------------------------------------------------------------------------------------
_PIECES = ["<python>", "</python>", "<search>", "</search>", "<answer>", "</answer>", "<think>", "</think>",
           "<tool_call>", "</tool_call>", "<calc>", "</calc>", "{", "}", '"name"', ":", '"python"', '"arguments"',
           "\\boxed{", "<|im_end|>", "\n", " ", "print(1)", "<", ">", "/", "\"", "[", "]", "null", "1e999"]
_TEXT = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=6)), max_size=30).map("".join)


def _never_raises(text, finish):
    for proto in (TagsProtocol(), HermesProtocol()):
        for tools in (TOOLS, {}, {"python": StubPython()}):
            act = proto.parse_turn(text, finish, tools)
            assert act.kind in ("call", "answer", "end", "none")
            if act.kind == "call":
                assert act.error is not None or (act.call is not None and act.call.name in tools)
                assert 0 <= act.call_start <= len(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT, st.sampled_from(["stop", "eos"]))
def test_fuzz_parse_never_raises(text, finish):
    _never_raises(text, finish)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT, st.sampled_from(["stop", "eos"]))
def test_fuzz_parse_never_raises_long(text, finish):
    _never_raises(text, finish)


def test_hermes_suffix_with_template_that_rewrites_the_last_assistant_turn(tiny_tokenizer):
    """Qwen3-style templates add an empty think block to the last assistant message only."""
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}<|im_start|>assistant\n"
        "{% if loop.last %}<think>\n\n</think>\n\n{% endif %}{{ m['content'] }}<|im_end|>\n"
        "{% elif m['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m['content'] }}\n"
        "</tool_response><|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert HermesProtocol().result_text(tok, ToolResult("R"), after_eos=False) == (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\nR\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    tok.chat_template = "{% for m in messages %}{% if m['role'] != 'tool' %}{{ m['content'] }}{% endif %}{% endfor %}"
    with pytest.raises(ValueError, match="hermes protocol"):
        HermesProtocol().result_text(tok, ToolResult("R"), after_eos=False)
