"""Which positions of a rollout to analyse, what region each token is in, and how a re-draw starts.

Positions are response positions (index t into ``Rollout.response_ids``). Only model-written tokens
(``loss_mask`` 1) can be re-drawn: a tool writes the others.

**The fork used here differs from the training fork.** Training (APPO, :func:`appo.agent.fork_start`)
continues from ``prompt + response[: t + 1]``: it *keeps* token t and re-samples from t + 1. The
analysis (:func:`redraw_start`) continues from ``prompt + response[: t]``: token t itself is re-drawn.
Why: the question asked is "does the decision taken at t matter?", and the decision at t is the draw of
token t from the distribution whose entropy is H_t; keeping it would measure the decision at t + 1 (for
which H_{t+1} is the matching entropy). With this fork, ``E[R | branch at t]`` is the value of the
state *before* token t, and influence_t = |E[R | branch at t] - R_rollout| is how far the outcome the
rollout actually got lies from what re-deciding t onwards gives on average.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from appo.agent.loop import LoopStart
from appo.types import Rollout, ToolSpan

REGIONS = ("think", "tool_call", "answer", "other")
"""Regions a model token can lie in. Priority where they overlap: tool_call > answer > think > other."""

_THINK = re.compile(r"<think>.*?(?:</think>|(?=<result>)|\Z)", re.S)
_ANSWER = re.compile(r"<answer>.*?(?:</answer>|(?=<result>)|\Z)", re.S)


def token_char_spans(texts: Sequence[str]) -> list[tuple[int, int]]:
    """``[start, end)`` character range of each token in ``"".join(texts)``."""
    out, pos = [], 0
    for s in texts:
        out.append((pos, pos + len(s)))
        pos += len(s)
    return out


def _mark(spans: list[tuple[int, int]], blocks: list[tuple[int, int]], regions: list[str], name: str) -> None:
    for t, (a, b) in enumerate(spans):
        if regions[t] != "other":
            continue
        if any(a < be and (b > bs if b > a else bs <= a < be) for bs, be in blocks):
            regions[t] = name


def token_regions(row: Rollout, texts: Sequence[str], protocol: str = "tags") -> list[str]:
    """Region of every response token (see :data:`REGIONS`); tool-written tokens are ``other``.

    ``texts`` are the tokens decoded one by one. ``tool_call``: the model-written call text of a
    :class:`~appo.types.ToolSpan` (``[call_start, call_end)``). ``think``: a token overlapping a
    ``<think> ... </think>`` block (an unclosed block runs to the next ``<result>`` or the end).
    ``answer``: for ``tags``, a token overlapping an ``<answer> ... </answer>`` block; for other
    protocols (hermes: the final message is the answer), every model token after the last tool result
    of a row that stopped with ``answer``. Leaves out: character-exact attribution of tokens that
    straddle a tag (a token overlapping a block counts as inside it).
    """
    n = len(row.response_ids)
    if len(texts) != n:
        raise ValueError(f"token_regions: {len(texts)} token texts for {n} response tokens")
    regions = ["other"] * n
    for s in row.tool_spans:
        for t in range(s.call_start, min(s.call_end, n)):
            if row.loss_mask[t] == 1:
                regions[t] = "tool_call"
    spans = token_char_spans(texts)
    text = "".join(texts)
    if protocol == "tags":
        _mark(spans, [m.span() for m in _ANSWER.finditer(text)], regions, "answer")
    _mark(spans, [m.span() for m in _THINK.finditer(text)], regions, "think")
    if protocol != "tags" and row.stop_reason == "answer":
        last = max((s.result_end for s in row.tool_spans), default=0)
        for t in range(last, n):
            if row.loss_mask[t] == 1 and regions[t] == "other":
                regions[t] = "answer"
    for t in range(n):
        if row.loss_mask[t] == 0:
            regions[t] = "other"
    return regions


def tool_distance(t: int, spans: Sequence[ToolSpan]) -> int | None:
    """Tokens from position t to the nearest tool call, a call covering its text and its result
    (``[call_start, result_end)``): 0 inside, ``call_start - t`` before it, ``t - result_end + 1`` after
    it (so the first token of a call is at 0, the token after its result at 1). None without calls."""
    best = None
    for s in spans:
        d = s.call_start - t if t < s.call_start else (t - s.result_end + 1 if t >= s.result_end else 0)
        best = d if best is None else min(best, d)
    return best


def tool_boundaries(row: Rollout) -> dict[int, str]:
    """Tool-call boundaries of a row: ``call_start`` (first token of each call) and ``after_result``
    (the model token right after each result), position -> kind; only model-written tokens."""
    out: dict[int, str] = {}
    n = len(row.response_ids)
    for s in row.tool_spans:
        if s.call_start < n and row.loss_mask[s.call_start] == 1:
            out.setdefault(s.call_start, "call_start")
        if s.result_end < n and row.loss_mask[s.result_end] == 1:
            out.setdefault(s.result_end, "after_result")
    return out


def choose_positions(eligible: Sequence[int], n_strata: int, rng: random.Random,
                     boundaries: Sequence[int] = ()) -> list[int]:
    """A stratified sample of ``eligible`` positions plus every boundary, sorted, without repeats.

    ``eligible`` (sorted) is cut into ``min(n_strata, len(eligible))`` contiguous strata of (nearly)
    equal size and one position is drawn uniformly from each, so the sample covers the whole rollout.
    """
    pool = sorted(set(eligible))
    k = min(max(n_strata, 0), len(pool))
    picked: set[int] = set(boundaries)
    for j in range(k):
        lo, hi = (j * len(pool)) // k, ((j + 1) * len(pool)) // k
        picked.add(pool[rng.randrange(lo, hi)])
    return sorted(picked)


def redraw_start(row: Rollout, t: int, uid: int) -> LoopStart:
    """A loop start that re-draws token t of ``row``: prefix ``prompt + response[: t]``.

    ``t`` must be a model token (``loss_mask[t] == 1``). Tool calls completed inside the prefix are
    carried (they count toward the tool-call limit); a call cut by the prefix is completed by the
    continuation. The start is an ``initial`` row (no tree links): it is a sample of the analysis, not a
    training row. See the module docstring for how this differs from :func:`appo.agent.fork_start`.
    """
    n = len(row.response_ids)
    if not 0 <= t < n:
        raise ValueError(f"redraw_start: t={t} is outside the response (0..{n - 1})")
    if row.loss_mask[t] != 1:
        raise ValueError(f"redraw_start: position {t} was written by a tool (loss_mask 0); pick a model token")
    return LoopStart(group=row.group, uid=uid, prompt_ids=tuple(row.prompt_ids), data_index=row.data_index,
                     response_ids=tuple(row.response_ids[:t]), logprobs=tuple(row.logprobs[:t]),
                     entropies=tuple(row.entropies[:t]), loss_mask=tuple(row.loss_mask[:t]),
                     tool_spans=tuple(s for s in row.tool_spans if s.result_end <= t))
