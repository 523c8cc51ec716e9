"""Rollout strategies with a scripted engine: budgets, tree links, determinism, APPO's choice of point."""

from __future__ import annotations

import pytest
import torch
from agent_doubles import ScriptedEngine, StubPython, StubSearch, random_tags_policy, script_policy

from appo.agent import (
    ROLLOUT_STRATEGIES,
    LoopLimits,
    PromptSpec,
    RolloutContext,
    StrategyConfig,
    check_tree,
    engine_logprobs,
    get_strategy,
    register_strategy,
    run_strategy,
)
from appo.agent.strategy_options import AppoConfig, ArpoConfig, TreeConfig
from appo.engine.base import SamplingParams
from appo.types import Example

STRATEGIES = ["independent", "arpo", "appo", "tree"]

UNBOUNDED_TREE = TreeConfig(expand_iters=0)
"""Tree expansion until the budget is used (expand_iters=0)."""


def _ex(q):
    return Example(id=f"t/{q}", question=q, answers=("1",), kind="math", metric="math_equiv", data_source="t")


def make_ctx(tok, policy=None, seed=0, engine=None, **kw):
    tools = {"python": StubPython(), "search": StubSearch()}
    engine = engine or ScriptedEngine(tok, policy or random_tags_policy(tok))
    limits = kw.pop("limits", LoopLimits(max_tool_calls=3, max_response_tokens=160))
    return RolloutContext.create(engine, tok, "tags", tools, SamplingParams(max_new_tokens=48), limits, seed=seed, **kw)


def prompts_for(ctx, questions=("What is 1+1?", "Who wrote it?", "Compute 7*6.")):
    return [PromptSpec(group=g, prompt_ids=tuple(ctx.protocol.build_prompt_ids(_ex(q), ctx.tokenizer, ctx.tools)),
                       data_index=10 + g) for g, q in enumerate(questions)]


def _expected_mask(row):
    mask = [1] * len(row.response_ids)
    for s in row.tool_spans:
        mask[s.call_end: s.result_end] = [0] * (s.result_end - s.call_end)
    return mask


@pytest.mark.parametrize("name", STRATEGIES)
def test_budget_links_masks_and_release(tiny_tokenizer, name):
    ctx = make_ctx(tiny_tokenizer, current_logp_fn=lambda rows: [torch.tensor(r.logprobs) * 0.9 for r in rows],
                   anchor_logp_fn=engine_logprobs)
    prompts = prompts_for(ctx)
    cfg = StrategyConfig(n_total=6, n_initial=3)
    out = run_strategy(name, ctx, prompts, cfg)
    assert len(out.rows) == 18
    for p in prompts:
        rows = [r for r in out.rows if r.group == p.group]
        assert [r.uid for r in rows] == list(range(6))
        assert all(r.data_index == p.data_index and r.prompt_ids == p.prompt_ids for r in rows)
        if name != "independent":
            assert all(r.origin == "initial" and r.parent is None for r in rows[:3])
    check_tree(out.rows)
    for r in out.rows:
        assert list(r.loss_mask) == _expected_mask(r)
        assert all(lp == 0.0 and e == 0.0 for lp, e, m in zip(r.logprobs, r.entropies, r.loss_mask) if m == 0)
        assert len(r.response_ids) <= 160
    assert out.metrics["rollout/rows"] == 18.0
    assert sum(out.metrics[f"rollout/stop/{s}"] for s in ("answer", "eos", "max_tool_calls", "max_length",
                                                          "no_action")) == 18
    assert out.metrics["rollout/tool_calls_per_rollout"] > 0
    used = set(ctx.engine.request_keys())
    assert len(ctx.engine.released) == 1 and set(ctx.engine.released[0]) >= used


@pytest.mark.parametrize("name", STRATEGIES)
def test_deterministic_with_seed(tiny_tokenizer, name):
    def go(seed):
        ctx = make_ctx(tiny_tokenizer, seed=seed)
        cfg = StrategyConfig(5, 2, UNBOUNDED_TREE if name == "tree" else None)
        return run_strategy(name, ctx, prompts_for(ctx), cfg).rows

    a, b, c = go(1), go(1), go(2)
    assert a == b
    assert a != c


