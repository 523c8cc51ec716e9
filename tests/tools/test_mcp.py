"""MCP tools against a real MCP server (tests/tools/mcp_server.py) over stdio and streamable HTTP."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appo.tools.registry import build_tools

SERVER = Path(__file__).with_name("mcp_server.py")
STDIO = f"mcp:{sys.executable} {SERVER}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stdio_tools():
    tools = {t.name: t for t in build_tools([{"name": STDIO, "timeout_s": 1.0}])}
    yield tools
    for t in tools.values():
        t.close()


@pytest.fixture(scope="module")
def http_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("MCP HTTP server did not start")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


def test_stdio_lists_tools_with_schemas(stdio_tools):
    assert set(stdio_tools) == {"add", "shout", "fail", "slow"}
    add = stdio_tools["add"]
    assert add.description == "Add two integers."
    assert add.parameters["required"] == ["a", "b"]
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert add.tag_argument == "a"
    assert add.schema()["function"]["name"] == "add"


def test_stdio_call_and_tag_bodies(stdio_tools):
    res = stdio_tools["add"].call({"a": 2, "b": 40})
    assert res.ok and res.text == "42"
    # a tag-protocol body: JSON object of the arguments, or the text of the first argument
    assert stdio_tools["add"].call({"a": '{"a": 1, "b": 2}'}).text == "3"
    assert stdio_tools["shout"].call({"text": "hi"}).text == "HI!"


def test_stdio_errors_are_tool_results(stdio_tools):
    res = stdio_tools["fail"].call({"reason": "no way"})
    assert not res.ok and res.error == "tool_error" and "refused: no way" in res.text
    bad = stdio_tools["add"].call({"a": "x"})
    assert not bad.ok and bad.error == "tool_error" and bad.text.startswith("Error:")


def test_stdio_timeout_then_connection_still_works(stdio_tools):
    t0 = time.time()
    res = stdio_tools["slow"].call({"seconds": 5})
    assert not res.ok and res.error == "timeout" and "timed out after 1 s" in res.text
    assert time.time() - t0 < 4
    assert stdio_tools["add"].call({"a": 1, "b": 1}).text == "2"


def test_parallel_calls_share_the_session(stdio_tools):
    outs = stdio_tools["add"].call_batch([{"a": i, "b": 1} for i in range(8)])
    assert [o.text for o in outs] == [str(i + 1) for i in range(8)]


def test_http_list_call_and_include(http_url):
    tools = build_tools([{"name": f"mcp:{http_url}", "include": ["add", "fail"], "prefix": "m_"}])
    try:
        assert sorted(t.name for t in tools) == ["m_add", "m_fail"]
        by = {t.name: t for t in tools}
        assert by["m_add"].call({"a": 5, "b": 6}).text == "11"
        assert by["m_fail"].call({"reason": "r"}).error == "tool_error"
    finally:
        for t in tools:
            t.close()
    # after close, a call is an error result, never an exception
    assert tools[0].call({"a": 1, "b": 2}).error == "mcp"


def test_bad_specs_fail_clearly(http_url):
    with pytest.raises(ConnectionError, match="cannot start the MCP server"):
        build_tools([{"name": f"mcp:{sys.executable} -c pass", "connect_timeout_s": 10}])
    with pytest.raises(ValueError, match="has no tool 'nope'"):
        build_tools([{"name": f"mcp:{http_url}", "include": ["nope"]}])
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        build_tools([{"name": f"mcp:{http_url}", "bogus": 1}])


def test_agent_rollout_uses_an_mcp_tool(tiny_tokenizer, stdio_tools):
    sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))
    from agent_doubles import ScriptedEngine, script_policy

    from appo.agent.loop import AgentLoop, LoopLimits, LoopStart
    from appo.agent.protocols import get_protocol
    from appo.engine.base import SamplingParams
    from appo.types import Example

    tok = tiny_tokenizer
    tools = {"add": stdio_tools["add"]}
    proto = get_protocol("tags")
    system = proto.default_system_prompt(tools)
    assert "<add>" in system and "Add two integers." in system
    scripts = ['<think>sum</think><add>{"a": 2, "b": 3}</add>', "<think>ok</think><answer>\\boxed{5}</answer>"]
    engine = ScriptedEngine(tok, script_policy(tok, lambda key: scripts))
    loop = AgentLoop(engine, tok, proto, tools, SamplingParams(max_new_tokens=64),
                     LoopLimits(max_tool_calls=2, max_response_tokens=256), random.Random(0))
    ex = Example(id="t/0", question="What is 2+3?", answers=("5",), kind="math", metric="math_equiv", data_source="t")
    loop.add(LoopStart(group=0, uid=0, prompt_ids=tuple(proto.build_prompt_ids(ex, tok, tools))))
    (row,) = loop.run()
    assert row.stop_reason == "answer"
    assert row.num_tool_calls == 1 and row.tool_spans[0].ok and row.tool_spans[0].name == "add"
    assert "<result>\n5\n</result>" in row.response_text
    # Hermes: the MCP tool's schema goes to the chat template's tool list
    assert get_protocol("hermes").template_tools(tools)[0]["function"]["parameters"]["required"] == ["a", "b"]


BROKEN = "import sys; sys.stderr.write('starting\\nboom: no config file at /etc/x.toml\\n'); sys.exit(3)"


def test_a_server_that_dies_at_start_up_is_one_line_with_its_stderr():
    import time

    from appo.cli_errors import describe_error
    from appo.tools.mcp import MCPStartupError

    t0 = time.time()
    with pytest.raises(MCPStartupError) as info:
        build_tools([{"name": f'mcp:{sys.executable} -c "{BROKEN}"', "connect_timeout_s": 20}])
    assert time.time() - t0 < 15
    msg = str(info.value)
    assert "\n" not in msg and "boom: no config file at /etc/x.toml" in msg and "TaskGroup" not in msg
    err = describe_error(info.value)
    assert err is not None and err.code == 2


def test_a_server_that_never_answers_is_stopped_at_the_start_up_timeout():
    import time

    from appo.tools.mcp import MCPStartupError

    t0 = time.time()
    with pytest.raises(MCPStartupError, match=r"no answer in 2 s \(connect_timeout_s\)"):
        build_tools([{"name": "mcp:sleep 100", "connect_timeout_s": 2}])
    assert time.time() - t0 < 10


def test_a_missing_command_names_it():
    with pytest.raises(ConnectionError, match="no-such-mcp-server-cmd"):
        build_tools([{"name": "mcp:no-such-mcp-server-cmd --flag", "connect_timeout_s": 10}])


def test_cli_exits_2_with_one_line(tiny_model_dir, tmp_path):
    import subprocess

    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    cmd = [sys.executable, "-m", "appo", "eval", "--model", str(tiny_model_dir), "--benchmarks", str(data),
           "--limit", "1", "--tools", f'mcp:{sys.executable} -c "{BROKEN}"']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "boom: no config file" in lines[0], out.stderr[-2000:]


def test_missing_mcp_package_names_the_extra(tmp_path):
    import subprocess

    code = ("import sys; sys.modules['mcp'] = None\n"
            "from appo.tools.registry import build_tools\n"
            "build_tools(['mcp:whatever'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'appo[mcp]'" in out.stderr
