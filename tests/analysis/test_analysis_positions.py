"""Regions, tool distances, boundaries, the stratified position sample and the re-draw fork."""

from __future__ import annotations

import random

import pytest

from appo.agent import fork_start
from appo.analysis.positions import choose_positions, redraw_start, token_regions, tool_boundaries, tool_distance
from appo.types import Rollout, ToolSpan

# 0 <think>  1 hm  2 </think>  3 <python>  4 1+1  5 </python>  6-8 result  9 <think>  10 ok  11 </think>
# 12 \n  13 <answer>  14 2  15 </answer>
TEXTS = ["<think>", "hm", "</think>", "<python>", "1+1", "</python>", "\n<result>\n", "2", "\n</result>\n",
         "<think>", "ok", "</think>", "\n", "<answer>", "2", "</answer>"]
MASK = [1] * 6 + [0] * 3 + [1] * 7
SPAN = ToolSpan(call_start=3, call_end=6, result_end=9, name="python", ok=True)


def _row(spans=(SPAN,), mask=MASK, stop="answer") -> Rollout:
    n = len(mask)
    return Rollout(group=0, uid=0, prompt_ids=(1, 2), response_ids=tuple(range(100, 100 + n)),
                   logprobs=tuple(-0.5 * m for m in mask), entropies=tuple(1.0 * m for m in mask),
                   loss_mask=tuple(mask), stop_reason=stop, tool_spans=tuple(spans))


def test_regions_tags():
    reg = token_regions(_row(), TEXTS, "tags")
    assert reg[:3] == ["think"] * 3
    assert reg[3:6] == ["tool_call"] * 3
    assert reg[6:9] == ["other"] * 3  # tool output
    assert reg[9:12] == ["think"] * 3
    assert reg[12] == "other"
    assert reg[13:] == ["answer"] * 3


def test_regions_unclosed_think_and_hermes_answer():
    texts = ["<think>", "a", "b"]
    assert token_regions(_row((), [1, 1, 1]), texts, "tags") == ["think"] * 3
    # hermes: the model tokens after the last result of an answered row are the answer, thinking excluded
    reg = token_regions(_row(), TEXTS, "hermes")
    assert reg[13:] == ["answer"] * 3 and reg[9:12] == ["think"] * 3 and reg[3:6] == ["tool_call"] * 3
    assert token_regions(_row(stop="max_length"), TEXTS, "hermes")[13] == "other"
    with pytest.raises(ValueError, match="token texts"):
        token_regions(_row(), TEXTS[:-1])


def test_tool_distance_and_boundaries():
    assert [tool_distance(t, [SPAN]) for t in (0, 2, 3, 5, 9, 12)] == [3, 1, 0, 0, 1, 4]
    far = ToolSpan(call_start=20, call_end=22, result_end=25, name="search", ok=True)
    assert tool_distance(15, [SPAN, far]) == 5 and tool_distance(19, [SPAN, far]) == 1
    assert tool_distance(4, []) is None
    assert tool_boundaries(_row()) == {3: "call_start", 9: "after_result"}
    # a result that ends the response has no token after it
    cut = ToolSpan(call_start=3, call_end=6, result_end=9, name="python", ok=True)
    assert tool_boundaries(_row((cut,), MASK[:9])) == {3: "call_start"}


def test_choose_positions_one_per_stratum_plus_boundaries():
    pool = list(range(0, 40, 2))  # 20 eligible positions
    for seed in range(5):
        picked = choose_positions(pool, 4, random.Random(seed), boundaries=[7, 9])
        assert picked == sorted(picked) and {7, 9} <= set(picked)
        rest = [p for p in picked if p not in (7, 9)]
        assert len(rest) == 4 and [p // 10 for p in rest] == [0, 1, 2, 3]  # strata of 5 positions each
    assert choose_positions(pool, 4, random.Random(1)) == choose_positions(pool, 4, random.Random(1))
    assert choose_positions([3, 5], 8, random.Random(0)) == [3, 5]  # fewer positions than strata: all
    assert choose_positions(pool, 0, random.Random(0), boundaries=[1]) == [1]


def test_redraw_start_forks_before_t_unlike_training_fork():
    row = _row()
    s = redraw_start(row, 10, uid=5)
    assert s.response_ids == row.response_ids[:10] and s.loss_mask == row.loss_mask[:10]
    assert s.tool_spans == (SPAN,) and s.uid == 5 and s.parent is None
    assert fork_start(row, 10, uid=5).response_ids == row.response_ids[:11]  # training keeps token t
    assert redraw_start(row, 9, uid=1).tool_spans == (SPAN,)  # the token after the result
    assert redraw_start(row, 4, uid=1).tool_spans == ()  # inside the call: completed by the continuation
    assert redraw_start(row, 0, uid=1).response_ids == ()
    with pytest.raises(ValueError, match="written by a tool"):
        redraw_start(row, 7, uid=1)
    with pytest.raises(ValueError, match="outside"):
        redraw_start(row, 16, uid=1)
