"""The `template` protocol: calls read by transformers' parse_response from the tokenizer's response_template,
parallel calls included; results rendered by the chat template; the loop runs and answers every call."""

from __future__ import annotations

import copy
import random

import pytest
from agent_doubles import ScriptedEngine, StubPython, StubSearch, script_policy

from appo.agent.loop import AgentLoop, LoopLimits, LoopStart, verify_token_alignment
from appo.agent.protocols import get_protocol
from appo.agent.template_protocol import TemplateProtocol
from appo.engine.base import SamplingParams
from appo.types import Example, ToolResult

EX = Example(id="t/0", question="What is 2+3?", answers=("5",), kind="math", metric="math_equiv", data_source="t")
TOOLS = {"python": StubPython(), "search": StubSearch()}
# A response format in transformers' declarative schema, for the tiny tokenizer's Qwen-style chat template.
QWEN_STYLE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "reasoning_content": {"open": "<think>", "close": "</think>", "content": "text"},
        "tool_calls": {"open_pattern": r"\s*<tool_call>", "close": "</tool_call>", "repeats": True,
                       "content": "json", "transform": {"type": "function", "function": "{content}"}},
        "content": {"close_pattern": r"\s*<\|im_end\|>", "content": "text"},
    },
}
PY = '<tool_call>\n{"name": "python", "arguments": {"code": "print(2+3)"}}\n</tool_call>'
SEARCH = '<tool_call>\n{"name": "search", "arguments": {"query": "paris"}}\n</tool_call>'
END = "<|im_end|>"


@pytest.fixture()
def tok(tiny_tokenizer):
    t = copy.deepcopy(tiny_tokenizer)
    t.response_template = QWEN_STYLE
    return t


def _proto(tok) -> TemplateProtocol:
    proto = get_protocol("template")
    proto.bind(tok)
    return proto


def test_single_and_parallel_calls(tok):
    proto = _proto(tok)
    act = proto.parse_turn(f"<think>add</think>{PY}{END}", "eos", TOOLS)
    assert act.kind == "call" and act.error is None and not act.more
    assert (act.call.name, act.call.arguments) == ("python", {"code": "print(2+3)"})
    act = proto.parse_turn(f"Two lookups.\n{PY}\n{SEARCH}{END}", "eos", TOOLS)
    assert [a.call.name for a in (act, *act.more)] == ["python", "search"]
    assert act.more[0].call.arguments == {"query": "paris"} and act.more[0].call_start > act.call_start
    assert proto.parse_turn(f"It is \\boxed{{5}}.{END}", "eos", TOOLS).kind == "answer"


def test_malformed_and_unknown_calls_are_errors_the_model_sees(tok):
    proto = _proto(tok)
    bad = proto.parse_turn("<tool_call>\n{not json}\n</tool_call><|im_end|>", "eos", TOOLS)
    assert bad.kind == "call" and bad.error.error == "parse" and "could not be read" in bad.error.text
    act = proto.parse_turn(f'{PY}\n<tool_call>\n{{"name": "shell", "arguments": {{}}}}\n</tool_call>{END}', "eos",
                           TOOLS)
    assert act.error is None and act.more[0].error.error == "unknown_tool"


def test_parallel_results_match_the_chat_template(tok):
    proto = _proto(tok)
    results = [ToolResult("out:5"), ToolResult("doc about paris")]
    pieces = proto.results_ids(tok, results, after_eos=False)
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
            {"role": "tool", "content": "out:5"}, {"role": "tool", "content": "doc about paris"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    joined = "".join(tok.decode(p, skip_special_tokens=False) for p in pieces)
    assert rendered.endswith("a" + joined)  # closer of the assistant turn, both responses, next prompt
    assert tok.decode(pieces[0], skip_special_tokens=False).endswith("out:5")
    after = "".join(tok.decode(p, skip_special_tokens=False) for p in proto.results_ids(tok, results, after_eos=True))
    assert after == joined.removeprefix(tok.eos_token)


def test_loop_runs_parallel_calls_and_spans_align(tok):
    tools = {"python": StubPython(), "search": StubSearch()}
    def scripts(key):
        return [f"Both.\n{PY}\n{SEARCH}{END}", f"<answer>\\boxed{{5}}</answer>{END}"]

    engine = ScriptedEngine(tok, script_policy(tok, scripts))
    loop = AgentLoop(engine, tok, "template", tools, SamplingParams(max_new_tokens=96),
                     LoopLimits(max_tool_calls=3, max_response_tokens=400), random.Random(0))
    prompt = tuple(get_protocol("template").build_prompt_ids(EX, tok, tools))
    assert "<tools>" in tok.decode(list(prompt))  # the template lists the tools
    loop.add(LoopStart(group=0, uid=0, prompt_ids=prompt))
    (row,) = loop.run()
    assert row.stop_reason == "answer" and [s.name for s in row.tool_spans] == ["python", "search"]
    assert all(s.ok for s in row.tool_spans)
    s0, s1 = row.tool_spans
    assert s0.call_start < s1.call_start < s0.call_end and s0.result_end == s1.call_end  # results in call order
    text = row.response_text
    assert text.index("out:") < text.index("doc about paris") < text.index("<answer>")
    verify_token_alignment(row, loop.generations(0))
    # a limit of one call: the second parallel call is not run
    loop = AgentLoop(ScriptedEngine(tok, script_policy(tok, scripts)), tok, "template", tools,
                     SamplingParams(max_new_tokens=96), LoopLimits(max_tool_calls=1, max_response_tokens=400),
                     random.Random(0))
    loop.add(LoopStart(group=0, uid=0, prompt_ids=prompt))
    (row,) = loop.run()
    assert [s.name for s in row.tool_spans] == ["python"]


def test_a_tokenizer_without_a_response_format_is_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="needs a tokenizer with a response_template"):
        get_protocol("template").bind(tiny_tokenizer)
    TemplateProtocol(response_template=QWEN_STYLE).bind(tiny_tokenizer)  # a schema given by the caller