@pytest.mark.parametrize("fork", ["redraw", "after"])
def test_appo_branches_are_depth_one_at_model_tokens(tiny_tokenizer, fork):
    ctx = make_ctx(tiny_tokenizer, current_logp_fn=lambda rows: [torch.tensor(r.logprobs) * 0.8 for r in rows],
                   anchor_logp_fn=engine_logprobs)
    out = run_strategy("appo", ctx, prompts_for(ctx), StrategyConfig(7, 3, AppoConfig(fork=fork)))
    by = {(r.group, r.uid): r for r in out.rows}
    for r in out.rows:
        if r.origin == "initial":
            assert len(r.omega) == len(r.scores) == len(r.response_ids)
            continue
        parent = by[(r.group, r.parent)]
        assert parent.origin == "initial" and r.root == parent.uid
        t = r.split + 1 if fork == "redraw" else r.split  # the scored point: re-drawn, or kept
        assert parent.loss_mask[t] == 1 and (t > 0 or fork == "after")  # `after` may fork at position 0
        if fork == "after":
            assert t < len(parent.response_ids) - 1
        assert parent.scores[t] == pytest.approx(r.branch_score)
        assert tiny_tokenizer.decode([parent.response_ids[t]]).strip() != ""
    assert out.metrics["appo/branch_points"] == 12.0
    assert out.metrics["rollout/branches_per_prompt"] == 4.0


def test_appo_without_logp_fns_uses_entropy_only(tiny_tokenizer):
    ctx = make_ctx(tiny_tokenizer)
    out = run_strategy("appo", ctx, prompts_for(ctx), StrategyConfig(n_total=4, n_initial=2))
    assert out.metrics["appo/omega_degenerate_rate"] == 1.0
    for r in out.rows:
        if r.origin == "initial":
            assert set(r.omega) == {1.0}


def test_appo_rejects_misaligned_logps(tiny_tokenizer):
    ctx = make_ctx(tiny_tokenizer, current_logp_fn=lambda rows: [torch.zeros(3) for _ in rows],
                   anchor_logp_fn=engine_logprobs)
    with pytest.raises(ValueError, match="response-aligned"):
        run_strategy("appo", ctx, prompts_for(ctx), StrategyConfig(n_total=4, n_initial=2))


def test_appo_no_branch_budget(tiny_tokenizer):
    ctx = make_ctx(tiny_tokenizer)
    out = run_strategy("appo", ctx, prompts_for(ctx), StrategyConfig(n_total=2, n_initial=2))
    assert all(r.origin == "initial" for r in out.rows) and len(out.rows) == 6


def _planted(tok, gain_row, rollout_anchor=False):
    """Two single-turn rows; row 0 has an entropy spike at p0, row 1 a larger one at q (a decoy).

    Omega is made high up to the spike of ``gain_row`` only (delta > 0 right at it), and high only at
    the start of the other row (so its spike has Z(Omega) < 0 and is not a strict candidate).
    """
    texts = {0: "<think>alpha beta gamma delta one two three four</think><answer>\\boxed{1}</answer>",
             1: "<think>so then ok fine more words here now</think><answer>\\boxed{2}</answer>"}
    ids = {u: tok.encode(t, add_special_tokens=False) for u, t in texts.items()}
    spike = {0: 8, 1: 10}
    assert all(tok.decode([ids[u][spike[u]]]).strip() for u in (0, 1))
    holder = {}

    def keyed_score(key, pos, t):
        uid = int(key.split("/")[1])
        r = pos - holder["P"]
        ent = 0.5 + 0.01 * (r % 3)
        if uid in spike and r == spike[uid]:
            ent = 3.0 if uid == 0 else 4.0
        return -0.5, ent

    engine = ScriptedEngine(tok, script_policy(tok, lambda key: [texts[0 if key.endswith("/2") else
                                                                       int(key.split("/")[1])]]),
                            keyed_score=keyed_score)

    def current(rows):
        out = []
        for r in rows:
            d = torch.zeros(len(r.response_ids))
            d[spike[r.uid] if r.uid == gain_row else 1] = 0.1
            out.append(torch.tensor(r.logprobs) + d)
        return out

    # an anchor scored like the trainer scores (not the engine's own numbers: those are the `rollout` anchor,
    # whose delta is the trainer-vs-engine mismatch and is treated as noise)
    anchor = engine_logprobs if rollout_anchor else (lambda rows: [torch.tensor(r.logprobs) for r in rows])
    ctx = make_ctx(tok, engine=engine, current_logp_fn=current, anchor_logp_fn=anchor)
    prompts = prompts_for(ctx, ("Q?",))
    holder["P"] = len(prompts[0].prompt_ids)
    return ctx, prompts, spike


