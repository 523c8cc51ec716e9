"""OpenAI messages <-> the tags and Hermes protocols (rendering and parsing), and what `appo serve` loads
from a run directory."""

from __future__ import annotations

import json

import pytest
import yaml
from serve_helpers import PYTHON_SCHEMA

from appo.agent.protocols import get_protocol
from appo.serve.chat import call_text, parse_turn, render_prompt, request_tools

TOOLS = request_tools([PYTHON_SCHEMA])
CALL_MSG = {"role": "assistant", "content": "<think>a</think>", "tool_calls": [
    {"id": "c1", "type": "function", "function": {"name": "python", "arguments": json.dumps({"code": "print(1)"})}}]}


def _text(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_tags_prompt_describes_tools_and_appends_history_like_the_loop(tiny_tokenizer):
    tok = tiny_tokenizer
    user = [{"role": "user", "content": "Q?"}]
    head = _text(tok, render_prompt(tok, "tags", user, TOOLS))
    assert "To use the python tool, write <python>" in head  # the protocol's system prompt, tools listed
    own = _text(tok, render_prompt(tok, "tags", [{"role": "system", "content": "S."}] + user, TOOLS))
    assert "<python>" not in own and "S." in own  # a client's system prompt is kept as is
    full = _text(tok, render_prompt(tok, "tags", user + [CALL_MSG, {"role": "tool", "tool_call_id": "c1",
                                                                     "content": "1"}], TOOLS))
    assert full == head + "<think>a</think><python>print(1)</python>\n<result>\n1\n</result>\n"


def test_hermes_prompt_uses_the_template_for_tools_and_results(tiny_tokenizer):
    tok = tiny_tokenizer
    user = [{"role": "user", "content": "Q?"}]
    head = _text(tok, render_prompt(tok, "hermes", user, TOOLS))
    full = _text(tok, render_prompt(tok, "hermes", user + [CALL_MSG, {"role": "tool", "tool_call_id": "c1",
                                                                       "content": "1"}], TOOLS))
    proto = get_protocol("hermes")
    from appo.types import ToolResult

    call = '<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"}}\n</tool_call>'
    assert full == head + "<think>a</think>" + call + proto.result_text(tok, ToolResult("1"), after_eos=False)


@pytest.mark.parametrize("protocol", ["tags", "hermes"])
def test_calls_round_trip(protocol):
    for args in ({"code": "print(1)"}, {"code": "x = {'a': 1}\nprint(x)"}):
        text = "<think>t</think>" + call_text(get_protocol(protocol), TOOLS, "python", args)
        turn = parse_turn(protocol, text, "stop", TOOLS)
        assert turn.content == "<think>t</think>"
        assert [(c.name, c.arguments) for c in turn.tool_calls] == [("python", args)]


def test_malformed_or_unknown_calls_stay_text():
    for protocol, text in (("tags", "<search>q</search>"), ("hermes", "<tool_call>{bad json</tool_call>"),
                           ("hermes", '<tool_call>{"name": "nope", "arguments": {}}</tool_call>')):
        turn = parse_turn(protocol, text, "stop", TOOLS)
        assert turn.tool_calls == () and turn.content == text
    assert parse_turn("tags", "<python>1</python>", "stop", {}).tool_calls == ()  # no tools: no parsing


def test_bad_messages_and_tools_are_value_errors(tiny_tokenizer):
    with pytest.raises(ValueError, match="no user message"):
        render_prompt(tiny_tokenizer, "tags", [{"role": "assistant", "content": "x"}], {})
    with pytest.raises(ValueError, match="unknown message role"):
        render_prompt(tiny_tokenizer, "tags", [{"role": "robot", "content": "x"}], {})
    with pytest.raises(ValueError, match="function"):
        request_tools([{"type": "function", "function": {"description": "no name"}}])
    with pytest.raises(ValueError, match="JSON object"):
        render_prompt(tiny_tokenizer, "tags", [{"role": "user", "content": "q"}, {
            "role": "assistant", "content": "", "tool_calls": [{"function": {"name": "python", "arguments": "[1]"}}]}],
            TOOLS)


def test_serving_a_run_directory_and_its_checkpoints(tmp_path, tiny_model, tiny_tokenizer):
    from fastapi.testclient import TestClient

    from appo.serve import build_app, resolve_source
    from appo.train.checkpoint import save_checkpoint

    run = tmp_path / "myrun"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"rollout": {"protocol": "tags"}, "model": {"path": "base"}}))
    save_checkpoint(run, 3, tiny_model, tokenizer=tiny_tokenizer)
    save_checkpoint(run, 7, tiny_model, tokenizer=tiny_tokenizer)
    src = resolve_source(run)
    assert src.step == 7 and src.protocol == "tags" and src.default_name == "myrun/step_7"
    assert src.model.endswith("step_000007/model") and src.tokenizer is None
    assert resolve_source(run / "checkpoints" / "latest").step == 7
    assert resolve_source(run / "checkpoints" / "step_000003").step == 3
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
        resolve_source(tmp_path / "empty")

    app = build_app(str(run / "checkpoints" / "step_000003"), device="cpu", num_threads=1)
    assert app.state.settings.protocol == "tags" and app.state.settings.model_name == "myrun/step_3"
    with TestClient(app) as http:
        assert http.get("/v1/models").json()["data"][0]["id"] == "myrun/step_3"
        r = http.post("/v1/chat/completions", json={"model": "myrun/step_3", "max_tokens": 4, "temperature": 0,
                                                    "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4
        bad = http.post("/v1/chat/completions", json={"model": "myrun/step_3", "messages": "not a list"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
