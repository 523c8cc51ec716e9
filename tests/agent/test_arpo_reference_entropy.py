"""ARPO's entropy change as its reference computes it (issue 24): the window's entropies summed, not averaged."""

from __future__ import annotations

import math

import pytest
from agent_doubles import ScriptedEngine, script_policy
from test_agent_strategies import make_ctx, prompts_for

from appo.agent import ArpoConfig, StrategyConfig, arpo_delta_entropy, arpo_window_entropy, run_strategy
from appo.core import arpo_branch_probability
from appo.types import ToolSpan


def test_worked_example_of_issue_24():
    """0.2 nats per token in the first round's window, 1.2 in the window after a result, 20 tokens each,
    |V| = 151,665: the reference's branch probability is 0.835 (the per-token mean gave 0.517)."""
    log_v = math.log(151_665)
    d_h = arpo_window_entropy([1.2] * 20, log_v) - arpo_window_entropy([0.2] * 20, log_v)
    assert d_h == pytest.approx(20 * 1.0 / log_v)
    assert arpo_branch_probability(d_h, 0.5, 0.2) == pytest.approx(0.835, abs=5e-4)
    mean_d_h = (sum([1.2] * 20) / 20 - sum([0.2] * 20) / 20) / log_v
    assert arpo_branch_probability(mean_d_h, 0.5, 0.2) == pytest.approx(0.517, abs=5e-4)
    assert arpo_window_entropy([], log_v) == 0.0


def test_arpo_strategy_uses_the_summed_window(tiny_tokenizer):
    """Through the strategy: with scripted entropies 0.2 on the first turn and 1.2 after it, and every turn
    longer than the window w, every check's probability is tau + beta * w * (1.2 - 0.2) / log |V| (the sum);
    the per-token mean would give tau + beta * (1.2 - 0.2) / log |V|."""
    tok = tiny_tokenizer
    words = " ".join(["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])
    turns = [f"<think>{words}</think><python>1+1</python>", f"<think>{words}</think><python>2+2</python>",
             f"<think>{words}</think><answer>\\boxed{{4}}</answer>"]
    holder = {}
    n0 = len(tok.encode(turns[0], add_special_tokens=False))

    def keyed_score(key, pos, t):
        return -0.5, (0.2 if pos - holder["P"] < n0 else 1.2)

    engine = ScriptedEngine(tok, script_policy(tok, lambda key: turns), keyed_score=keyed_score)
    ctx = make_ctx(tok, engine=engine)
    prompts = prompts_for(ctx, ("Q?",))
    holder["P"] = len(prompts[0].prompt_ids)
    w, tau, beta = 8, 0.5, 0.2
    assert min(len(tok.encode(t, add_special_tokens=False)) for t in turns) > w
    out = run_strategy("arpo", ctx, prompts, StrategyConfig(4, 2, ArpoConfig(tau=tau, beta=beta, entropy_window=w,
                                                                                entropy_at="after_result")))
    log_v = math.log(len(tok))
    assert out.metrics["arpo/checks"] >= 2
    assert out.metrics["arpo/mean_fork_probability"] == pytest.approx(tau + beta * w * (1.2 - 0.2) / log_v, abs=1e-5)
    assert abs(out.metrics["arpo/mean_fork_probability"] - (tau + beta * (1.2 - 0.2) / log_v)) > 0.1


def test_fork_timing_reads_the_turn_that_made_the_call_as_the_reference_does():
    """Turns: [0, 6) call 1, result [6, 8); [8, 12) call 2, result [12, 14); then turn 3 from 14. Entropies are
    the position (model tokens); the reference's decision at result 1 reads the first turn (dH = 0), at result 2
    the turn [8, 12); the paper's wording reads the new turn."""
    ent = [float(i) for i in range(20)]
    mask = [1] * 6 + [0] * 2 + [1] * 4 + [0] * 2 + [1] * 6
    spans = [ToolSpan(0, 6, 8, "python", True), ToolSpan(8, 12, 14, "python", True)]
    log_v, w = 2.0, 3
    first = (0 + 1 + 2) / log_v
    assert arpo_delta_entropy(ent, mask, spans, 8, 12, w, log_v) == 0.0  # result 1: the first turn against itself
    assert arpo_delta_entropy(ent, mask, spans, 14, 20, w, log_v) == pytest.approx((8 + 9 + 10) / log_v - first)
    assert arpo_delta_entropy(ent, mask, spans, 8, 12, w, log_v, "after_result") == pytest.approx(
        (8 + 9 + 10) / log_v - first)
    assert arpo_delta_entropy(ent, mask, spans, 14, 16, w, log_v, "after_result") == pytest.approx(
        (14 + 15) / log_v - first)  # only the tokens the engine call produced so far
    with pytest.raises(ValueError, match="call_turn"):
        arpo_delta_entropy(ent, mask, spans, 8, 12, w, log_v, "later")
    with pytest.raises(ValueError, match="entropy_at"):
        ArpoConfig(entropy_at="later")


def test_arpo_config_default_is_the_reference_timing():
    from appo.algorithms import ARPO
    from appo.config import load_config

    assert ARPO().strategy_config(load_config(None, ["algorithm.name=arpo"])).options.entropy_at == "call_turn"
    cfg = load_config(None, ["algorithm.name=arpo", "algorithm.arpo.entropy_at=after_result"])
    assert ARPO().strategy_config(cfg).options.entropy_at == "after_result"
