"""Pulling the final answer out of a response: result blocks, the answer block, the last ``\\boxed{}``.

A response is the full decoded text of a rollout: model turns and the tool results the agent loop
inserted (``<result>...</result>`` in the tag protocol, ``<tool_response>...</tool_response>`` in Hermes).
Tool output is not the model's answer, so every extractor here first blanks the *bodies* of result
blocks (the tags stay, so the format check can still see that a result followed a call). A search hit
that happens to contain ``<answer>`` or ``\\boxed{42}`` therefore can neither break the format nor
be taken for the model's answer.
"""

from __future__ import annotations

import re

RESULT_TAGS = ("result", "tool_response")
"""Tags whose bodies are written by tools, not by the model."""

_RESULT_BODY_RE = re.compile(r"<(result|tool_response)>(.*?)</\1>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOX_OPENERS = ("\\boxed", "\\fbox")


def strip_tool_results(text: str) -> str:
    """``text`` with the body of every closed result block emptied: ``<result>...</result>`` ->
    ``<result></result>`` (same for ``<tool_response>``). An unclosed result block is left as is."""
    return _RESULT_BODY_RE.sub(lambda m: f"<{m.group(1)}></{m.group(1)}>", text)


def answer_block(text: str) -> str | None:
    """Body of the last complete ``<answer>...</answer>`` block outside tool results, or None."""
    blocks = _ANSWER_RE.findall(strip_tool_results(text))
    return blocks[-1] if blocks else None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces matched.

    Nested braces are followed (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``). The brace-less form
    ``\\boxed 5`` gives the next whitespace-delimited token. Returns None when there is no box or the
    last box's braces never close (a truncated answer is not an answer).
    """
    idx = max(text.rfind(opener) for opener in _BOX_OPENERS)
    if idx < 0:
        return None
    opener = next(o for o in _BOX_OPENERS if text.startswith(o, idx))
    i = idx + len(opener)
    if i < len(text) and text[i] == " ":
        token = text[i:].split()
        return token[0].rstrip("$") if token else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_answer(response: str) -> str | None:
    """The final answer of a response: the last ``\\boxed{}`` of the last answer block.

    Without an answer block (a rollout that never closed one), fall back to the last ``\\boxed{}`` of
    the model's own text (tool results excluded). Returns None when there is no box at all; free text
    without a box is not guessed at (the reference reward does not either).
    """
    block = answer_block(response)
    if block is not None:
        return last_boxed(block)
    return last_boxed(strip_tool_results(response))
