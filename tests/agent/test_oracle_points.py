"""The `depth` task's decisive token, APPO's `oracle` point choice and every arm's precision against it (issue 24)."""

from __future__ import annotations

import pytest
from agent_doubles import ScriptedEngine, script_policy
from test_agent_strategies import make_ctx

from appo.agent import (
    AppoConfig,
    DecisiveSpec,
    PromptSpec,
    StrategyConfig,
    decisive_token,
    oracle_point,
    point_precision,
    prompt_specs,
    run_strategy,
)
from appo.data.procedural import get_task
from appo.data.procedural.depth import DECISIVE_PATTERN

SPEC = DecisiveSpec(DECISIVE_PATTERN, occurrence=1, group=1)
TURNS = ["<think>Step 1: + 3.</think>\n<python>print(42 + 3)</python>",
         "<think>Step 2: Check - 4.</think>\n<python>print(45 - 4)</python>",
         "<think>I have the result.</think>\n<answer>\\boxed{41}</answer>"]


def test_decisive_token_maps_the_character_to_its_token(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "".join(TURNS[:2]) + "\n<result>\n41\n</result>\n" + TURNS[2]
    ids = tok.encode(text, add_special_tokens=False)
    p = decisive_token(tok, ids, SPEC)
    c = text.index("print(45 - 4)") + len("print(45 ")
    assert len(tok.decode(ids[:p], skip_special_tokens=False)) <= c < len(tok.decode(ids[: p + 1]))
    assert "-" in tok.decode([ids[p]])
    assert decisive_token(tok, ids, DecisiveSpec(DECISIVE_PATTERN, occurrence=0, group=1)) < p
    assert decisive_token(tok, ids, DecisiveSpec(DECISIVE_PATTERN, occurrence=2, group=1)) is None  # no 3rd call
    assert oracle_point(p, "after") == p - 1 and oracle_point(p, "redraw") == p and oracle_point(None) is None
    assert oracle_point(0, "after") is None


def test_point_precision_by_hand():
    # rows 0 and 1 have decisive tokens at 10 and 20 (oracle points 9 and 19 for `after`); row 2 has none
    prec, on, n = point_precision([(0, 9), (1, 20), (1, 19), (2, 5)], [9, 19, None], [10, 20, None])
    assert (prec, on, n) == (pytest.approx(2 / 3), pytest.approx(1 / 3), 3)
    prec, on, n = point_precision([(2, 5)], [9, 19, None], [10, 20, None])
    assert n == 0 and prec != prec


def _ctx(tok, spike_at_decisive=True):
    """One prompt, rows that write TURNS; entropy 3.0 at the decisive token, 0.5 elsewhere."""
    holder = {}

    def keyed_score(key, pos, t):
        ent = 3.0 if spike_at_decisive and pos - holder["P"] == holder.get("p", -1) else 0.5 + 0.01 * (pos % 3)
        return -0.5, ent

    engine = ScriptedEngine(tok, script_policy(tok, lambda key: TURNS), keyed_score=keyed_score)
    ctx = make_ctx(tok, engine=engine)
    prompt = PromptSpec(group=0, prompt_ids=tuple(ctx.protocol.build_prompt_ids(
        get_task("depth").generate(1, 0)[0], tok, ctx.tools)), decisive=SPEC)
    holder["P"] = len(prompt.prompt_ids)
    # the decisive token's position in a row (the scripted rows are identical)
    probe = run_strategy("independent", ctx, [prompt], StrategyConfig(n_total=1, n_initial=1)).rows[0]
    holder["p"] = decisive_token(tok, probe.response_ids, SPEC)
    assert holder["p"] is not None
    return ctx, prompt, holder["p"]


@pytest.mark.parametrize("fork", ["after", "redraw"])
def test_oracle_points_fork_to_resample_the_decisive_token(tiny_tokenizer, fork):
    ctx, prompt, p = _ctx(tiny_tokenizer, spike_at_decisive=False)
    out = run_strategy("appo", ctx, [prompt], StrategyConfig(5, 2, AppoConfig(points="oracle", fork=fork)))
    branches = [r for r in out.rows if r.origin == "branch"]
    assert len(branches) == 3 and [b.parent for b in branches] == [0, 1, 0]  # one per row, then cyclic
    # after: the point is p - 1 (split p - 1, the fork samples from p); redraw: the point is p (split p - 1)
    assert all(b.split == p - 1 for b in branches)
    assert out.metrics["appo/oracle_precision"] == 1.0 and out.metrics["appo/decisive_found_rate"] == 1.0
    assert out.metrics["appo/decisive_token_rate"] == (0.0 if fork == "after" else 1.0)


def test_entropy_arm_finds_the_decisive_token_but_after_forks_past_it(tiny_tokenizer):
    """An entropy spike at the decisive token: the entropy arm scores exactly that token (decisive rate 1), and
    with fork=after its fork keeps the token (precision against the oracle 0); with redraw it re-samples it."""
    ctx, prompt, p = _ctx(tiny_tokenizer)
    out = run_strategy("appo", ctx, [prompt], StrategyConfig(3, 2, AppoConfig(points="entropy")))
    assert out.rows[2].split == p
    assert out.metrics["appo/decisive_token_rate"] == 1.0 and out.metrics["appo/oracle_precision"] == 0.0
    ctx, prompt, p = _ctx(tiny_tokenizer)
    out = run_strategy("appo", ctx, [prompt], StrategyConfig(3, 2, AppoConfig(points="entropy", fork="redraw")))
    assert out.rows[2].split == p - 1 and out.metrics["appo/oracle_precision"] == 1.0


def test_no_decisive_spec_logs_no_precision_and_oracle_without_one_fills_independent_rows(tiny_tokenizer):
    ctx, prompt, _ = _ctx(tiny_tokenizer)
    bare = PromptSpec(group=0, prompt_ids=prompt.prompt_ids)
    out = run_strategy("appo", ctx, [bare], StrategyConfig(n_total=3, n_initial=2))
    assert "appo/oracle_precision" not in out.metrics
    out = run_strategy("appo", ctx, [bare], StrategyConfig(3, 2, AppoConfig(points="oracle")))
    assert [r.origin for r in out.rows] == ["initial"] * 3
    with pytest.raises(ValueError, match="oracle"):
        AppoConfig(points="best")


def test_prompt_specs_carry_the_tasks_decisive_spec(tiny_tokenizer):
    ctx = make_ctx(tiny_tokenizer)
    ex = get_task("depth", depth=[2]).generate(2, 0)
    specs = prompt_specs(ctx, ex)
    assert specs[0].decisive == DecisiveSpec(DECISIVE_PATTERN, 1, 1)
    chain = get_task("chain").generate(1, 0)
    assert prompt_specs(ctx, chain)[0].decisive is None


def test_branch_disagreement_counts_branches_whose_reward_differs_from_their_parent(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "depth_branch_contrast.py"
    spec = importlib.util.spec_from_file_location("depth_branch_contrast", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [{"uid": 0, "origin": "initial", "parent": None, "reward": 1.0},
            {"uid": 1, "origin": "initial", "parent": None, "reward": 0.0},
            {"uid": 2, "origin": "branch", "parent": 0, "reward": 1.0},
            {"uid": 3, "origin": "branch", "parent": 0, "reward": 0.0},
            {"uid": 4, "origin": "branch", "parent": 1, "reward": 1.0}]
    dump = tmp_path / "step_000001.json"
    dump.write_text(json.dumps({"step": 1, "algorithm": "appo", "prompts": [{"rows": rows}, {"rows": rows[:2]}]}))
    assert mod.branch_disagreement(dump) == (2, 3)


def test_thought_vs_call_labels_where_the_decisive_operator_went_wrong(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "depth_thought_vs_call.py"
    spec = importlib.util.spec_from_file_location("depth_thought_vs_call", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    q = "Start with 5. Step 1: + 1. Step 2: Check - 1. What is the result?"
    step1 = "<think>Step 1: + 1.</think>\n<python>print(5 + 1)</python>\n<result>\n6\n</result>\n"
    assert mod.thought_and_call(q, step1 + "<think>Step 2: Check - 1.</think>\n<python>print(6 - 1)") == (
        "thought right, call right")
    assert mod.thought_and_call(q, step1 + "<think>Step 2: Check + 1.</think>\n<python>print(6 - 1)") == (
        "thought WRONG, call right")
    assert mod.thought_and_call(q, step1 + "<think>Step 2: Check - 1.</think>\n<python>print(6 + 1)") == (
        "thought right, call WRONG")
    assert mod.thought_and_call(q, step1) == "no decisive step"
    assert mod.thought_and_call("Start with 5. Step 1: + 1. What is the result?", step1) is None
    rows = [{"tokens": [step1, "<think>Step 2: Check + 1.</think>\n", "<python>print(6 + 1)"]},
            {"tokens": [step1, "<think>Step 2: Check - 1.</think>\n<python>print(6 - 1)"]}]
    dump = tmp_path / "step_000001.json"
    dump.write_text(json.dumps({"prompts": [{"question": q, "rows": rows}]}))
    assert mod.count(dump) == {"thought WRONG, call WRONG": 1, "thought right, call right": 1}
