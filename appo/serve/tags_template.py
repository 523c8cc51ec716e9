"""A chat template that renders an OpenAI conversation the way the ``tags`` protocol trained on it, for
servers that render prompts with a Jinja chat template (``vllm serve --chat-template``).

Under ``tags`` the whole trajectory is one assistant turn: the model's text, each call as
``<name>body</name>``, each result as ``\\n<result>\\n...\\n</result>\\n``, all inside the assistant turn the
prompt opened. A model's own chat template renders a tool call and a ``tool`` message as new chat turns
(Hermes ``<tool_call>`` blocks, a ``<|im_start|>user`` turn of ``<tool_response>``), which a tags-trained
policy never saw: served through it, the demo model fell from 0.69 to 0.22 accuracy in an earlier wave.

:func:`tags_chat_template` wraps the model's template (its text, unchanged, becomes a Jinja macro) into one
that does what :func:`appo.serve.chat.render_prompt` does for ``tags``:

- the messages up to the last ``user``/``system``/``developer`` message go through the model's template
  (``developer`` as ``system``; ``tools`` not passed: tags describe tools in the system prompt), with the
  protocol's default system prompt first when the request brings tools and no system message; earlier
  assistant turns become their content plus their calls in tag syntax, with the ``tool`` messages after
  them folded in as result blocks;
- what follows (the running episode: assistant messages with ``tool_calls``, ``tool`` results) is appended
  as text, with no turn markers: content, then ``<name>body</name>`` (the body is the tool's tag argument,
  the first required or declared parameter, when that is the only argument and a string; else the arguments
  as JSON), then the protocol's result block per ``tool`` message.

Rendered text equals ``render_prompt``'s (tested on the tiny tokenizer and on ChatML / Llama-3 / Qwen-style
templates); the ids can still differ where the server tokenizes the text in one piece and the loop
tokenizes pieces on their own (a BPE merge across a piece boundary), or where a call body had whitespace
around it (the protocol hands the tool the stripped body, and that is what the client sends back):
:mod:`appo.agent.render_check` finds such rows. Tool-call ``arguments`` are expected as objects, as vLLM
passes them to templates (it parses the JSON string first); a string is written as the body verbatim.

Leaves out: templates whose text cannot sit inside a Jinja macro (one that defines ``{% block %}``s or
``{% extends %}``), and the ``hermes``/``template`` protocols, whose calls the model's own template already
renders as training did (serve those with vLLM's ``hermes`` parser or ours, ``appo_hermes``).
"""

from __future__ import annotations

import json

from appo.agent.protocols import TagsProtocol, tag_tool_line
from appo.serve.chat import SchemaTool

_MACRO = "appo_model_template"


