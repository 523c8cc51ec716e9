"""Summary statistics against hand computations on a tiny fixed input (see the comments for the working)."""

from __future__ import annotations

import math

import pytest

from appo.analysis.records import AnalysisConfig, parse_omega_variant
from appo.analysis.stats import (
    average_ranks,
    bootstrap_precision,
    default_k,
    format_summary,
    precision_at_k,
    spearman,
    spearman_within,
    summarize,
    topk_weights,
)

# Five analysed positions.
INFL = [0.5, 0.0, 0.25, 0.25, 0.0]
ENT = [0.1, 0.9, 0.5, 0.3, 0.7]
BS = [1.0, 0.0, 1.0, 0.0, 0.0]
DIST = [0, 10, 2, None, 6]
REGION = ["think", "think", "tool_call", "answer", "other"]


def test_average_ranks_share_ties():
    assert average_ranks(INFL) == [5.0, 1.5, 3.5, 3.5, 1.5]
    assert average_ranks([3, 1, 2]) == [3.0, 1.0, 2.0]


def test_spearman_by_hand():
    # ranks: influence [5, 1.5, 3.5, 3.5, 1.5], entropy [1, 5, 3, 2, 4]; deviations from 3:
    # [2, -1.5, .5, .5, -1.5] . [-2, 2, 0, -1, 1] = -9; |.|^2 = 9 and 10 -> rho = -9 / sqrt(90)
    rho, n = spearman(INFL, ENT)
    assert n == 5 and rho == pytest.approx(-9 / math.sqrt(90))
    # BS ranks [4.5, 2, 4.5, 2, 2]: deviations [1.5, -1, 1.5, -1, -1]; sum of products 6.25, |.|^2 7.5
    assert spearman(INFL, BS)[0] == pytest.approx(6.25 / math.sqrt(9 * 7.5))


def test_spearman_skips_missing_and_is_undefined_when_constant():
    rho, n = spearman(INFL, [None, 0.9, float("nan"), 0.3, 0.7])
    # pairs (0, .9), (.25, .3), (0, .7): influence ranks [1.5, 3, 1.5], score ranks [3, 1, 2]
    assert n == 3 and rho == pytest.approx(spearman([0.0, 0.25, 0.0], [0.9, 0.3, 0.7])[0])
    assert rho == pytest.approx(-1.5 / math.sqrt(1.5 * 2))
    assert math.isnan(spearman(INFL, [1.0] * 5)[0])
    assert math.isnan(spearman([1.0, 2.0], [1.0, 2.0])[0])  # fewer than 3 pairs


def test_topk_weights_fractional_at_ties():
    # K = 2: 0.5 is in; the two 0.25 share the last place -> 1/2 each
    assert topk_weights(INFL, 2) == [1.0, 0.0, 0.5, 0.5, 0.0]
    assert topk_weights([None, 1.0, 2.0], 1) == [0.0, 0.0, 1.0]
    assert sum(topk_weights([0.0] * 4, 3)) == pytest.approx(3.0)
    assert topk_weights([1.0], 5) == [1.0]


def test_precision_at_k_by_hand():
    # influence top-2 weights [1, 0, .5, .5, 0]; entropy top-2 = positions 1 and 4 -> overlap 0
    assert precision_at_k(INFL, ENT, 2) == 0.0
    # BS top-2 = positions 0 and 2 -> overlap 1 * 1 + .5 * 1 = 1.5 -> 0.75
    assert precision_at_k(INFL, BS, 2) == pytest.approx(0.75)
    assert precision_at_k(INFL, INFL, 2) == pytest.approx((1 + 0.25 + 0.25) / 2)  # self, with a tie inside
    assert math.isnan(precision_at_k(INFL, [None] * 5, 2))