@pytest.mark.parametrize("fork, shift", [("redraw", -1), ("after", 0)])
def test_appo_picks_planted_high_entropy_high_omega_point(tiny_tokenizer, fork, shift):
    ctx, prompts, spike = _planted(tiny_tokenizer, gain_row=0)
    out = run_strategy("appo", ctx, prompts, StrategyConfig(3, 2, AppoConfig(fork=fork)))
    branch = out.rows[2]
    assert (branch.origin, branch.parent, branch.split, branch.root) == ("branch", 0, spike[0] + shift, 0)
    row0 = out.rows[0]
    assert branch.branch_score == pytest.approx(max(row0.scores)) and branch.branch_score > 1.0
    assert row0.omega[spike[0]] > row0.omega[spike[0] + 1]
    assert out.metrics["appo/strict_point_rate"] == 1.0


def test_appo_choice_follows_omega(tiny_tokenizer):
    """Control: move the likelihood gain to the decoy row and the decoy (higher entropy) is chosen."""
    ctx, prompts, spike = _planted(tiny_tokenizer, gain_row=1)
    ctx.engine.policy = script_policy(tiny_tokenizer, lambda key: [
        {0: "<think>alpha beta gamma delta one two three four</think><answer>\\boxed{1}</answer>",
         1: "<think>so then ok fine more words here now</think><answer>\\boxed{2}</answer>",
         2: "<think>so then ok fine more words here now</think><answer>\\boxed{2}</answer>"}[int(key.split("/")[1])]])
    out = run_strategy("appo", ctx, prompts, StrategyConfig(3, 2, AppoConfig(fork="redraw")))
    assert (out.rows[2].parent, out.rows[2].split) == (1, spike[1] - 1)  # redraw: the fork re-samples the spike
    assert out.metrics["appo/omega_degenerate_rate"] == 0.0


def test_appo_rollout_anchor_gain_is_mismatch_and_falls_back_to_entropy(tiny_tokenizer):
    """With the `rollout` anchor the same planted gain is, by construction, trainer-vs-engine mismatch: every
    row falls back to BS = Z(H) (the scores equal the entropy-only scores), while the trainer-scored anchor
    keeps Omega in the score."""
    def scores(rollout_anchor, points="score"):
        ctx, prompts, _ = _planted(tiny_tokenizer, gain_row=0, rollout_anchor=rollout_anchor)
        out = run_strategy("appo", ctx, prompts, StrategyConfig(3, 2, AppoConfig(points=points)))
        return out.metrics["appo/omega_degenerate_rate"], [r.scores for r in out.rows if r.origin == "initial"]

    rate, rollout_scores = scores(True)
    assert rate == 1.0
    assert rollout_scores == scores(False, points="entropy")[1]
    rate, trainer_scores = scores(False)
    assert rate == 0.0 and trainer_scores != rollout_scores


def test_arpo_forks_at_tool_results_with_probability_one(tiny_tokenizer):
    ctx = make_ctx(tiny_tokenizer, policy=random_tags_policy(tiny_tokenizer, p_call=1.0, max_calls=2))
    cfg = StrategyConfig(5, 2, ArpoConfig(tau=1.0, beta=0.0))
    out = run_strategy("arpo", ctx, prompts_for(ctx), cfg)
    by = {(r.group, r.uid): r for r in out.rows}
    branches = [r for r in out.rows if r.origin == "branch"]
    assert len(branches) == 9 and out.metrics["arpo/fill_rows"] == 0.0
    for r in branches:
        parent = by[(r.group, r.parent)]
        assert parent.loss_mask[r.split] == 0
        assert any(s.result_end == r.split + 1 for s in parent.tool_spans)
        assert r.num_tool_calls >= 1


def test_arpo_with_probability_zero_fills_with_independent_rows(tiny_tokenizer):
    ctx = make_ctx(tiny_tokenizer, policy=random_tags_policy(tiny_tokenizer, p_call=1.0, max_calls=2))
    cfg = StrategyConfig(5, 2, ArpoConfig(tau=0.0, beta=0.0))
    out = run_strategy("arpo", ctx, prompts_for(ctx), cfg)
    assert all(r.origin == "initial" for r in out.rows) and out.metrics["arpo/fill_rows"] == 9.0