def _lit(text: str) -> str:
    """``text`` as a Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(text)


def _system_prompt_pieces(protocol: TagsProtocol) -> tuple[str, str]:
    """(before the tool lines, after them) of ``protocol.default_system_prompt`` with tools, read off a probe."""
    probe = SchemaTool({"type": "function", "function": {"name": "appo_probe", "parameters": {
        "type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}}})
    text = protocol.default_system_prompt({"appo_probe": probe})
    line = tag_tool_line("appo_probe", probe)
    if text.count(line) != 1:
        raise ValueError("the tags protocol's system prompt does not hold one line per tool; cannot template it")
    before, after = text.split(line)
    return before, after


def tags_chat_template(base_template: str, protocol: TagsProtocol | None = None) -> str:
    """A Jinja chat template rendering conversations for a ``tags``-trained model (module docstring).

    ``base_template``: the model's own chat template (``tokenizer.chat_template``); ``protocol``: the tags
    protocol the model was trained with (its result block; default ``TagsProtocol()``). Raises ValueError
    when ``base_template`` is empty or uses template inheritance.
    """
    proto = protocol or TagsProtocol()
    if not base_template or not base_template.strip():
        raise ValueError("the model has no chat template; give it one (tokenizer.chat_template) before serving")
    if "{% extends" in base_template or "{%- extends" in base_template or "{% block" in base_template:
        raise ValueError("the model's chat template uses {% extends %}/{% block %}, which cannot be wrapped")
    res_before, res_after = proto.result_template.split("{text}")
    sys_before, sys_after = _system_prompt_pieces(proto)
    return "".join([
        f"{{% macro {_MACRO}(messages, tools, add_generation_prompt) %}}{base_template}{{% endmacro %}}",
        # a tool's tag argument: the first required parameter, else the first declared one (SchemaTool's rule)
        "{%- macro appo_tag_arg(name) -%}{%- set a = namespace(v='') -%}{%- for t in tools or [] -%}"
        "{%- set f = t.function if t.function is defined else t -%}{%- if f.name == name -%}"
        "{%- set p = f.parameters or {} -%}{%- if p.required -%}{%- set a.v = p.required[0] -%}"
        "{%- elif p.properties -%}{%- set a.v = (p.properties.keys() | list)[0] -%}{%- endif -%}"
        "{%- endif -%}{%- endfor -%}{{- a.v -}}{%- endmacro -%}",
        "{%- macro appo_call(tc) -%}{%- set f = tc.function if tc.function is defined else tc -%}"
        "{%- set args = f.arguments if f.arguments is defined and f.arguments is not none else {} -%}"
        "{%- set arg = appo_tag_arg(f.name) -%}{{- '<' ~ f.name ~ '>' -}}"
        "{%- if args is string -%}{{- args -}}"
        "{%- elif arg and (args | length == 0 or (args | length == 1 and arg in args and args[arg] is string)) -%}"
        "{{- args[arg] if args | length else '' -}}"
        "{%- else -%}{{- args | tojson -}}{%- endif -%}{{- '</' ~ f.name ~ '>' -}}{%- endmacro -%}",
        "{%- macro appo_assistant(m) -%}{{- m.content or '' -}}"
        "{%- for tc in m.tool_calls or [] -%}{{- appo_call(tc) -}}{%- endfor -%}{%- endmacro -%}",
        f"{{%- macro appo_result(text) -%}}{{{{- {_lit(res_before)} ~ (text or '') ~ {_lit(res_after)} -}}}}"
        "{%- endmacro -%}",
        # where the running episode starts: after the last user / system / developer message
        "{%- set ns = namespace(last=-1, head=[]) -%}"
        "{%- for m in messages -%}{%- if m.role in ['user', 'system', 'developer'] -%}"
        "{%- set ns.last = loop.index0 -%}{%- endif -%}{%- endfor -%}"
        "{%- if ns.last < 0 -%}{{- raise_exception('messages has no user message') -}}{%- endif -%}",
        "{%- for m in messages[:ns.last + 1] -%}"
        "{%- if m.role == 'assistant' -%}"
        "{%- set ns.head = ns.head + [{'role': 'assistant', 'content': appo_assistant(m) | string}] -%}"
        "{%- elif m.role == 'tool' and ns.head and ns.head[-1].role == 'assistant' -%}"
        "{%- set ns.head = ns.head[:-1] + [{'role': 'assistant', "
        "'content': ns.head[-1].content ~ appo_result(m.content)}] -%}"
        "{%- else -%}{%- set ns.head = ns.head + [{'role': 'system' if m.role == 'developer' else m.role, "
        "'content': m.content or ''}] -%}{%- endif -%}{%- endfor -%}",
        "{%- if tools and ns.head[0].role != 'system' -%}"
        f"{{%- set sp = namespace(text={_lit(sys_before)}) -%}}"
        "{%- for t in tools -%}{%- set f = t.function if t.function is defined else t -%}"
        "{%- set arg = appo_tag_arg(f.name) | string -%}"
        "{%- set sp.text = sp.text ~ 'To use the ' ~ f.name ~ ' tool, write <' ~ f.name ~ '> ' ~ (arg or 'input')"
        " ~ ' </' ~ f.name ~ '>' ~ ((': ' ~ f.description) if f.description else '') -%}"
        "{%- if not loop.last -%}{%- set sp.text = sp.text ~ '\\n' -%}{%- endif -%}{%- endfor -%}"
        f"{{%- set ns.head = [{{'role': 'system', 'content': sp.text ~ {_lit(sys_after)}}}] + ns.head -%}}"
        "{%- endif -%}",
        f"{{{{- {_MACRO}(ns.head, none, add_generation_prompt or ns.last + 1 < messages | length) -}}}}",
        "{%- for m in messages[ns.last + 1:] -%}"
        "{%- if m.role == 'assistant' -%}{{- appo_assistant(m) -}}{%- else -%}{{- appo_result(m.content) -}}"
        "{%- endif -%}{%- endfor -%}",
    ])


def template_prompt_ids(tokenizer, chat_template: str, messages, tools) -> list[int]:
    """The prompt ids a server that renders with ``chat_template`` feeds the model (what vLLM does): tool-call
    arguments parsed from JSON strings to objects, the conversation rendered with a generation prompt and the
    request's tool schemas, the text tokenized in one piece. ``tools``: :class:`~appo.tools.base.Tool` objects
    by name. The ``serve_render`` of :func:`appo.agent.render_check.check_rollout` for a vLLM server."""
    msgs = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [{**tc, "function": {**tc["function"], "arguments": json.loads(
                tc["function"].get("arguments") or "{}")}} for tc in m["tool_calls"]]
        msgs.append(m)
    schemas = [t.schema() for t in dict(tools).values()] or None
    text = tokenizer.apply_chat_template(msgs, tools=schemas, chat_template=chat_template, tokenize=False,
                                         add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))
