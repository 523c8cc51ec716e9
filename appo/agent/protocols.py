"""Tool-call protocols: how a model writes a tool call, and how a tool result is written back to it.

A protocol is the only part of the agent that looks at text. It turns one model turn (decoded) into a
:class:`TurnAction` (call a tool, answer, end, nothing), and turns a :class:`~appo.types.ToolResult`
into the token ids appended after the call (``loss_mask`` 0). Three are registered:

``tags`` (the reference work; docs/algorithm.md): the whole trajectory is one assistant turn::

    <think> ... </think> <python> code </python>
    <result>
    ...tool output...
    </result>
    <think> ... </think> <answer> ... \\boxed{...} </answer>

  A call is ``<name>body</name>`` where ``name`` is a tool's name; the body (dedented, stripped) goes
  to the tool's ``tag_argument``. The environment appends :attr:`TagsProtocol.result_template`,
  ``"\\n<result>\\n{text}\\n</result>\\n"`` (a newline after the model's closing tag, the result on
  its own lines, a newline so that the model's next text starts on a fresh line). Stop strings are
  ``</answer>`` and ``</name>`` for every tool and for the reference tags ``python`` / ``search``
  even when no such tool is configured, so that a call to a missing tool comes back as an
  ``unknown_tool`` error instead of running on. End of turn (EOS) ends the rollout, unless the turn
  left a call open (``<python>`` without ``</python>``): that gets an ``unclosed`` error result and
  the model continues after its own EOS token.

``hermes`` (Qwen-style chat templates): the model writes
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` and generation stops at
``</tool_call>`` (one call per turn; parallel calls are not used). The result is rendered by the
tokenizer's own chat template as a ``tool`` message; the appended ids are the text that closes the
assistant turn (e.g. ``<|im_end|>\\n``), the tool message, and the next generation prompt
(``<|im_start|>assistant\\n``), all with ``loss_mask`` 0. They are read off a probe conversation
(user, assistant, tool) rendered by the template (see :meth:`HermesProtocol._template_pieces`). A turn
that ends without a tool call is the final answer.

``template`` (:mod:`appo.agent.template_protocol`): the format the tokenizer's ``response_template``
defines, parsed by transformers' ``parse_response``; several calls in one turn run as parallel calls
(:attr:`TurnAction.more`).

Malformed calls (unknown tool, empty body, a close without an open, an unclosed call, bad JSON)
never raise: :meth:`ToolProtocol.parse_turn` returns an action carrying an ``ok=False``
:class:`~appo.types.ToolResult` that the loop shows the model in place of a tool result.
"""

from __future__ import annotations

import json
import re
import textwrap
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

from appo.plugins import register_unique
from appo.tools.base import Tool
from appo.types import ToolCall, ToolResult

Finish = Literal["stop", "eos"]
ActionKind = Literal["call", "answer", "end", "none"]


@dataclass(frozen=True)
class TurnAction:
    """What one finished model turn asks for."""

    kind: ActionKind
    """``call`` (run a tool or show an error result), ``answer`` (done), ``end`` (EOS without an
    answer: stop reason ``eos``), ``none`` (neither call nor answer: stop reason ``no_action``)."""
    call: ToolCall | None = None
    """The parsed call (for ``call``); may be set on malformed calls too, for spans and reports."""
    error: ToolResult | None = None
    """For a malformed call: the ``ok=False`` result the agent sees instead of running a tool."""
    call_start: int = 0
    """Character offset in the turn text where the call text begins (for tool spans)."""
    name: str = ""
    """Tool name the model asked for (``""`` when it could not be read)."""
    more: tuple[TurnAction, ...] = ()
    """Further calls of the same turn (parallel tool calls; ``template`` protocol), run with this one and
    answered in order."""


def _error(text: str, error: str) -> ToolResult:
    return ToolResult(text=f"Error: {text}", ok=False, error=error)


def tool_map(tools: Sequence[Tool] | Mapping[str, Tool]) -> dict[str, Tool]:
    """Tools by name; raises on duplicates or unnamed tools."""
    if isinstance(tools, Mapping):
        return dict(tools)
    out: dict[str, Tool] = {}
    for tool in tools:
        if not tool.name:
            raise ValueError(f"tool {type(tool).__name__} has no name; set the class attribute `name`")
        if tool.name in out:
            raise ValueError(f"two tools are named {tool.name!r}; tool names must be unique")
        out[tool.name] = tool
    return out


