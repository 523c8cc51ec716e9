"""OpenAI chat messages and tools <-> the model's own tool-call protocol (``tags``, ``hermes``, ...).

The server renders a conversation exactly as the agent loop renders a rollout, so a trained policy sees
the format it was trained on:

- the conversation up to the last ``user`` (or ``system``) message goes through the tokenizer's chat
  template with a generation prompt, ``tools=`` for protocols whose template lists tools (Hermes), and,
  for protocols that describe tools in the system prompt (tags), the protocol's default system prompt
  when the request brings tools and no system message;
- what follows (assistant turns with ``tool_calls``, ``tool`` results) is appended as the loop appends it,
  each piece tokenized on its own: an assistant message becomes its content plus each call written in the
  protocol's syntax (:func:`call_text`), the ``tool`` messages after it become
  :meth:`ToolProtocol.results_ids` of their contents. A conversation the loop ran therefore renders to the
  loop's own token ids (tested against :class:`~appo.agent.loop.AgentLoop`), as long as the model's text
  re-tokenizes to the ids it sampled and a ``tags`` call body has no whitespace or indentation around
  it (the protocol hands the tool the dedented, stripped body, and that is what comes back).

A finished model turn is read back with the protocol's own :meth:`ToolProtocol.parse_turn`: a valid
call becomes one OpenAI ``tool_calls`` entry (arguments as a JSON string; ``finish_reason`` becomes
``tool_calls``) and the text before the call, verbatim, is the message ``content``. A malformed call (unknown tool,
bad JSON) is returned as plain content, for the client to see. ``tags`` and ``hermes`` write one call per
turn (the engine stops at the first call's closing string); the ``template`` protocol (transformers'
response parser) returns every parallel call of the turn. In the history, calls are written back in
``tags`` syntax for ``tags`` and as Hermes ``<tool_call>{json}</tool_call>`` otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appo.agent.protocols import ToolProtocol, get_protocol
from appo.tools.base import Tool
from appo.types import ToolCall, ToolResult


class SchemaTool(Tool):
    """A tool known only by its OpenAI schema (the client runs it); the server never calls it."""

    def __init__(self, spec: Mapping[str, Any]):
        fn = spec.get("function") if spec.get("type", "function") == "function" else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError('each tool must be {"type": "function", "function": {"name": ..., "parameters": {...}}}')
        self.name = fn["name"]
        self.description = str(fn.get("description") or "")
        self.parameters = dict(fn.get("parameters") or {"type": "object", "properties": {}})
        req = list(self.parameters.get("required") or [])
        self.tag_argument = (req or list(self.parameters.get("properties") or {}) or [""])[0]

    def call(self, arguments: dict) -> ToolResult:
        return ToolResult(text="Error: this tool runs on the client", ok=False, error="client_tool")


def request_tools(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, Tool]:
    """The request's ``tools`` as :class:`SchemaTool` objects by name; raises ValueError on bad entries."""
    out: dict[str, Tool] = {}
    for spec in tools or ():
        t = SchemaTool(spec)
        if t.name in out:
            raise ValueError(f"two tools are named {t.name!r}")
        out[t.name] = t
    return out


def call_text(protocol: ToolProtocol, tools: Mapping[str, Tool], name: str, arguments: dict) -> str:
    """A call written in the protocol's syntax: tags ``<name>body</name>`` (the tag argument, or the
    arguments as JSON when there are several), otherwise Hermes ``<tool_call>{json}</tool_call>``."""
    if protocol.name == "tags":
        tool = tools.get(name)
        arg = getattr(tool, "tag_argument", "") if tool is not None else ""
        if arg and set(arguments) <= {arg} and isinstance(arguments.get(arg, ""), str):
            body = arguments.get(arg, "")
        else:
            body = json.dumps(arguments, ensure_ascii=False)
        return f"<{name}>{body}</{name}>"
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


