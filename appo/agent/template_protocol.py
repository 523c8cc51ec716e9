"""The ``template`` protocol: tool calls in the model's own format, read by transformers' response parser.

Where a tokenizer ships a ``response_template`` (the declarative response format of its chat template:
Qwen3, Llama 3.x, gpt-oss and others on the Hub; transformers >= 5.13), this protocol reads each model
turn with ``tokenizer.parse_response(text, prefix="")`` and takes the parsed message's ``tool_calls``
(``[{"type": "function", "function": {"name", "arguments"}}, ...]``), so whatever call syntax the
template defines (``<tool_call>{json}</tool_call>``, ``<|python_tag|>``, gpt-oss channels...) is read by
the library that defines it, not by a regex of ours. Several calls in one turn are parallel calls: all run,
and their results are written back in order.

A turn ends at the model's end of turn (no stop strings: a stop at the first call would cut parallel
calls off). A turn with calls -> ``call`` (with :attr:`~appo.agent.protocols.TurnAction.more` for the
others); without -> ``answer``; a turn the parser cannot read (bad JSON in a call) -> one ``parse`` error
result the model sees; a call to an unknown tool or with non-object arguments -> an error result for that
call only. Results are rendered by the chat template as ``tool`` messages: a probe conversation (user,
assistant, k tool messages) is rendered, and the text between and after the probe results gives the pieces
appended after each result (loss mask 0), so a template that groups consecutive tool messages (Qwen's one
``user`` turn of ``<tool_response>`` blocks) is reproduced exactly.

Tool spans of parallel calls: call k's result is exactly its ``[call_end, result_end)``; its
``[call_start, call_end)`` runs from its own text to the end of the previous result, so it also covers the
later calls' text (and, for k > 0, the earlier results).

Leaves out: the parser's streaming mode (turns are parsed whole), ``reasoning_content`` (kept in the text,
not used), and models without a ``response_template`` (use ``hermes`` or ``tags``; a schema can also be
passed as ``TemplateProtocol(response_template={...})``).
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

from appo.agent.protocols import ToolProtocol, TurnAction, register_protocol
from appo.tools.base import Tool
from appo.types import ToolCall, ToolResult


def _error(text: str, error: str) -> ToolResult:
    return ToolResult(text=f"Error: {text}", ok=False, error=error)


@register_protocol("template")
class TemplateProtocol(ToolProtocol):
    """Calls parsed by ``tokenizer.parse_response`` with the tokenizer's ``response_template`` (module docstring)."""

    _PROBE_USER = "appo-probe-user"
    _PROBE_ASSISTANT = "appo-probe-assistant"
    _PROBE_RESULT = "appo-probe-result-{k}"

    def __init__(self, response_template: dict | None = None):
        self.schema = response_template
        self.tokenizer = None
        self._pieces: dict[tuple[int, int], list[str]] = {}

    def bind(self, tokenizer) -> None:
        """Keep the tokenizer (its parser and schema); raises when neither it nor the caller gives a schema, or
        when transformers is too old to parse responses."""
        if not callable(getattr(tokenizer, "parse_response", None)):
            import transformers

            raise ValueError(f"protocol 'template' needs tokenizer.parse_response (transformers >= 5.13; this is "
                             f"{transformers.__version__}); upgrade transformers or use rollout.protocol=hermes")
        if self.schema is None and getattr(tokenizer, "response_template", None) is None:
            raise ValueError("protocol 'template' needs a tokenizer with a response_template (Qwen3, Llama 3.x and "
                             "gpt-oss tokenizers on the Hub carry one; transformers >= 5.13) or "
                             "TemplateProtocol(response_template=...); use rollout.protocol=hermes or tags")
        self.tokenizer = tokenizer

    def stop_strings(self, tools):
        return ()

    def template_tools(self, tools):
        return [t.schema() for t in tools.values()] or None

    def parse_message(self, text: str) -> dict:
        """The assistant message of one turn as transformers parses it (``content``, ``tool_calls``...)."""
        if self.tokenizer is None:
            raise RuntimeError("TemplateProtocol.parse_message before bind(tokenizer)")
        return self.tokenizer.parse_response(text, self.schema, prefix="")

    def parse_turn(self, text, finish, tools):
        try:
            message = self.parse_message(text)
        except Exception as exc:  # the parser's errors are the model's formatting mistakes: show them
            return TurnAction("call", call_start=0, call=ToolCall("", {}, text), error=_error(
                f"the tool call could not be read ({str(exc).splitlines()[0][:160]})", "parse"))
        raw_calls = message.get("tool_calls") or []
        if not raw_calls:
            return TurnAction("answer" if finish == "eos" else "none")
        actions = [self._action(call, text, tools) for call in raw_calls]
        return TurnAction(**{**actions[0].__dict__, "more": tuple(actions[1:])})

    def _action(self, call, text: str, tools: Mapping[str, Tool]) -> TurnAction:
        fn = call.get("function", call) if isinstance(call, dict) else {}
        name = fn.get("name") if isinstance(fn, dict) else None
        args = fn.get("arguments", {}) if isinstance(fn, dict) else None
        raw = json.dumps(call, ensure_ascii=False, default=str)
        start = max(0, text.find(name)) if isinstance(name, str) and name else 0
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                pass
        if not isinstance(name, str) or not name:
            return TurnAction("call", call_start=start, call=ToolCall("", {}, raw),
                              error=_error("a tool call without a function name", "parse"))
        if not isinstance(args, dict):
            return TurnAction("call", name=name, call_start=start, call=ToolCall(name, {}, raw),
                              error=_error(f"the arguments of {name!r} must be a JSON object", "parse"))
        if name not in tools:
            return TurnAction("call", name=name, call_start=start, call=ToolCall(name, {}, raw), error=_error(
                f"unknown tool {name!r}; available: {', '.join(sorted(tools)) or 'none'}", "unknown_tool"))
        return TurnAction("call", name=name, call_start=start, call=ToolCall(name, args, raw))

    def _template_pieces(self, tokenizer, n: int) -> list[str]:
        """``n + 1`` texts: before result 1, between results, and after result ``n`` (closing the tool turn and
        opening the next assistant turn), read off a probe conversation rendered by the chat template."""
        key = (id(tokenizer), n)
        if key not in self._pieces:
            results = [self._PROBE_RESULT.format(k=k) for k in range(n)]
            msgs = [{"role": "user", "content": self._PROBE_USER}, {"role": "assistant",
                                                                    "content": self._PROBE_ASSISTANT}]
            msgs += [{"role": "tool", "content": r} for r in results]
            text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            if text.count(self._PROBE_ASSISTANT) != 1 or any(text.count(r) != 1 for r in results):
                raise ValueError("protocol 'template': the chat template does not render tool messages verbatim "
                                 "after an assistant message; use rollout.protocol=tags")
            rest = text[text.index(self._PROBE_ASSISTANT) + len(self._PROBE_ASSISTANT):]
            pieces = []
            for r in results:
                head, rest = rest.split(r, 1)
                pieces.append(head)
            self._pieces[key] = pieces + [rest]
        return self._pieces[key]

    def results_ids(self, tokenizer, results: Sequence[ToolResult], after_eos: bool = False) -> list[list[int]]:
        """One id list per result: piece k + result k (the last also gets the closing piece)."""
        pieces = list(self._template_pieces(tokenizer, len(results)))
        eos = tokenizer.eos_token or ""
        if after_eos and eos and pieces[0].startswith(eos):
            pieces[0] = pieces[0][len(eos):]
        texts = [pieces[k] + r.text for k, r in enumerate(results)]
        texts[-1] += pieces[-1]
        return [list(tokenizer.encode(t, add_special_tokens=False)) for t in texts]

    def result_text(self, tokenizer, result, after_eos):
        pieces = self._template_pieces(tokenizer, 1)
        eos = tokenizer.eos_token or ""
        before = pieces[0][len(eos):] if after_eos and eos and pieces[0].startswith(eos) else pieces[0]
        return before + result.text + pieces[1]

    def default_system_prompt(self, tools):
        return ("You are a helpful assistant. Solve the problem step by step, calling the tools when they help. "
                "Put the final answer in \\boxed{}.")