class ToolProtocol(ABC):
    """How tool calls are written by the model and results written back. Stateless apart from caches."""

    name: str = ""

    @abstractmethod
    def stop_strings(self, tools: Mapping[str, Tool]) -> tuple[str, ...]:
        """Strings after which the engine must stop a turn (a call closed, or an answer closed)."""

    @abstractmethod
    def parse_turn(self, text: str, finish: Finish, tools: Mapping[str, Tool]) -> TurnAction:
        """Read one finished turn. ``finish`` is ``stop`` (a stop string ended it) or ``eos``.

        Must never raise, whatever ``text`` is.
        """

    @abstractmethod
    def result_text(self, tokenizer, result: ToolResult, after_eos: bool) -> str:
        """The text appended after a call (``after_eos``: the model's turn ended with its EOS token)."""

    @abstractmethod
    def default_system_prompt(self, tools: Mapping[str, Tool]) -> str:
        """A short system prompt describing the protocol, used when the example brings none."""

    def template_tools(self, tools: Mapping[str, Tool]) -> list[dict] | None:
        """The ``tools=`` argument for ``apply_chat_template`` (None: the system prompt describes them)."""
        return None

    def result_ids(self, tokenizer, result: ToolResult, after_eos: bool = False) -> list[int]:
        """:meth:`result_text` tokenized on its own (``add_special_tokens=False``)."""
        return list(tokenizer.encode(self.result_text(tokenizer, result, after_eos), add_special_tokens=False))

    def results_ids(self, tokenizer, results: Sequence[ToolResult], after_eos: bool = False) -> list[list[int]]:
        """Ids appended after each of a turn's calls, in order (one call: :meth:`result_ids`). Protocols
        with parallel calls split the text that answers them all into one piece per result."""
        if len(results) != 1:
            raise ValueError(f"protocol {self.name!r} answers one call per turn, got {len(results)}")
        return [self.result_ids(tokenizer, results[0], after_eos)]

    def bind(self, tokenizer) -> None:
        """Called once by the agent loop with its tokenizer, before any :meth:`parse_turn` (default: nothing)."""

    def limit_message(self, max_tool_calls: int) -> ToolResult:
        """What the model sees in place of a result when it asks for a call past the limit."""
        return _error(
            f"tool-call limit reached ({max_tool_calls} calls); no more tools. Give your final answer now.",
            "max_tool_calls",
        )

    def build_prompt_ids(self, example, tokenizer, tools, system_prompt: str | None = None) -> list[int]:
        """Prompt ids for ``example``: its ``messages`` when present, else system prompt + question.

        ``system_prompt`` (when given) replaces the example's system message or is prepended; when
        None, an example's own system message is kept and one is added only if it has none (the
        protocol's :meth:`default_system_prompt`). The chat template is applied with
        ``add_generation_prompt=True`` (and ``tools=`` for protocols whose template lists tools).
        """
        tools = tool_map(tools)
        if example.messages:
            messages = [dict(m) for m in example.messages]
        else:
            messages = [{"role": "user", "content": example.question}]
        has_system = bool(messages) and messages[0].get("role") == "system"
        if system_prompt is not None:
            messages = ([{"role": "system", "content": system_prompt}]
                        + (messages[1:] if has_system else messages))
        elif not has_system:
            messages = [{"role": "system", "content": self.default_system_prompt(tools)}] + messages
        text = tokenizer.apply_chat_template(
            messages, tools=self.template_tools(tools), tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer.encode(text, add_special_tokens=False))


PROTOCOLS: dict[str, type[ToolProtocol]] = {}
"""Registered tool-call protocols by name."""


def register_protocol(name: str) -> Callable[[type[ToolProtocol]], type[ToolProtocol]]:
    """Class decorator adding a protocol to :data:`PROTOCOLS`; refuses duplicate names."""

    def deco(cls: type[ToolProtocol]) -> type[ToolProtocol]:
        register_unique(PROTOCOLS, name, cls, "protocol")
        cls.name = name
        return cls

    return deco


