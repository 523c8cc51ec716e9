"""Does a rollout hold the ids the chat template and ``appo serve`` would give the same conversation?

Token-in/token-out rollouts are assembled from pieces: the prompt (chat template applied), the ids the
engine sampled for each model turn, and each tool result tokenized on its own (the protocol's
``result_ids``). Training scores exactly those ids, and ``appo sft`` renders demonstrations the same way
(:func:`appo.agent.protocols.render_demonstration`). A chat client, on the other hand, sends the
conversation as messages, and ``appo serve`` (:func:`appo.serve.chat.render_prompt`) renders them with the
chat template and tokenizes the text. Where those differ (a turn separator dropped at an assistant -> tool
boundary, two pieces that tokenize differently when joined, whitespace lost in a call), the served model
sees other ids than the trained one.

:func:`check_rollout` rebuilds the conversation of a finished rollout (model turns decoded, tool results
read back from the protocol's result text) and compares, turn by turn:

- ``template``: the whole conversation rendered by ``tokenizer.apply_chat_template`` (tags: one assistant
  message holding the response text; hermes/template protocols: assistant and ``tool`` messages) and
  tokenized in one piece, against ``prompt_ids + response_ids``;
- ``serve`` (given the server's renderer): for each model turn k, :func:`appo.serve.chat.render_prompt` of the
  messages a chat client holds
  before that turn (``assistant`` messages with ``tool_calls``, ``tool`` messages), against the rollout's
  ids up to the start of turn k: the ids the model is fed when it writes turn k.

Each disagreement is a :class:`Mismatch` naming the check, the turn, the first differing position and the
text on both sides. Leaves out: rows whose response was cut by the length budget inside a tool result,
forks (branch rows carry their parent's prefix; check the parent), and parallel calls (``template``
protocol turns with several calls are compared on the template only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from appo.agent.protocols import get_protocol, tool_map
from appo.types import Rollout, ToolResult

_PROBE = "\x00appo-probe-result\x00"


@dataclass(frozen=True)
class Turn:
    """One model turn of a rollout and the tool result that followed it."""

    start: int
    """Response position of the turn's first token."""
    text: str
    """The model's text (decoded, special tokens kept, a trailing end-of-turn token dropped)."""
    result: str | None
    """The tool's result text (None after the last turn)."""
    after_eos: bool
    """The turn ended with the model's own end-of-turn token before the result."""


@dataclass(frozen=True)
class Mismatch:
    """Where a rendering disagrees with the rollout's ids."""

    check: str
    """``template`` or ``serve``."""
    turn: int
    """Model turn (0-based) at or before which the ids differ."""
    position: int
    """First differing index into ``prompt_ids + response_ids`` (or the shorter length)."""
    rollout: str
    """Decoded rollout ids around the position."""
    rendered: str
    """Decoded rendered ids around the position."""


def _segments(mask: Sequence[int]) -> list[tuple[int, int, int]]:
    """Runs of equal ``loss_mask``: (value, start, end)."""
    out: list[tuple[int, int, int]] = []
    for i, m in enumerate(mask):
        if out and out[-1][0] == m:
            out[-1] = (m, out[-1][1], i + 1)
        else:
            out.append((m, i, i + 1))
    return out


def result_text_of(protocol, tokenizer, text: str, after_eos: bool) -> str:
    """The tool result inside a result segment's decoded ``text`` (the protocol's pieces around it removed)."""
    wrapped = protocol.result_text(tokenizer, ToolResult(_PROBE), after_eos)
    before, after = wrapped.split(_PROBE)
    if not (text.startswith(before) and text.endswith(after)) or len(text) < len(before) + len(after):
        raise ValueError(f"result segment {text[:80]!r} is not wrapped in the protocol's {before!r} ... {after!r}")
    return text[len(before): len(text) - len(after)]


def split_turns(tokenizer, protocol, row: Rollout) -> list[Turn]:
    """The model turns of ``row`` and the result after each (from its ``loss_mask`` runs)."""
    proto = get_protocol(protocol)
    proto.bind(tokenizer)
    eos = {tokenizer.eos_token_id} | ({tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None, tokenizer.unk_token_id})
    segs = _segments(row.loss_mask)
    turns: list[Turn] = []
    i = 0
    while i < len(segs):
        m, s, e = segs[i]
        if m == 0:  # a result with no model turn before it (cannot happen for initial rows)
            raise ValueError(f"rollout group {row.group} uid {row.uid}: the response starts with tool ids")
        ids = list(row.response_ids[s:e])
        after_eos = bool(ids) and ids[-1] in eos
        result = None
        if i + 1 < len(segs):
            _, rs, re_ = segs[i + 1]
            res_text = tokenizer.decode(list(row.response_ids[rs:re_]), skip_special_tokens=False)
            result = result_text_of(proto, tokenizer, res_text, after_eos)
        text_ids = ids[:-1] if after_eos else ids
        turns.append(Turn(s, tokenizer.decode(text_ids, skip_special_tokens=False), result, after_eos))
        i += 2
    return turns


