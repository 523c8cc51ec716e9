"""Helpers of the serving tests: a tiny model taught (by overfitting) to call a tool, free ports, a server
subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

QUESTION = "What is 2+3?"
SYSTEM = "Use the tools."
"""The system prompt of the taught episode (short: the tiny tokenizer spells long prompts nearly letter by letter)."""
CALL = {"name": "python", "arguments": {"code": "print(2+3)"}}
ANSWER = "<think>ok</think><answer>\\boxed{5}</answer>"
PYTHON_SCHEMA = {"type": "function", "function": {
    "name": "python", "description": "Runs Python code and returns what it prints.",
    "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "the code"}},
                   "required": ["code"]}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def episode_messages(system: str = SYSTEM) -> tuple[list[dict], list[dict]]:
    """(first request's messages, second request's messages) of the taught episode."""
    first = [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}]
    call = {"id": "call_1", "type": "function", "function": {"name": CALL["name"],
                                                             "arguments": json.dumps(CALL["arguments"])}}
    second = first + [{"role": "assistant", "content": None, "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "5"}]
    return first, second


def teach_tool_calls(model, tokenizer, protocol: str = "tags", steps: int = 120, call_prefix: str = "") -> None:
    """Overfit ``model`` on the two turns of one episode: the question gets ``call_prefix`` then a python
    call (written in ``protocol``), the call's result gets the boxed answer and the end of turn. Greedy
    decoding replays it."""
    from appo.agent.protocols import get_protocol, turn_end_id
    from appo.serve.chat import call_text, render_prompt, request_tools

    proto, tools = get_protocol(protocol), request_tools([PYTHON_SCHEMA])
    first, second = episode_messages()
    pairs = [(render_prompt(tokenizer, proto, first, tools),
              call_prefix + call_text(proto, tools, CALL["name"], CALL["arguments"])),
             (render_prompt(tokenizer, proto, second, tools), ANSWER)]
    seqs = []
    for prompt, target in pairs:
        tgt = list(tokenizer.encode(target, add_special_tokens=False))
        tgt += [turn_end_id(tokenizer)] if target == ANSWER else []
        seqs.append((torch.tensor([prompt + tgt]), len(prompt)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _step in range(steps):
        opt.zero_grad()
        loss = 0.0
        for ids, p in seqs:
            logits = model(input_ids=ids).logits[0, p - 1:-1]
            loss = loss + torch.nn.functional.cross_entropy(logits, ids[0, p:])
        loss.backward()
        opt.step()
    model.eval()


def build_taught_model(folder: Path, tokenizer, protocol: str = "tags", **teach) -> Path:
    """A tiny Llama built with seed 0, taught by :func:`teach_tool_calls` (``teach``: its steps/call_prefix) on
    one thread, and saved as an HF folder under ``folder``."""
    from appo.models.tiny import build_tiny_model, save_pretrained

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_tiny_model(tokenizer, seed=0)
        teach_tool_calls(model, tokenizer, protocol, **teach)
    finally:
        torch.set_num_threads(before)
    return save_pretrained(model, tokenizer, folder / "tiny")


def start_server(args: list[str], port: int, env_extra: dict | None = None, timeout_s: float = 120.0):
    """``python -m appo serve ARGS --port PORT`` as a subprocess, returned once /health answers."""
    import urllib.request

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "appo", "serve", *args, "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--num-threads", "1", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"appo serve exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("appo serve did not answer /health in time")