def test_summarize_by_hand():
    s = summarize(INFL, {"entropy": ENT, "omega": [1.0] * 5, "bs": BS}, DIST, REGION, k=2, near_tool_tokens=2,
                  standard_error=[0.1, 0.2, float("nan"), 0.3, 0.4])
    assert s.n_positions == 5 and s.k == 2 and s.n_positive == 3
    assert s.spearman["entropy"] == pytest.approx(-9 / math.sqrt(90))
    assert math.isnan(s.spearman["omega"])
    assert s.precision_at_k == pytest.approx({"entropy": 0.0, "omega": 0.4, "bs": 0.75})
    assert s.random_precision == pytest.approx(0.4)
    # near (<= 2 tokens): positions 0 and 2; top-K weights 1 and .5 of K = 2; 2 of 5 overall
    assert s.near_share_topk == pytest.approx(0.75)
    assert s.near_share_all == pytest.approx(0.4)
    assert s.region_influence["think"] == pytest.approx({"n": 2.0, "mean": 0.25, "topk_share": 0.5})
    assert s.region_influence["tool_call"] == pytest.approx({"n": 1.0, "mean": 0.25, "topk_share": 0.25})
    assert s.region_influence["other"]["topk_share"] == 0.0
    assert s.mean_influence == pytest.approx(0.2)
    assert s.mean_standard_error == pytest.approx(0.25)
    assert any("omega is constant" in n for n in s.notes)
    d = s.to_dict()
    assert d["spearman"]["omega"] is None  # NaN is written as None
    text = format_summary(s)
    assert "precision@K" in text and "n/a" in text and "0.750" in text


def test_summarize_rejects_bad_input():
    with pytest.raises(ValueError, match="entropy has 2 entries"):
        summarize(INFL, {"entropy": [1.0, 2.0]}, DIST, REGION)
    with pytest.raises(ValueError, match="finite"):
        summarize([float("nan")], {}, [None], ["other"])
    assert default_k(0) == 0 and default_k(3) == 1 and default_k(20) == 4
    assert default_k(20, n_positive=2) == 2 and default_k(20, n_positive=0) == 4 and default_k(20, 9) == 4
    s = summarize([0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], {}, [None] * 10, ["other"] * 10)
    assert s.k == 1 and s.n_positive == 1  # 20% of 10 = 2, but one position only has influence


