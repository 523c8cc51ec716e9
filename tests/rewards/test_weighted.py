"""Several rewards with weights (TRL's reward_funcs / reward_weights): the sum, the per-function metrics."""

from __future__ import annotations

import pytest

from appo.rewards.base import RewardOutput
from appo.rewards.weighted import build_weighted
from appo.types import Example

EX = Example("t/0", "2+2?", ("4",), "math", "math_equiv", "t")


def length(examples, responses):
    return [RewardOutput(float(len(r)), {"acc": 9.0}) for r in responses]


def test_weighted_sum_and_metrics(tmp_path):
    fn = tmp_path / "r.py"
    fn.write_text("def has_box(prompts, completions, **kw):\n    return [float('boxed' in c) for c in completions]\n")
    reward = build_weighted(["answer", f"{fn}:has_box", length], [1.0, 0.5, 0.1])
    assert reward.names == ("answer", "has_box", "length")
    right, wrong = reward([EX, EX], ["<answer>\\boxed{4}</answer>", "no"])
    assert right.score == pytest.approx(1.0 + 0.5 + 0.1 * len("<answer>\\boxed{4}</answer>"))
    assert wrong.score == pytest.approx(0.1 * 2)
    assert (right.metrics["answer"], right.metrics["has_box"], right.metrics["length"]) == (1.0, 1.0, 26.0)
    assert right.metrics["acc"] == 1.0 and right.metrics["length/acc"] == 9.0  # first function's acc is plain


def test_defaults_repeats_and_errors():
    reward = build_weighted(["answer", "answer"])
    assert reward.names == ("answer", "answer_2") and reward.weights == (1.0, 1.0)
    with pytest.raises(ValueError, match="2 entries for 1 reward.funcs"):
        build_weighted(["answer"], [1.0, 2.0])
    with pytest.raises(ValueError, match="reward.funcs is empty"):
        build_weighted([])
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        build_weighted(["nope"])