def get_protocol(protocol: str | ToolProtocol, **kwargs) -> ToolProtocol:
    """A protocol instance from a name (``tags``, ``hermes``) or an instance (returned as is)."""
    if isinstance(protocol, ToolProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol](**kwargs)


def _tag_argument(tool: Tool) -> str:
    """Argument that receives a tag body: ``tag_argument``, else the first required/declared one."""
    if tool.tag_argument:
        return tool.tag_argument
    params = tool.parameters or {}
    required = list(params.get("required") or [])
    props = list((params.get("properties") or {}).keys())
    return (required or props or [""])[0]


def tag_tool_line(name: str, tool: Tool) -> str:
    """One line telling the model how to call ``tool`` with tags, and what it does."""
    desc = f": {tool.description}" if tool.description else ""
    return f"To use the {name} tool, write <{name}> {_tag_argument(tool) or 'input'} </{name}>{desc}"


@register_protocol("tags")
class TagsProtocol(ToolProtocol):
    """``<name>body</name>`` calls, ``<result>`` blocks, ``<answer>`` to finish (see module docstring)."""

    result_template = "\n<result>\n{text}\n</result>\n"
    answer_tag = "answer"
    reference_tags = ("python", "search")

    def __init__(self, result_template: str | None = None, extra_call_tags: Sequence[str] = ()):
        if result_template is not None:
            if "{text}" not in result_template:
                raise ValueError("result_template must contain '{text}' where the tool output goes")
            self.result_template = result_template
        self.extra_call_tags = tuple(extra_call_tags)

    def call_tags(self, tools: Mapping[str, Tool]) -> tuple[str, ...]:
        """Tag names treated as calls: every tool plus the reference tags and ``extra_call_tags``."""
        return tuple(dict.fromkeys((*tools, *self.reference_tags, *self.extra_call_tags)))

    def stop_strings(self, tools):
        return tuple(f"</{t}>" for t in self.call_tags(tools)) + (f"</{self.answer_tag}>",)

    def parse_turn(self, text, finish, tools):
        tags = self.call_tags(tools)
        names = "|".join(re.escape(t) for t in (*tags, self.answer_tag))
        events = [(m.start(), m.end(), m.group(1) == "/", m.group(2))
                  for m in re.finditer(rf"<(/?)({names})>", text)]
        closes = [e for e in events if e[2]]
        if finish == "stop":
            if not closes:
                return TurnAction("none")
            start, end, _, tag = closes[-1]
            if tag == self.answer_tag:
                return TurnAction("answer")
            opens = [e for e in events if not e[2] and e[3] == tag and e[0] < start]
            if not opens:
                return TurnAction("call", name=tag, call_start=start, error=_error(
                    f"</{tag}> without an opening <{tag}>; write <{tag}> ... </{tag}>", "parse"))
            o_start, o_end = opens[-1][0], opens[-1][1]
            return self._call(tag, text[o_start:end], text[o_end:start], o_start, tools)
        # End of turn: an answer block ends the rollout; a call left open gets an error result.
        if any(e[3] == self.answer_tag for e in closes) and any(
            not e[2] and e[3] == self.answer_tag for e in events
        ):
            return TurnAction("answer")
        last_close = closes[-1][0] if closes else -1
        dangling = [e for e in events if not e[2] and e[3] != self.answer_tag and e[0] > last_close]
        if dangling:
            start, _, _, tag = dangling[-1]
            return TurnAction("call", name=tag, call_start=start, call=ToolCall(tag, {}, text[start:]),
                              error=_error(f"the <{tag}> call was not closed; write </{tag}> after it",
                                           "unclosed"))
        return TurnAction("end")

    def _call(self, tag: str, raw: str, body: str, start: int, tools) -> TurnAction:
        body = textwrap.dedent(body).strip()
        if tag not in tools:
            err = _error(f"unknown tool {tag!r}; available: {', '.join(sorted(tools)) or 'none'}",
                         "unknown_tool")
            return TurnAction("call", name=tag, call_start=start, call=ToolCall(tag, {}, raw), error=err)
        if not body:
            return TurnAction("call", name=tag, call_start=start, call=ToolCall(tag, {}, raw),
                              error=_error(f"empty <{tag}> call", "empty"))
        arg = _tag_argument(tools[tag])
        if not arg:
            return TurnAction("call", name=tag, call_start=start, call=ToolCall(tag, {}, raw), error=_error(
                f"tool {tag!r} takes no text argument and cannot be called with tags", "parse"))
        return TurnAction("call", name=tag, call_start=start, call=ToolCall(tag, {arg: body}, raw))

    def result_text(self, tokenizer, result, after_eos):
        return self.result_template.format(text=result.text)

    def default_system_prompt(self, tools):
        lines = [
            "You are a helpful assistant. Solve the problem step by step. Think inside <think> </think>."
        ]
        lines += [tag_tool_line(name, tool) for name, tool in tools.items()]
        if tools:
            lines.append("Each tool's output comes back inside <result> </result>.")
        lines.append("Give the final answer as <answer> ... \\boxed{answer} </answer>.")
        return "\n".join(lines)