def test_spearman_within_rollouts_by_hand():
    infl = [0.0, 1.0, 2.0, 2.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    score = [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    keys = ["a"] * 3 + ["b"] * 3 + ["c"] * 3  # a: rho 1, b: rho -1, c: constant influence (undefined)
    assert spearman_within(infl, score, keys) == (0.0, 2)
    assert spearman_within(infl[6:], score[6:], keys[6:])[1] == 0
    s = summarize(infl, {"entropy": score}, [None] * 9, ["other"] * 9, rollout=keys)
    assert s.spearman_within == {"entropy": 0.0} and s.spearman_within_n == {"entropy": 2}
    assert s.spearman["entropy"] == pytest.approx(0.0)  # pooled: the two rollouts cancel as well


def test_token_effect_estimator_by_hand():
    from appo.analysis.records import PositionRecord

    base = dict(group=0, example_id="e", rollout=0, t=3, token="x", region="other", boundary=None, tool_distance=None,
                entropy=1.0, omega=1.0, bs=None, strict=None, rel_position=0.5, rollout_reward=1.0)
    # pi = 0.75; same = keep (1, 1) + re-draws 1 and 3 (1, 0) -> 0.75; other = re-draws 2 and 4 (0, 0) -> 0
    p = PositionRecord(**base, logprob=math.log(0.75), branch_rewards=(1.0, 0.0, 0.0, 0.0), influence=0.75,
                       keep_rewards=(1.0, 1.0), branch_same=(True, False, True, False))
    assert p.token_effect == pytest.approx(0.25 * 0.75)
    assert p.branch_mean == 0.25 and p.keep_mean == 1.0
    assert p.branch_var == pytest.approx(0.25)  # (0.75^2 + 3 * 0.25^2) / 3
    assert p.standard_error == pytest.approx(0.25)
    assert p.effect_standard_error == pytest.approx(0.25 * math.sqrt(0.25 / 4))  # var_same 0.25, var_other 0
    never = PositionRecord(**base, logprob=math.log(0.9), branch_rewards=(1.0, 0.0), influence=0.5,
                           keep_rewards=(0.0, 1.0), branch_same=(True, True))
    assert never.token_effect == 0.0  # no re-draw drew another token
    unpaired = PositionRecord(**base, logprob=0.0, branch_rewards=(1.0,), influence=0.0)
    assert math.isnan(unpaired.token_effect) and math.isnan(unpaired.standard_error)
    assert unpaired.to_dict()["token_effect"] is None


def test_last_number_reward_scores_unformatted_answers():
    from appo.analysis.outcomes import last_number, last_number_reward
    from appo.types import Example

    ex = [Example(id=f"q/{i}", question="?", answers=(a,), kind="math", metric="math_equiv", data_source="q")
          for i, a in enumerate(("18", "70000", "3"))]
    out = last_number_reward(ex, ["she makes $18 per day.", "a profit of $70,000.", "<answer>\\boxed{3}</answer> 9"])
    assert [o.score for o in out] == [1.0, 1.0, 1.0] and out[2].metrics["boxed"] == 1.0
    out = last_number_reward(ex, ["18 eggs, so 20", "<result>\n70000\n</result> no number", "none"])
    assert [o.score for o in out] == [0.0, 0.0, 0.0]  # the last number counts; tool output does not
    assert last_number("1,234.5 then 7.") == "7" and last_number("no digits") is None
    with pytest.raises(ValueError, match="responses"):
        last_number_reward(ex, ["1"])


def test_influence_along_the_response_by_hand():
    from appo.analysis.stats import along_response

    # opening: 0.05 (1.0); early: 0.2, 0.3 (0.0, 0.5); middle: 0.5 (1.5); late: 0.9, 1.0 (0.0, 0.0) -> sum 3.0
    a = along_response([1.0, 0.0, 0.5, 1.5, 0.0, 0.0], [0.05, 0.2, 0.3, 0.5, 0.9, 1.0])
    assert a["opening"] == pytest.approx({"n": 1.0, "mean": 1.0, "share": 1 / 3})
    assert a["early"] == pytest.approx({"n": 2.0, "mean": 0.25, "share": 0.5 / 3})
    assert a["middle"] == pytest.approx({"n": 1.0, "mean": 1.5, "share": 0.5})
    assert a["late"] == pytest.approx({"n": 2.0, "mean": 0.0, "share": 0.0})
    assert math.isnan(along_response([0.0], [0.5])["middle"]["share"])
    s = summarize(INFL, {"bs": BS}, DIST, REGION, rel_position=[0.0, 0.25, 0.5, 0.75, 0.95])
    assert set(s.along) == {"opening", "early", "middle", "late"} and "along" in format_summary(s)
    assert summarize(INFL, {"bs": BS}, DIST, REGION).along == {}


def test_bootstrap_precision_intervals():
    # 6 rollouts x 3 positions; "oracle" is the influence itself, "anti" its negation, entropy in between
    infl = [x for r in range(6) for x in (1.0 + r, 0.0, 0.0)]
    rollout = [r for r in range(6) for _ in range(3)]
    scores = {"entropy": [0.5, 1.0, 0.0] * 6, "oracle": list(infl), "anti": [-x for x in infl]}
    ci, diff = bootstrap_precision(infl, scores, rollout, resamples=200, seed=1)
    # (a resample repeats rollouts, whose equal influence values then tie: the oracle's lower bound is < 1)
    assert 0.5 < ci["oracle"][0] and ci["oracle"][1] == 1.0 and ci["anti"] == (0.0, 0.0)
    assert ci["entropy"] == (0.0, 0.0)  # entropy's top K holds only zero-influence positions
    assert diff["oracle"][0] > 0.5 and diff["anti"] == (0.0, 0.0) and "entropy" not in diff
    assert bootstrap_precision(infl, scores, rollout, resamples=200, seed=1) == (ci, diff)  # deterministic
    s = summarize(infl, scores, [None] * 18, ["think"] * 18, rollout=rollout, bootstrap=50)
    assert s.bootstrap == 50 and s.precision_ci["anti"] == (0.0, 0.0) and s.precision_at_k["oracle"] == 1.0
    text = format_summary(s)
    assert "minus entropy [95% CI]" in text and "-0.000 [+0.000, +0.000]" not in text and "+1.000 [+" in text
    assert summarize(infl, scores, [None] * 18, ["think"] * 18, rollout=rollout).precision_ci == {}


def test_parse_omega_variant():
    assert parse_omega_variant("sum") == ("sum", 1.0)
    assert parse_omega_variant("mean,g=0.5") == ("mean", 0.5)
    for bad in ("log", "sum,g=0", "sum,g=x", "sum,gamma=0.5"):
        with pytest.raises(ValueError, match="omega variant"):
            parse_omega_variant(bad)
    with pytest.raises(ValueError, match="omega variant"):
        AnalysisConfig(omega_variants=("clip",))
    with pytest.raises(ValueError, match="bootstrap"):
        AnalysisConfig(bootstrap=-1)
