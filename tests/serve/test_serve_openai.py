"""``appo serve`` driven by the official ``openai`` client: models, chat (tool calls both ways, streaming,
log-probs), completions, errors; and ``appo eval --endpoint`` against it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from serve_helpers import ANSWER, CALL, PYTHON_SCHEMA, SYSTEM, episode_messages

FIRST, SECOND = episode_messages()


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_chat_returns_the_models_tool_call_as_tool_calls(client):
    r = client.chat.completions.create(model="tiny", messages=FIRST, tools=[PYTHON_SCHEMA], temperature=0,
                                       max_tokens=64)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    (tc,) = ch.message.tool_calls
    assert tc.type == "function" and tc.function.name == "python"
    assert json.loads(tc.function.arguments) == CALL["arguments"]
    assert not ch.message.content
    assert r.usage.completion_tokens > 5 and r.usage.prompt_tokens > 20


def test_chat_with_the_tool_result_answers(client):
    r = client.chat.completions.create(model="tiny", messages=SECOND, tools=[PYTHON_SCHEMA], temperature=0,
                                       max_tokens=64)
    ch = r.choices[0]
    assert ch.finish_reason == "stop" and not ch.message.tool_calls
    assert ch.message.content == ANSWER


def test_tool_choice_none_returns_the_call_as_text(client):
    r = client.chat.completions.create(model="tiny", messages=FIRST, tools=[PYTHON_SCHEMA], tool_choice="none",
                                       temperature=0, max_tokens=64)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content.startswith("<python>print(2+3)</python>")  # not cut at the call


def test_streaming_equals_the_whole_reply(client):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "Who wrote the book?"}], temperature=0, max_tokens=30)
    whole = client.chat.completions.create(**kw).choices[0]
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 3  # generated in chunks of 8 tokens, sent as they come
    assert "".join(deltas) == whole.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.finish_reason
    assert chunks[-1].usage.completion_tokens == 30 or whole.finish_reason == "stop"


def test_streaming_with_tools_sends_the_call(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=FIRST, tools=[PYTHON_SCHEMA], temperature=0,
                                                 max_tokens=64, stream=True))
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "python"
    assert json.loads(calls[0].function.arguments) == CALL["arguments"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_chat_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=SECOND, tools=[PYTHON_SCHEMA], temperature=0,
                                       max_tokens=64, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == ANSWER
    for t in content:
        tops = [x.logprob for x in t.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert t.logprob == pytest.approx(tops[0], abs=1e-5)  # greedy: the chosen token is the most likely
        assert t.logprob <= 0 and bytes(t.bytes).decode() == t.token
    # the taught answer is near-certain
    assert math.exp(sum(t.logprob for t in content) / len(content)) > 0.5


def test_completions_with_logprobs_and_streaming(client):
    kw = dict(model="tiny", prompt="What is 12 * 7", max_tokens=12, temperature=0)
    r = client.completions.create(logprobs=2, **kw)
    ch = r.choices[0]
    lp = ch.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert "".join(lp.tokens) == ch.text
    assert lp.text_offset[0] == 0 and all(len(d) == 2 for d in lp.top_logprobs)
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
    assert streamed == ch.text


def test_completions_stop_string_is_excluded(client):
    kw = dict(model="tiny", prompt="What is 12 * 7", max_tokens=16, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    assert len(full) >= 6
    stop = full[3:5]
    cut = client.completions.create(stop=[stop], **kw)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[: full.index(stop)]


def test_sampling_n_and_seed(client):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "hello"}], temperature=1.0, max_tokens=8, seed=7)
    a = client.chat.completions.create(n=3, **kw)
    b = client.chat.completions.create(n=3, **kw)
    assert len(a.choices) == 3
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_errors_are_openai_errors(client):
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="other", messages=FIRST)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny", messages=FIRST, temperature=5)
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client.chat.completions.create(model="tiny", messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="outside the model's vocabulary"):
        client.completions.create(model="tiny", prompt=[1, 2, 10**6], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.chat.completions.create(model="tiny", messages=FIRST, tools=[PYTHON_SCHEMA], tool_choice="required")


def test_appo_eval_endpoint_runs_the_agent_with_our_tools_and_reward(served, tmp_path):
    data = tmp_path / "two_plus_three.jsonl"
    data.write_text(json.dumps({"question": "What is 2+3?", "answer": "5"}) + "\n")
    out = tmp_path / "eval.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "appo", "eval", "--endpoint", served, "--benchmarks", str(data),
                           "--tools", "python", "--protocol", "tags", "--system-prompt", SYSTEM,
                           "--max-response-tokens", "200",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["tool_calls"] == 1 and row["stop_reason"] == "answer"
    assert row["response"] == "<python>print(2+3)</python>\n<result>\n5\n</result>\n" + ANSWER
    assert res["summary"]["all"]["acc"] == 1.0 and row["metrics"]["format_ok"] == 1.0


def test_appo_eval_endpoint_bad_input_is_one_line(served, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-m", "appo", "eval", "--endpoint", served, "--model", "nope",
                           "--benchmarks", "gsm8k", "--limit", "1", "--tools", "python"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model 'nope' is not served" in proc.stderr and "tiny" in proc.stderr


def test_appo_eval_endpoint_request_refused_is_one_line(served, tmp_path):
    """A chat request the server refuses (here a temperature over its limit; with `vllm serve`, tools without
    --enable-auto-tool-choice) ends in one line with the server's reason and exit 2, not a traceback."""
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 2+3?", "answer": "5"}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-m", "appo", "eval", "--endpoint", served, "--benchmarks", str(data),
                           "--tools", "python", "--temperature", "5", "--out", str(tmp_path / "e.json")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "the endpoint refused the request (400)" in proc.stderr and "temperature" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
