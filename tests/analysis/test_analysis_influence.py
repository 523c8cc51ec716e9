"""Influence on a task where the deciding token is known by design (``DecisiveEngine``): it is ranked
first, later tokens have exactly zero influence, budgets and seeds hold, and the output files parse."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from influence_doubles import DecisiveEngine, StubPython, box_reward, toy_examples

from appo.analysis import AnalysisConfig, analyze, analyze_examples
from appo.analysis.stats import spearman

ALL = 64  # more strata than model tokens: every eligible position is analysed


def _run(tok, *, after=False, seed=0, m=6, positions=ALL, rollouts=2, n_examples=1, out_dir=None, report=False,
         engine=None):
    engine = engine or DecisiveEngine(tok, decide_after_tool=after)
    cfg = AnalysisConfig(rollouts_per_prompt=rollouts, positions_per_rollout=positions, samples_per_position=m,
                         max_response_tokens=64, seed=seed, batch_size=16)
    res = analyze_examples(engine, tok, toy_examples(n_examples), tools=[StubPython()], reward_fn=box_reward,
                           config=cfg, out_dir=out_dir, report=report)
    return res, engine


def test_deciding_token_ranked_first_while_entropy_prefers_fillers(tiny_tokenizer):
    res, _ = _run(tiny_tokenizer, m=12)
    for uid in (0, 1):
        ps = {p.t: p for p in res.positions if p.rollout == uid}
        assert 0 in ps and ps[0].token in ("1", "2")
        # the re-drawn D gives "1" w.p. 0.7: the branch mean must differ from the rollout's R
        assert ps[0].influence > 0
        assert all(p.influence == 0.0 and p.branch_rewards == (p.rollout_reward,) * 12
                   for t, p in ps.items() if t > 0)
        # every token after D is analysed: fillers, the call (boundary), the answer (after the result)
        assert {ps[t].region for t in ps} >= {"tool_call", "answer", "other"}
        assert sorted(p.boundary for p in ps.values() if p.boundary) == ["after_result", "call_start"]
        assert max(ps.values(), key=lambda p: p.entropy).token not in ("1", "2")  # fillers have more entropy
    top = max(res.positions, key=lambda p: p.influence)
    assert top.t == 0
    s = res.summary
    assert s.n_positive == 2 and s.k == 2  # only D (one per rollout) has influence: K shrinks to it
    assert s.precision_at_k["entropy"] == 0.0 and s.precision_at_k["bs"] == 0.0  # both rank the fillers first
    assert res.omega_constant and res.summary.spearman["omega"] != res.summary.spearman["omega"]  # NaN


def test_deciding_token_after_a_tool_result(tiny_tokenizer):
    res, _ = _run(tiny_tokenizer, after=True, m=12)
    for uid in (0, 1):
        ps = {p.t: p for p in res.positions if p.rollout == uid}
        d = next(t for t, p in ps.items() if p.boundary == "after_result")
        assert ps[d].token in ("1", "2") and ps[d].influence > 0 and ps[d].tool_distance == 1
        assert all(p.influence == 0.0 for t, p in ps.items() if t > d)
        assert all(p.region == "answer" for t, p in ps.items() if t > d)


def test_budget_counts_and_fork_prefixes(tiny_tokenizer):
    res, engine = _run(tiny_tokenizer, m=3, positions=4, rollouts=2, n_examples=2)
    n_pos = len(res.positions)
    assert res.branches_run == 3 * n_pos
    assert all(len(p.branch_rewards) == 3 for p in res.positions)
    for r in res.rollouts:  # 4 strata + 2 boundaries, the boundaries possibly drawn by a stratum
        assert 4 <= len(r.positions) <= 6
    first = {}
    for req in engine.requests:
        if req.cache_key.startswith("analysis/redraw"):
            first.setdefault(req.cache_key, req)
    assert len(first) == res.branches_run
    # each continuation starts from prompt + response[:t] of its rollout: token t itself is re-drawn
    prefix_t = Counter()
    for key, req in first.items():
        group = int(key.split("/")[2])
        start = engine.response_start(req.prefix_ids)
        prefix_t[(group, len(req.prefix_ids) - start)] += 1
    expected = Counter()
    for p in res.positions:
        expected[(p.group, p.t)] += 3
    assert prefix_t == expected


def test_same_seed_same_json_other_seed_differs(tiny_tokenizer):
    a, _ = _run(tiny_tokenizer, m=3, positions=5, seed=7)
    b, _ = _run(tiny_tokenizer, m=3, positions=5, seed=7)
    c, _ = _run(tiny_tokenizer, m=3, positions=5, seed=8)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict()) and a.table() == b.table()
    assert json.dumps(a.summary.to_dict()) == json.dumps(b.summary.to_dict())
    assert a.to_dict()["positions"] != c.to_dict()["positions"]


def test_output_files_parse_and_report_shows_influence(tiny_tokenizer, tmp_path):
    res, _ = _run(tiny_tokenizer, m=2, positions=4, out_dir=tmp_path, report=True)
    for key in ("analysis", "summary_json", "summary_txt", "plot_sequence", "plot_scores", "dump", "report", "timing"):
        assert Path(res.files[key]).is_file(), key
    assert json.loads((tmp_path / "analysis.json").read_text()) == json.loads(json.dumps(res.to_dict()))
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert len(data["positions"]) == len(res.positions) and data["branches_run"] == res.branches_run
    assert data["positions"][0]["branch_mean"] is not None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["influence"]["k"] == res.summary.k and summary["token_effect"] is None
    assert "precision@K" in (tmp_path / "summary.txt").read_text()
    for png in ("influence_along_sequence.png", "influence_vs_scores.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dump = json.loads((tmp_path / "rollouts" / "step_000000.json").read_text())
    rows = [r for p in dump["prompts"] for r in p["rows"]]
    assert len(rows) == 2
    by = {(p.rollout, p.t): p.influence for p in res.positions}
    for row in rows:
        infl = row["influence"]
        assert len(infl) == len(row["tokens"])
        for t, v in enumerate(infl):
            assert (v is None) == ((row["uid"], t) not in by)
            if v is not None:
                assert v == pytest.approx(by[(row["uid"], t)], abs=1e-4)
    page = (tmp_path / "report" / "step_000000.html").read_text()
    assert '<input type="radio" name="sig" value="influence">' in page  # enabled (a disabled one says so)
    assert (tmp_path / "report" / "index.html").is_file()


def test_analyze_with_an_engine_and_validation(tiny_tokenizer):
    res = analyze(None, toy_examples(1), engine=DecisiveEngine(tiny_tokenizer), tokenizer=tiny_tokenizer,
                  tools=[StubPython()], reward=box_reward, prompts=1, rollouts_per_prompt=1,
                  positions_per_rollout=3, samples_per_position=2, max_response_tokens=64)
    assert res.branches_run == 2 * len(res.positions) and res.timing["total_s"] >= 0
    assert spearman([p.influence for p in res.positions], [p.entropy for p in res.positions])[1] == len(res.positions)
    with pytest.raises(ValueError, match="samples_per_position"):
        AnalysisConfig(samples_per_position=0)
    with pytest.raises(ValueError, match="temperature"):
        AnalysisConfig(temperature=0.0)
    with pytest.raises(ValueError, match="prompts"):
        analyze(None, toy_examples(1), engine=DecisiveEngine(tiny_tokenizer), tokenizer=tiny_tokenizer, prompts=0)


def test_paired_token_effect_singles_out_a_deciding_token_mid_rollout(tiny_tokenizer):
    # D is drawn after the tool result; influence |V(s_t) - R| is the same for every t <= D (they all
    # re-draw D eventually), but keeping token t changes E[R] only at D itself
    engine = DecisiveEngine(tiny_tokenizer, p=0.5, decide_after_tool=True)
    cfg = AnalysisConfig(rollouts_per_prompt=1, positions_per_rollout=4, samples_per_position=32,
                         max_response_tokens=64, paired=True, seed=1, batch_size=64)
    res = analyze_examples(engine, tiny_tokenizer, toy_examples(1), tools=[StubPython()], reward_fn=box_reward,
                           config=cfg)
    ps = {p.t: p for p in res.positions}
    d = next(t for t, p in ps.items() if p.boundary == "after_result")
    assert res.branches_run == 2 * 32 * len(ps)
    assert all(len(p.keep_rewards) == 32 for p in ps.values())
    assert max(ps.values(), key=lambda p: p.token_effect).t == d
    assert ps[d].keep_rewards == (ps[d].rollout_reward,) * 32  # keeping D keeps the outcome
    # pi(D) = 0.5 and the other value of D flips the outcome: |Q - V| = (1 - 0.5) * |R - (1 - R)| = 0.5
    assert ps[d].token_effect == pytest.approx(0.5)
    assert all(p.token_effect == 0.0 for p in ps.values() if p.entropy == 0.0)  # forced tokens: no effect
    assert all(p.token_effect == 0.0 for t, p in ps.items() if t > d)
    assert res.effect_summary is not None and "token effect" in res.table()


def test_pooled_summaries_of_one_file_match_its_own_and_two_files_add_up(tiny_tokenizer, tmp_path):
    from appo.analysis import load_positions, pooled_summaries

    a, _ = _run(tiny_tokenizer, m=2, positions=4, seed=1, out_dir=tmp_path / "a")
    b, _ = _run(tiny_tokenizer, m=2, positions=4, seed=2, out_dir=tmp_path / "b")
    back = load_positions(tmp_path / "a" / "analysis.json")
    assert [p.influence for p in back] == pytest.approx([p.influence for p in a.positions], abs=1e-6)
    one, effect = pooled_summaries([tmp_path / "a" / "analysis.json"], bootstrap=0)
    assert effect is None  # not paired
    assert one.precision_at_k == pytest.approx(a.summary.precision_at_k, nan_ok=True)
    both, _ = pooled_summaries([tmp_path / "a" / "analysis.json", tmp_path / "b" / "analysis.json"], bootstrap=20)
    assert both.n_positions == len(a.positions) + len(b.positions) and both.bootstrap == 20
    with pytest.raises(ValueError, match="no analysis.json"):
        pooled_summaries([])
