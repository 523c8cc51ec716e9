"""``appo vllm-serve``'s parts that need no vLLM: the tags chat template renders what training renders, the
server's argument list, and the one-line refusal without vLLM. The server itself, our parser inside it and
``appo eval --endpoint`` through it run against the real vLLM in ``tests/vllm_real/test_vllm_serve_real.py``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from appo.agent.protocols import TagsProtocol
from appo.serve.chat import render_prompt, request_tools
from appo.serve.tags_template import tags_chat_template, template_prompt_ids
from appo.serve.vllm_serve import PLUGIN_MODULE, SERVER_MODULE, VLLMServeOptions, vllm_serve_args

SEARCH_SCHEMA = {"type": "function", "function": {
    "name": "search", "description": "Searches the web.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
                   "required": ["query"]}}}
PYTHON_SCHEMA = {"type": "function", "function": {
    "name": "python", "description": "Runs Python code and returns what it prints.",
    "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}


def _call(i: int, name: str, args: dict) -> dict:
    return {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


CONVERSATIONS = {
    "question": [{"role": "system", "content": "Use the tools."}, {"role": "user", "content": "What is 2+3?"}],
    "no system (default prompt lists the tools)": [{"role": "user", "content": "What is 2+3?"}],
    "developer": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "two calls, content before each, one JSON-args call": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "<think>a</think>\n",
         "tool_calls": [_call(1, "python", {"code": "print(1)"})]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
        {"role": "assistant", "content": None, "tool_calls": [_call(2, "search", {"query": "x", "k": 2})]},
        {"role": "tool", "tool_call_id": "c2", "content": "found x"}],
    "a finished episode, then a new question": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "", "tool_calls": [_call(1, "python", {"code": "print(2)"})]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
        {"role": "assistant", "content": "<answer>\\boxed{2}</answer>"},
        {"role": "user", "content": "Q2"}],
}

LLAMA3_LIKE = ("{{ eos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
"""Reads a context variable (``eos_token``) from inside the macro the wrapper puts it in."""
QWEN_LIKE = ("{%- macro render(c) -%}{{- c if c is string else '' -}}{%- endmacro -%}"
             "{%- set ns = namespace(sys=false) -%}"
             "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n' }}{%- for t in tools %}{{- t | tojson }}"
             "{%- endfor %}{{- '<|im_end|>\\n' }}{%- endif %}"
             "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + render(message.content) "
             "+ '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
             "{%- endif %}")
"""Defines its own macro and lists ``tools`` (which the wrapper must not pass: tags describe tools in text)."""


@pytest.mark.parametrize("base", ["tiny", "llama3", "qwen"])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_tags_template_renders_the_ids_training_renders(tiny_tokenizer, base, name):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = {"tiny": tok.chat_template, "llama3": LLAMA3_LIKE, "qwen": QWEN_LIKE}[base]
    template = tags_chat_template(tok.chat_template)
    tools = request_tools([PYTHON_SCHEMA, SEARCH_SCHEMA])
    msgs = CONVERSATIONS[name]
    served = template_prompt_ids(tok, template, msgs, tools)
    trained = render_prompt(tok, "tags", msgs, tools)
    assert tok.decode(served) == tok.decode(trained)
    assert served == trained


def test_the_running_episode_stays_one_assistant_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    template = tags_chat_template(tok.chat_template)
    tools = request_tools([PYTHON_SCHEMA])
    text = tok.decode(template_prompt_ids(tok, template, CONVERSATIONS["two calls, content before each, "
                                                                       "one JSON-args call"][:4], tools))
    assert text.endswith("<|im_start|>assistant\n<think>a</think>\n<python>print(1)</python>\n<result>\n1\n"
                         "</result>\n")
    assert "<tool_call>" not in text and "<tool_response>" not in text  # the model template's Hermes blocks


def test_a_custom_result_block_is_used(tiny_tokenizer):
    proto = TagsProtocol(result_template="\n<output>{text}</output>\n")
    template = tags_chat_template(tiny_tokenizer.chat_template, proto)
    msgs = CONVERSATIONS["two calls, content before each, one JSON-args call"][:4]
    ids = template_prompt_ids(tiny_tokenizer, template, msgs, request_tools([PYTHON_SCHEMA]))
    assert ids == render_prompt(tiny_tokenizer, proto, msgs, request_tools([PYTHON_SCHEMA]))


def test_templates_that_cannot_be_wrapped_are_refused():
    with pytest.raises(ValueError, match="no chat template"):
        tags_chat_template("")
    with pytest.raises(ValueError, match="extends"):
        tags_chat_template("{% extends 'base.jinja' %}")


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_vllm_serve_args_name_our_parser_template_and_cpu_settings(tiny_model_dir, tmp_path):
    args = vllm_serve_args(str(tiny_model_dir), VLLMServeOptions(port=8123, name="tiny"), tmp_path)
    assert args[:2] == ["-m", SERVER_MODULE]
    assert _flag(args, "--tool-parser-plugin") == PLUGIN_MODULE and _flag(args, "--tool-call-parser") == "appo_tags"
    assert "--enable-auto-tool-choice" in args
    assert _flag(args, "--model") == str(tiny_model_dir) and _flag(args, "--served-model-name") == "tiny"
    assert _flag(args, "--port") == "8123" and _flag(args, "--host") == "127.0.0.1"
    assert _flag(args, "--dtype") == "float32" and _flag(args, "--gpu-memory-utilization") == "0.07"
    assert _flag(args, "--block-size") == "32" and "--no-enable-chunked-prefill" in args
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert Path(_flag(args, "--chat-template")).read_text() == tags_chat_template(tok.chat_template)


def test_vllm_serve_args_hermes_keeps_the_model_template_and_extra_args_follow(tiny_model_dir, tmp_path):
    opts = VLLMServeOptions(protocol="hermes", kv_cache_memory_bytes=2**27, extra_args=("--max-num-seqs", "4"))
    args = vllm_serve_args(str(tiny_model_dir), opts, tmp_path)
    assert _flag(args, "--tool-call-parser") == "appo_hermes" and "--chat-template" not in args
    assert _flag(args, "--kv-cache-memory-bytes") == str(2**27) and "--gpu-memory-utilization" not in args
    assert args[-2:] == ["--max-num-seqs", "4"]


def test_vllm_serve_args_refuse_what_they_cannot_serve(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="response_template"):
        vllm_serve_args(str(tiny_model_dir), VLLMServeOptions(protocol="template"), tmp_path)


def test_cli_without_vllm_is_one_line_and_exit_2(tiny_model_dir):
    from appo.engine.registry import vllm_importable

    if vllm_importable():
        pytest.skip("this Python has vLLM (the refusal is for one that does not)")
    out = subprocess.run([sys.executable, "-m", "appo", "vllm-serve", str(tiny_model_dir)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "make vllm-env" in lines[0], out.stderr


def test_sigterm_stops_the_whole_server_group(tmp_path):
    """``serve_vllm`` (the CLI's call) on SIGTERM stops the server's process group and returns; the server here is a
    stand-in child (``sleep``) with a grandchild, started the way :func:`start_vllm_server` starts vLLM."""
    import signal
    import time

    pids = tmp_path / "pids"
    script = f"""
import subprocess, sys
import appo.serve.vllm_serve as vs

def fake_start(model, options, workdir, **popen):
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & echo $! > {pids}; wait"], start_new_session=True)
    return proc

vs.start_vllm_server = fake_start
sys.exit(vs.serve_vllm("unused"))
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not (pids.exists() and pids.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    grandchild = int(pids.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    status = Path(f"/proc/{grandchild}/status")
    state = status.read_text().split("State:")[1].split()[0] if status.exists() else "gone"
    assert state in ("gone", "Z"), f"the server's grandchild is still running ({state})"  # Z: dead, not yet reaped


def test_vllm_serve_memory_share_is_checked_like_trainings(monkeypatch):
    """`appo vllm-serve`'s share check is the engine's (`check_memory_share`), spelled as the flag: out of
    (0, 1] always refused; over the free share of host RAM refused unless a KV cache in bytes replaces it."""
    import appo.engine.registry as R
    from appo.serve.vllm_serve import check_vllm_serve

    monkeypatch.setattr(R, "vllm_importable", lambda: True)
    monkeypatch.setattr(R, "host_memory_fraction_free", lambda: 0.3)
    with pytest.raises(ValueError, match=r"^--gpu-memory-utilization 1.5 must be in \(0, 1\]; fix: "
                                         r"--gpu-memory-utilization 0.07"):
        check_vllm_serve(VLLMServeOptions(gpu_memory_utilization=1.5))
    with pytest.raises(ValueError, match=r"--gpu-memory-utilization 0.4: .*only 0.30 of it is free; fix: "
                                         r"--gpu-memory-utilization 0.07"):
        check_vllm_serve(VLLMServeOptions(gpu_memory_utilization=0.4))
    check_vllm_serve(VLLMServeOptions(gpu_memory_utilization=0.4, kv_cache_memory_bytes=1 << 28))
    check_vllm_serve(VLLMServeOptions(gpu_memory_utilization=0.07))
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        check_vllm_serve(VLLMServeOptions(gpu_memory_utilization=0, kv_cache_memory_bytes=1 << 28))
