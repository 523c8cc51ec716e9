"""The reference work's format check on a whole response (tag protocol; Hermes calls accepted).

A response is well-formed when (reference: ARPO's ``validate_format``):

1. ``<think>`` / ``</think>`` are paired (at least one pair, each opened before it closes, none nested);
2. there is exactly one ``<answer>`` and one ``</answer>``, in that order;
3. every tool call (``<python>...</python>``, ``<search>...</search>``, other tool tags, or a Hermes
   ``<tool_call>...</tool_call>``) is closed and followed by its own result block
   (``<result>...</result>`` or ``<tool_response>...</tool_response>``) before the next call or the answer;
   a result block right after any other ``</name>`` counts as the result of a call to tool ``name``
   (user tools), though only the tags in ``tool_tags`` are checked for being closed;
4. the answer block holds a complete ``\\boxed{...}``.

Stricter than the reference in two places, both about traces the reference lets through by counting
tags instead of reading them in order: two calls sharing one result fail (rule 3), and a result block that
follows no call (a fabricated tool output) fails. Result bodies are blanked before checking, so tags
quoted inside tool output never count. Left out: the reference's end-of-sequence check (the agent loop
already records truncation as ``stop_reason == "max_length"``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from appo.rewards.extract import RESULT_TAGS, last_boxed, strip_tool_results

DEFAULT_TOOL_TAGS = ("python", "search")
"""Tool tags of the reference protocol."""


@dataclass(frozen=True)
class FormatCheck:
    """Outcome of :func:`check_format`."""

    ok: bool
    """True when every rule holds."""
    reason: str
    """``ok`` or the first rule broken (``think_unpaired``, ``answer_count``, ``call_without_result``, ...)."""
    tools_used: tuple[str, ...] = ()
    """Names of the tool calls that got a result, in order (Hermes calls: the JSON ``name``)."""


def _hermes_name(body: str) -> str:
    try:
        name = json.loads(body).get("name")
        if isinstance(name, str):
            return name
    except (ValueError, AttributeError):
        pass
    match = re.search(r'"name"\s*:\s*"([^"]+)"', body)
    return match.group(1) if match else "tool_call"


_CLOSE_BEFORE_RE = re.compile(r"</([A-Za-z_][\w.-]*)>\s*$")
_NOT_CALLS = frozenset(("think", "answer", *RESULT_TAGS))


def _untracked_call(before: str) -> str | None:
    """The tag of a ``</name>`` right before a result block (a user tool's call), or None."""
    match = _CLOSE_BEFORE_RE.search(before)
    return match.group(1) if match and match.group(1) not in _NOT_CALLS else None


def check_format(response: str, tool_tags: tuple[str, ...] = DEFAULT_TOOL_TAGS) -> FormatCheck:
    """Check ``response`` against the rules in the module docstring; see :class:`FormatCheck`."""
    text = strip_tool_results(response)
    call_tags = tuple(tool_tags) + ("tool_call",)
    names = "|".join(re.escape(t) for t in ("think", "answer") + call_tags + RESULT_TAGS)
    events = [(m.group(1) == "/", m.group(2), m.start(), m.end()) for m in re.finditer(rf"<(/?)({names})>", text)]

    in_think = False
    think_pairs = 0
    call: tuple[str, int] | None = None  # (tag, end of its opening tag) while a call is open
    awaiting: str | None = None  # tool name whose result must come next
    in_result = False
    used: list[str] = []
    for closing, tag, start, end in events:
        if tag == "think":
            if closing != in_think:
                return FormatCheck(False, "think_unpaired", tuple(used))
            in_think = not closing
            think_pairs += closing
            continue
        if tag in RESULT_TAGS:
            if not closing:
                if awaiting is None and call is None:
                    awaiting = _untracked_call(text[:start])
                if awaiting is None:
                    return FormatCheck(False, "result_without_call", tuple(used))
                used.append(awaiting)
                awaiting, in_result = None, True
            elif not in_result:
                return FormatCheck(False, "result_unpaired", tuple(used))
            else:
                in_result = False
            continue
        if tag in call_tags:
            if call is None:
                if closing:
                    return FormatCheck(False, f"{tag}_unpaired", tuple(used))
                if awaiting is not None:
                    return FormatCheck(False, "call_without_result", tuple(used))
                call = (tag, end)
            elif closing and tag == call[0]:
                awaiting = _hermes_name(text[call[1] : start]) if tag == "tool_call" else tag
                call = None
            else:
                return FormatCheck(False, f"{call[0]}_unclosed", tuple(used))
            continue
        if tag == "answer" and awaiting is not None:
            return FormatCheck(False, "call_without_result", tuple(used))
    if call is not None:
        return FormatCheck(False, f"{call[0]}_unclosed", tuple(used))
    if awaiting is not None:
        return FormatCheck(False, "call_without_result", tuple(used))
    if in_think:
        return FormatCheck(False, "think_unpaired", tuple(used))
    if think_pairs == 0:
        return FormatCheck(False, "think_missing", tuple(used))
    opens, closes = text.count("<answer>"), text.count("</answer>")
    if opens != 1 or closes != 1:
        return FormatCheck(False, "answer_count", tuple(used))
    start, stop = text.find("<answer>"), text.find("</answer>")
    if stop < start:
        return FormatCheck(False, "answer_order", tuple(used))
    if last_boxed(text[start + len("<answer>") : stop]) is None:
        return FormatCheck(False, "no_boxed", tuple(used))
    return FormatCheck(True, "ok", tuple(used))