@register_protocol("hermes")
class HermesProtocol(ToolProtocol):
    """``<tool_call>{json}</tool_call>`` calls, results as chat-template ``tool`` messages."""

    open_tag = "<tool_call>"
    close_tag = "</tool_call>"
    _PROBE_USER = "appo-probe-user"
    _PROBE_ASSISTANT = "appo-probe-assistant"
    _PROBE_RESULT = "appo-probe-result"

    def __init__(self) -> None:
        self._pieces: dict[tuple[int, str], tuple[str, str]] = {}

    def stop_strings(self, tools):
        return (self.close_tag,)

    def template_tools(self, tools):
        return [t.schema() for t in tools.values()] or None

    def parse_turn(self, text, finish, tools):
        close = text.rfind(self.close_tag)
        if finish == "stop":
            if close < 0:
                return TurnAction("none")
            open_ = text.rfind(self.open_tag, 0, close)
            if open_ < 0:
                return TurnAction("call", call_start=close, error=_error(
                    f"{self.close_tag} without an opening {self.open_tag}", "parse"))
            raw = text[open_: close + len(self.close_tag)]
            return self._call(raw, text[open_ + len(self.open_tag): close], open_, tools)
        open_ = text.rfind(self.open_tag)
        if open_ > close:
            return TurnAction("call", call_start=open_, call=ToolCall("", {}, text[open_:]), error=_error(
                f"the tool call was not closed; end it with {self.close_tag}", "unclosed"))
        return TurnAction("answer")

    def _call(self, raw: str, body: str, start: int, tools) -> TurnAction:
        def bad(msg: str, err: str, name: str = "") -> TurnAction:
            return TurnAction("call", name=name, call_start=start, call=ToolCall(name, {}, raw),
                              error=_error(msg, err))

        try:
            obj = json.loads(body.strip())
        except (ValueError, RecursionError) as exc:
            return bad(f"the tool call is not valid JSON ({str(exc)[:120]})", "parse")
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return bad('a tool call must be a JSON object {"name": ..., "arguments": {...}}', "parse")
        name = obj["name"]
        args = obj.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                pass
        if not isinstance(args, dict):
            return bad(f"the arguments of {name!r} must be a JSON object", "parse", name)
        if name not in tools:
            return bad(f"unknown tool {name!r}; available: {', '.join(sorted(tools)) or 'none'}",
                       "unknown_tool", name)
        return TurnAction("call", name=name, call_start=start, call=ToolCall(name, args, raw))

    def _template_pieces(self, tokenizer) -> tuple[str, str]:
        """(before, after): the text appended after a call is ``before + result + after``.

        A probe conversation (user, assistant, tool) is rendered with a generation prompt; ``before``
        is everything between the assistant message's content and the tool content (the end of the
        assistant turn, the tool message's opening), ``after`` everything after the tool content
        (its closing and the next generation prompt). This equals the difference between the
        conversation rendered with and without the tool message, plus the assistant turn's closer,
        but also holds for templates (Qwen3) that render the last assistant message differently
        (with an empty ``<think>`` block) once it is no longer last.
        """
        key = (id(tokenizer), str(getattr(tokenizer, "chat_template", "")))
        if key not in self._pieces:
            msgs = [{"role": "user", "content": self._PROBE_USER},
                    {"role": "assistant", "content": self._PROBE_ASSISTANT},
                    {"role": "tool", "content": self._PROBE_RESULT}]
            text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            if text.count(self._PROBE_ASSISTANT) != 1 or text.count(self._PROBE_RESULT) != 1:
                raise ValueError(
                    "hermes protocol: the tokenizer's chat template does not render an assistant message followed by "
                    "a tool message verbatim, so the tool suffix cannot be computed; use a ChatML/Qwen-style "
                    "template or the 'tags' protocol")
            tail = text[text.index(self._PROBE_ASSISTANT) + len(self._PROBE_ASSISTANT):]
            before, after = tail.split(self._PROBE_RESULT)
            self._pieces[key] = (before, after)
        return self._pieces[key]

    def result_text(self, tokenizer, result, after_eos):
        before, after = self._template_pieces(tokenizer)
        eos = tokenizer.eos_token or ""
        if after_eos and eos and before.startswith(eos):
            before = before[len(eos):]
        return before + result.text + after

    def default_system_prompt(self, tools):
        return ("You are a helpful assistant. Solve the problem step by step, calling the tools when they help. "
                "Put the final answer in \\boxed{}.")


