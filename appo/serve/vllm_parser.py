"""vLLM tool-call parsers for our protocols: ``vllm serve --tool-parser-plugin appo.serve.vllm_parser
--tool-call-parser appo_tags`` (or ``appo_hermes``) returns a model's calls as OpenAI ``tool_calls``.

This module imports vLLM (0.32's legacy ``ToolParser`` interface, which vLLM keeps for out-of-tree plugins);
only a vLLM server process imports it (``--tool-parser-plugin`` takes a module name as well as a file), and
:func:`appo.serve.vllm_serve.vllm_serve_args` names it. Nothing else in appo imports it.

What a parser does with a request that brings tools (``tool_choice`` not ``none``):

- ``adjust_request``: adds the protocol's stop strings (``</name>`` for every tool and the reference tags,
  ``</answer>``; Hermes ``</tool_call>``) to the request's own, and keeps them in the output
  (``include_stop_str_in_output``), so a turn ends where the agent loop of training ends it: at the close of
  the first call, never on a result the model would invent (the request's own stop strings are then kept in
  the output too: vLLM has one switch for all);
- ``extract_tool_calls``: reads the finished turn with the protocol's own ``parse_turn``
  (:func:`appo.serve.chat.parse_turn`, as ``appo serve`` does): a valid call becomes one ``tool_calls``
  entry (arguments as a JSON string), the text before it, verbatim, the ``content``; a malformed call
  (unknown tool, empty or unclosed body, bad JSON) comes back as plain content for the client to see;
- ``extract_tool_calls_streaming``: streams the text before a call as content, holding back a suffix that
  could still open a call (``<py`` ...); once a call is closed, sends it as one tool-call delta (name, id
  and the whole arguments). Text after an opening tag that is never closed is not streamed (as vLLM's
  Hermes parser does); the non-streaming reply returns it as content.

``supports_required_and_named`` is False: vLLM's ``tool_choice="required"``/named route constrains the
output to JSON, which a tags model does not write; those requests are parsed like ``auto``.

The prompt side is not here: for ``tags`` the server also needs :func:`appo.serve.tags_template.tags_chat_template`
as ``--chat-template`` (vLLM renders tool history with the chat template, before any parser sees it).
Leaves out: the ``template`` protocol (its parser needs transformers' ``parse_response`` on the tokenizer;
vLLM's own ``hf``/``response_template`` parser covers those models) and parallel calls (a tags or Hermes turn
stops at its first call, as in training).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from vllm.entrypoints.generate.base.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
)
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.renderers.chat_utils import make_tool_call_id
from vllm.tool_parsers.abstract_tool_parser import ToolParser, ToolParserManager

from appo.agent.protocols import get_protocol
from appo.serve.chat import parse_turn, request_tools


def _stops(stop) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


class AppoToolParser(ToolParser):
    """Our protocol's calls as OpenAI tool calls (module docstring); subclasses name the protocol."""

    protocol_name = "tags"
    supports_required_and_named = False

    def __init__(self, tokenizer, tools=None):
        super().__init__(tokenizer, tools)
        self.protocol = get_protocol(self.protocol_name)
        try:
            self.tool_map = request_tools([t.model_dump(exclude_none=True) for t in self.tools
                                           if getattr(t, "type", "function") == "function"])
        except ValueError:  # vLLM validated the schemas; a name clash leaves the calls as text
            self.tool_map = {}
        self._sent = 0
        """Characters of the output already streamed as content."""

    def stop_strings(self) -> tuple[str, ...]:
        """The protocol's stop strings for this request's tools."""
        return tuple(self.protocol.stop_strings(self.tool_map)) if self.tool_map else ()

    def adjust_request(self, request):
        request = super().adjust_request(request)
        if (isinstance(request, ChatCompletionRequest) and request.tools and request.tool_choice != "none"
                and self.tool_map):
            stops = _stops(request.stop)
            request.stop = stops + [s for s in self.stop_strings() if s not in stops]
            request.include_stop_str_in_output = True
        return request

    def _finish(self, text: str) -> str:
        return "stop" if any(text.endswith(s) for s in self.stop_strings()) else "eos"

    def extract_tool_calls(self, model_output: str, request) -> ExtractedToolCallInformation:
        turn = parse_turn(self.protocol, model_output, self._finish(model_output), self.tool_map)
        if not turn.tool_calls:
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)
        calls = [ToolCall(type="function", function=FunctionCall(
            name=c.name, arguments=json.dumps(c.arguments, ensure_ascii=False))) for c in turn.tool_calls]
        return ExtractedToolCallInformation(tools_called=True, tool_calls=calls, content=turn.content)

    def _openers(self) -> tuple[str, ...]:
        if self.protocol.name == "tags":
            return tuple(f"<{t}>" for t in self.protocol.call_tags(self.tool_map))
        return (self.protocol.open_tag,)

    def extract_tool_calls_streaming(self, previous_text: str, current_text: str, delta_text: str,
                                     previous_token_ids: Sequence[int], current_token_ids: Sequence[int],
                                     delta_token_ids: Sequence[int], request) -> DeltaMessage | None:
        if self.prev_tool_call_arr:  # the turn's one call is sent; nothing follows it (the stop string)
            return None
        openers = self._openers()
        if self._finish(current_text) == "stop":
            turn = parse_turn(self.protocol, current_text, "stop", self.tool_map)
            if turn.tool_calls:
                call = turn.tool_calls[0]
                args = json.dumps(call.arguments, ensure_ascii=False)
                self.prev_tool_call_arr.append({"name": call.name, "arguments": call.arguments})
                self.streamed_args_for_tool.append(args)
                self.current_tool_id = 0
                before = (turn.content or "")[self._sent:]
                self._sent = len(current_text)
                return DeltaMessage(content=before or None, tool_calls=[DeltaToolCall(
                    index=0, type="function", id=make_tool_call_id(),
                    function=DeltaFunctionCall(name=call.name, arguments=args).model_dump(exclude_none=True))])
        opened = [i for i in (current_text.find(o, self._sent) for o in openers) if i >= 0]
        if opened:  # inside a call: hold it until it closes
            end = min(opened)
        else:  # hold back a suffix that may be the start of an opener
            end = len(current_text)
            for o in openers:
                for k in range(min(len(o) - 1, len(current_text) - self._sent), 0, -1):
                    if current_text.endswith(o[:k]):
                        end = min(end, len(current_text) - k)
                        break
        if end <= self._sent:
            return None
        content, self._sent = current_text[self._sent:end], end
        return DeltaMessage(content=content)


class AppoTagsToolParser(AppoToolParser):
    """``--tool-call-parser appo_tags``: ``<name>body</name>`` calls (the ``tags`` protocol)."""

    protocol_name = "tags"


class AppoHermesToolParser(AppoToolParser):
    """``--tool-call-parser appo_hermes``: ``<tool_call>{json}</tool_call>``, stopping at the first call's close."""

    protocol_name = "hermes"


for _name, _cls in (("appo_tags", AppoTagsToolParser), ("appo_hermes", AppoHermesToolParser)):
    ToolParserManager.register_module(_name, module=_cls)
