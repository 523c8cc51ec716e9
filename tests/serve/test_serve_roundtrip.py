"""The tool round trip renders the model's input exactly: a conversation the agent loop ran, converted into
the OpenAI messages a client sends back (the server's reply parsed by the server's own code, the client's
tool results), renders through the server's path to the loop's very token ids; and a served model answers
that conversation, through real HTTP, with what the loop sampled."""

from __future__ import annotations

import json
import random

import pytest
import torch
from serve_helpers import QUESTION, SYSTEM, build_taught_model, free_port, start_server

THINK = "<think>ok</think>\n"  # the newline before the call is what a stripped content lost


@pytest.fixture(scope="module")
def thinking_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny Llama taught to write ``<think>ok</think>\\n<python>print(2+3)</python>``, then the answer."""
    return build_taught_model(tmp_path_factory.mktemp("thinking"), tiny_tokenizer, "tags", steps=150, call_prefix=THINK)


def loop_rollout(model_dir, tokenizer, tools):
    """One greedy episode of the agent loop (HF engine) on the taught question."""
    from transformers import AutoModelForCausalLM

    from appo.agent.loop import AgentLoop, LoopLimits, LoopStart
    from appo.agent.protocols import build_prompt_ids
    from appo.engine.base import SamplingParams
    from appo.engine.hf import HFEngine
    from appo.types import Example

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ex = Example(id="t/0", question=QUESTION, answers=("5",), kind="math", metric="math", data_source="t")
    prompt = build_prompt_ids("tags", ex, tokenizer, tools, SYSTEM)
    loop = AgentLoop(HFEngine(model, tokenizer), tokenizer, "tags", tools,
                     SamplingParams(temperature=0.0, max_new_tokens=64), LoopLimits(max_tool_calls=2),
                     random.Random(0))
    loop.add(LoopStart(group=0, uid=0, prompt_ids=tuple(prompt)))
    (rollout,) = loop.run()
    return rollout


def as_client_messages(rollout, tokenizer, tools) -> list[dict]:
    """The conversation as an OpenAI client holds it: each model turn as the server returns it (parsed by
    the server's code), each tool result as the client's tool produced it."""
    from appo.serve.chat import parse_turn
    from appo.serve.client import _run_call

    decode = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False)  # noqa: E731
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    start = 0
    for k, span in enumerate(rollout.tool_spans):
        turn = parse_turn("tags", decode(rollout.response_ids[start:span.call_end]), "stop", tools)
        assert len(turn.tool_calls) == 1
        call = turn.tool_calls[0]
        args = json.dumps(call.arguments)
        msgs.append({"role": "assistant", "content": turn.content,
                     "tool_calls": [{"id": f"c{k}", "type": "function", "function": {"name": call.name,
                                                                                      "arguments": args}}]})
        _, result = _run_call(tools, call.name, args)
        msgs.append({"role": "tool", "tool_call_id": f"c{k}", "content": result.text})
        start = span.result_end
    return msgs


def test_round_trip_renders_the_loops_token_ids(thinking_model_dir, tiny_tokenizer):
    from appo.serve.chat import render_prompt
    from appo.tools.python_sandbox import PythonTool

    tools = {"python": PythonTool()}
    rollout = loop_rollout(thinking_model_dir, tiny_tokenizer, tools)
    assert rollout.tool_spans and rollout.stop_reason == "answer", rollout.response_text
    assert THINK + "<python>" in rollout.response_text
    msgs = as_client_messages(rollout, tiny_tokenizer, tools)
    assert msgs[2]["content"] == THINK  # the newline survives the reply
    rendered = render_prompt(tiny_tokenizer, "tags", msgs, tools)
    upto = rollout.tool_spans[-1].result_end
    assert rendered == list(rollout.prompt_ids) + list(rollout.response_ids[:upto])


def test_served_model_answers_the_round_trip_as_the_loop_did(thinking_model_dir, tiny_tokenizer):
    """Through real HTTP: the first reply is the loop's first turn, and the reply to the history is the loop's
    final answer, token for token (usage counts the same prompt)."""
    from openai import OpenAI

    from appo.tools.python_sandbox import PythonTool

    tools = {"python": PythonTool()}
    rollout = loop_rollout(thinking_model_dir, tiny_tokenizer, tools)
    msgs = as_client_messages(rollout, tiny_tokenizer, tools)
    port = free_port()
    proc = start_server([str(thinking_model_dir), "--name", "tiny", "--protocol", "tags"], port)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
        schemas = [t.schema() for t in tools.values()]
        first = client.chat.completions.create(model="tiny", messages=msgs[:2], tools=schemas, temperature=0,
                                               max_tokens=64)
        assert first.choices[0].message.content == msgs[2]["content"]
        assert first.choices[0].message.tool_calls[0].function.arguments == \
            msgs[2]["tool_calls"][0]["function"]["arguments"]
        last = client.chat.completions.create(model="tiny", messages=msgs, tools=schemas, temperature=0, max_tokens=64)
        upto = rollout.tool_spans[-1].result_end
        assert last.usage.prompt_tokens == len(rollout.prompt_ids) + upto
        answer = tiny_tokenizer.decode(list(rollout.response_ids[upto:]), skip_special_tokens=True)
        assert last.choices[0].message.content == answer
    finally:
        proc.terminate()
        proc.wait(15)