def test_tree_forks_at_step_boundaries_and_fills_without_tools(tiny_tokenizer):
    ctx = make_ctx(tiny_tokenizer, policy=random_tags_policy(tiny_tokenizer, p_call=0.8, max_calls=3))
    out = run_strategy("tree", ctx, prompts_for(ctx), StrategyConfig(10, 2, TreeConfig(expand_nodes=1, expand_iters=0)))
    by = {(r.group, r.uid): r for r in out.rows}
    for r in out.rows:
        if r.origin == "branch":
            parent = by[(r.group, r.parent)]
            assert any(s.result_end == r.split + 1 for s in parent.tool_spans)
            assert r.split > (parent.split if parent.split is not None else -1)  # a node the parent owns
            assert r.root == parent.tree and len(r.tool_spans) >= 1
    assert out.metrics["tree/rounds"] >= 4  # at most 2 trees x 1 node per round for 8 expansions
    ctx = make_ctx(tiny_tokenizer, policy=random_tags_policy(tiny_tokenizer, p_call=0.0))
    out = run_strategy("tree", ctx, prompts_for(ctx), StrategyConfig(4, 2, UNBOUNDED_TREE))
    assert all(r.origin == "initial" for r in out.rows) and out.metrics["tree/fill_rows"] == 6.0


def test_tree_max_rounds_fills_the_rest_with_new_trees(tiny_tokenizer):
    ctx = make_ctx(tiny_tokenizer, policy=random_tags_policy(tiny_tokenizer, p_call=1.0, max_calls=2))
    cfg = StrategyConfig(9, 2, TreeConfig(expand_nodes=1, expand_iters=1))
    out = run_strategy("tree", ctx, prompts_for(ctx, ("a",)), cfg)
    assert sum(r.origin == "branch" for r in out.rows) == 2 and out.metrics["tree/fill_rows"] == 5.0


def test_registry_and_prompt_checks(tiny_tokenizer):
    assert set(ROLLOUT_STRATEGIES) >= set(STRATEGIES)
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("appo")(lambda ctx, prompts, cfg: None)
    with pytest.raises(ValueError, match="unknown rollout strategy"):
        get_strategy("beam")
    ctx = make_ctx(tiny_tokenizer)
    p = prompts_for(ctx, ("a",))[0]
    with pytest.raises(ValueError, match="duplicate groups"):
        run_strategy("independent", ctx, [p, p], StrategyConfig(n_total=2, n_initial=1))
    with pytest.raises(ValueError, match="n_initial"):
        StrategyConfig(n_total=2, n_initial=3)


@pytest.mark.parametrize("fork, shift", [("redraw", 1), ("after", 0)])
def test_appo_entropy_only_points(tiny_tokenizer, fork, shift):
    ctx, prompts, spike = _planted(tiny_tokenizer, gain_row=0)
    out = run_strategy("appo", ctx, prompts, StrategyConfig(n_total=3, n_initial=2,
                                                            options=AppoConfig(points="entropy", fork=fork)))
    rows0 = [r for r in out.rows if r.origin == "initial"]
    assert all(set(r.omega) == {1.0} for r in rows0)  # Omega ignored: an entropy spike wins
    b = out.rows[2]
    assert b.origin == "branch" and b.split + shift == spike[b.parent]
    assert b.branch_score == pytest.approx(max(max(r.scores) for r in rows0))


def test_appo_random_points_are_valid_and_seeded(tiny_tokenizer):
    def go(seed):
        ctx = make_ctx(tiny_tokenizer, seed=seed)
        return run_strategy("appo", ctx, prompts_for(ctx), StrategyConfig(6, 2, AppoConfig(points="random")))

    out = go(3)
    assert [(r.parent, r.split) for r in go(3).rows] == [(r.parent, r.split) for r in out.rows]
    by = {(r.group, r.uid): r for r in out.rows}
    branches = [r for r in out.rows if r.origin == "branch"]
    assert len(branches) == 12
    for b in branches:
        assert by[(b.group, b.parent)].loss_mask[b.split + 1] == 1