def build_prompt_ids(protocol, example, tokenizer, tools, system_prompt: str | None = None) -> list[int]:
    """Prompt ids for ``example`` under ``protocol`` (a name or instance); see
    :meth:`ToolProtocol.build_prompt_ids`."""
    return get_protocol(protocol).build_prompt_ids(example, tokenizer, tools, system_prompt)


def turn_end_id(tokenizer) -> int:
    """The token that closes an assistant turn in the chat template (``<|im_end|>`` for ChatML).

    Found by rendering a probe assistant message and taking the first token after its content when
    that token is special; otherwise the tokenizer's ``eos_token_id``.
    """
    probe = "appo-probe-assistant"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "appo-probe-user"}, {"role": "assistant", "content": probe}], tokenize=False)
    closer = text[text.rindex(probe) + len(probe):]
    ids = tokenizer.encode(closer, add_special_tokens=False) if closer else []
    if ids and ids[0] in set(tokenizer.all_special_ids):
        return int(ids[0])
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token_id and its chat template closes turns without a special "
                         "token; set tokenizer.eos_token")
    return int(tokenizer.eos_token_id)


def end_of_turn_ids(tokenizer) -> frozenset[int]:
    """Token ids that end a model turn: ``eos_token_id`` and the chat template's turn-closing token."""
    ids = {turn_end_id(tokenizer)}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def render_demonstration(
    protocol, tokenizer, tools, example, turns: Sequence[str], system_prompt: str | None = None
) -> tuple[list[int], list[int]]:
    """Token ids and loss mask of a demonstration, rendered exactly as the agent loop would.

    ``turns`` are the model-side texts: every turn but the last ends with a tool call, the last
    holds the answer. Each turn is tokenized on its own (mask 1); the parsed call is run through the
    real tool (``safe_call``) and its result appended with :meth:`ToolProtocol.result_ids` (mask 0);
    the last turn is followed by the turn-closing token (:func:`turn_end_id`, mask 1), which the
    model must learn to emit. The prompt (:func:`build_prompt_ids`) has mask 0.
    Returns ``(input_ids, loss_mask)`` over prompt + response. Leaves out: tool-call and length
    limits (a demonstration is taken as written). Raises if a non-final turn does not end in a call.
    """
    proto = get_protocol(protocol)
    proto.bind(tokenizer)
    tools = tool_map(tools)
    if not turns:
        raise ValueError("render_demonstration: turns is empty; pass at least the final answer turn")
    ids = proto.build_prompt_ids(example, tokenizer, tools, system_prompt)
    mask = [0] * len(ids)
    for i, turn in enumerate(turns):
        turn_ids = list(tokenizer.encode(turn, add_special_tokens=False))
        ids += turn_ids
        mask += [1] * len(turn_ids)
        if i == len(turns) - 1:
            ids.append(turn_end_id(tokenizer))
            mask.append(1)
            break
        action = proto.parse_turn(turn, "stop", tools)
        if action.kind != "call":
            raise ValueError(f"render_demonstration: turn {i} ({turn[-60:]!r}) does not end with a tool call; "
                             "every turn but the last must end with one")
        result = action.error or tools[action.call.name].safe_call(action.call.arguments)
        res_ids = proto.result_ids(tokenizer, result, after_eos=False)
        ids += res_ids
        mask += [0] * len(res_ids)
    return ids, mask