def _arguments(raw: Any) -> dict:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        obj = json.loads(raw or "{}")
    except (TypeError, ValueError):
        raise ValueError(f"tool call arguments must be a JSON object string, got {str(raw)[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"tool call arguments must be a JSON object, got {str(raw)[:80]!r}")
    return obj


def _content(msg: Mapping[str, Any]) -> str:
    """Message content as text (a list of ``{"type": "text"}`` parts is joined)."""
    c = msg.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        parts = []
        for p in c:
            if isinstance(p, Mapping) and p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            else:
                raise ValueError("only text content parts are supported (no images or audio)")
        return "".join(parts)
    raise ValueError(f"message content must be a string or a list of text parts, got {type(c).__name__}")


def _assistant_text(protocol, tools, msg) -> str:
    text = _content(msg)
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        text += call_text(protocol, tools, str(fn.get("name", "")), _arguments(fn.get("arguments")))
    return text


def render_prompt(tokenizer, protocol: str | ToolProtocol, messages: Sequence[Mapping[str, Any]],
                  tools: Mapping[str, Tool]) -> list[int]:
    """Prompt token ids for an OpenAI ``messages`` list (see the module docstring)."""
    proto = get_protocol(protocol)
    proto.bind(tokenizer)
    if not messages:
        raise ValueError("messages is empty; send at least one user message")
    roles = [m.get("role") for m in messages]
    bad = next((r for r in roles if r not in ("system", "developer", "user", "assistant", "tool")), None)
    if bad is not None:
        raise ValueError(f"unknown message role {bad!r}; use system, user, assistant or tool")
    last_user = max((i for i, r in enumerate(roles) if r in ("user", "system", "developer")), default=-1)
    if last_user < 0:
        raise ValueError("messages has no user message")
    head: list[dict] = []
    for m in messages[: last_user + 1]:
        role = "system" if m["role"] == "developer" else m["role"]
        if role == "assistant":
            head.append({"role": "assistant", "content": _assistant_text(proto, tools, m)})
        elif role == "tool" and proto.template_tools(tools) is None and head and head[-1]["role"] == "assistant":
            head[-1]["content"] += proto.result_text(tokenizer, ToolResult(_content(m)), after_eos=False)
        else:
            head.append({"role": role, "content": _content(m)})
    if tools and head[0]["role"] != "system" and proto.template_tools(tools) is None:
        head.insert(0, {"role": "system", "content": proto.default_system_prompt(tools)})
    text = tokenizer.apply_chat_template(head, tools=proto.template_tools(tools) if tools else None, tokenize=False,
                                         add_generation_prompt=True)
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    rest = list(messages[last_user + 1:])
    k = 0
    while k < len(rest):  # each piece tokenized on its own, as the loop appends it
        if rest[k]["role"] == "assistant":
            ids += tokenizer.encode(_assistant_text(proto, tools, rest[k]), add_special_tokens=False)
            k += 1
            continue
        results = []
        while k < len(rest) and rest[k]["role"] != "assistant":
            results.append(ToolResult(_content(rest[k])))
            k += 1
        try:
            pieces = proto.results_ids(tokenizer, results, after_eos=False)
        except ValueError:  # a protocol that answers one call per turn, sent several results
            pieces = [proto.result_ids(tokenizer, r, after_eos=False) for r in results]
        for piece in pieces:
            ids += piece
    return ids


@dataclass(frozen=True)
class ParsedTurn:
    """A model turn as an OpenAI assistant message."""

    content: str | None
    """Text before the call (None when empty and a call was made)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Calls the model made (at most one with the built-in protocols)."""


def parse_turn(protocol: str | ToolProtocol, text: str, finish: str, tools: Mapping[str, Tool]) -> ParsedTurn:
    """Read a finished turn (``finish``: ``stop`` at a protocol stop string, ``eos`` otherwise)."""
    proto = get_protocol(protocol)
    if not tools:
        return ParsedTurn(text)
    act = proto.parse_turn(text, "stop" if finish == "stop" else "eos", tools)
    acts = (act, *act.more) if act.kind == "call" else ()
    if not acts or any(a.error is not None or a.call is None for a in acts):
        return ParsedTurn(text)
    before = text[: act.call_start]  # kept verbatim (whitespace too): sent back, it must render to the same ids
    return ParsedTurn(before or None, tuple(a.call for a in acts))