def template_messages(protocol, prompt_messages: Sequence[Mapping], turns: Sequence[Turn], tokenizer) -> list[dict]:
    """The conversation as chat-template messages: tags -> one assistant message with the whole response
    (results in the protocol's ``<result>`` text); others -> assistant and ``tool`` messages."""
    proto = get_protocol(protocol)
    msgs = [dict(m) for m in prompt_messages]
    if proto.name == "tags":  # the trajectory is one assistant turn
        text = "".join(t.text + (proto.result_text(tokenizer, ToolResult(t.result), t.after_eos)
                                 if t.result is not None else "") for t in turns)
        return msgs + [{"role": "assistant", "content": text}]
    for t in turns:
        msgs.append({"role": "assistant", "content": t.text})
        if t.result is not None:
            msgs.append({"role": "tool", "content": t.result})
    return msgs


def client_messages(protocol, tools, prompt_messages: Sequence[Mapping], turns: Sequence[Turn]) -> list[dict]:
    """What an OpenAI client holds after ``turns``: each turn as ``{"role": "assistant", "content": text before
    the call, "tool_calls": [...]}`` followed by ``{"role": "tool", "content": result}``."""
    import json

    proto = get_protocol(protocol)
    msgs = [dict(m) for m in prompt_messages]
    for k, t in enumerate(turns):
        act = proto.parse_turn(t.text, "eos" if t.after_eos else "stop", tools)
        if t.result is None or act.kind != "call" or act.call is None or act.error is not None or act.more:
            msgs.append({"role": "assistant", "content": t.text})
            if t.result is not None:
                msgs.append({"role": "tool", "content": t.result})
            continue
        msgs.append({"role": "assistant", "content": t.text[: act.call_start],
                     "tool_calls": [{"id": f"call_{k}", "type": "function", "function": {
                         "name": act.call.name, "arguments": json.dumps(act.call.arguments)}}]})
        msgs.append({"role": "tool", "tool_call_id": f"call_{k}", "content": t.result})
    return msgs


def _first_diff(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _turn_at(turns: Sequence[Turn], prompt_len: int, pos: int) -> int:
    k = 0
    for j, t in enumerate(turns):
        if prompt_len + t.start <= pos:
            k = j
    return k


def check_rollout(tokenizer, protocol, tools, prompt_messages: Sequence[Mapping], row: Rollout,
                  serve_render: Callable | None = None) -> list[Mismatch]:
    """Every disagreement between ``row`` and the template rendering, and the ``appo serve`` rendering when
    ``serve_render`` is given (module docstring); ``prompt_messages`` are the messages the prompt ids were
    rendered from (system and user). ``serve_render(tokenizer, protocol, messages, tools) -> ids`` is the
    server's renderer, :func:`appo.serve.chat.render_prompt` (passed in: the agent layer does not import the
    server). Empty: the renderings agree with every id."""
    proto = get_protocol(protocol)
    tools = tool_map(tools)
    turns = split_turns(tokenizer, proto, row)
    full = list(row.prompt_ids) + list(row.response_ids)
    P = len(row.prompt_ids)
    out: list[Mismatch] = []

    def show(ids: Sequence[int], pos: int) -> str:
        return tokenizer.decode(list(ids[max(0, pos - 8): pos + 8]), skip_special_tokens=False)

    text = tokenizer.apply_chat_template(template_messages(proto, prompt_messages, turns, tokenizer),
                                         tools=proto.template_tools(tools), tokenize=False)
    rendered = list(tokenizer.encode(text, add_special_tokens=False))
    pos = _first_diff(full, rendered[: len(full)])
    if pos is not None:
        out.append(Mismatch("template", _turn_at(turns, P, pos), pos, show(full, pos), show(rendered, pos)))
    if serve_render is not None:
        for k, t in enumerate(turns):
            fed = full[: P + t.start]
            rendered = serve_render(tokenizer, proto, client_messages(proto, tools, prompt_messages, turns[:k]),
                                     tools)
            pos = _first_diff(fed, rendered)
            if pos is not None:
                out.append(Mismatch("serve", k, pos, show(fed, pos), show(rendered, pos)))
    return out
