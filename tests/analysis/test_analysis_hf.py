"""The analysis on the real tiny model through HFEngine: re-draws reuse the rollouts' KV, an anchor model
makes Omega vary, and ``appo analyze`` runs end to end."""

from __future__ import annotations

import json

import torch
from influence_doubles import StubPython, box_reward, toy_examples

from appo.agent import teacher_forced_logp_fn
from appo.analysis import AnalysisConfig, analyze_examples
from appo.cli import main
from appo.engine.hf import HFEngine
from appo.models.tiny import build_tiny_model


def test_hf_redraws_reuse_kv_and_anchor_gives_omega(tiny_model, tiny_tokenizer):
    torch.set_num_threads(1)
    anchor = build_tiny_model(tiny_tokenizer, seed=1).eval()
    engine = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=16, num_threads=1)
    cfg = AnalysisConfig(rollouts_per_prompt=2, positions_per_rollout=3, samples_per_position=2,
                         max_response_tokens=24, seed=4)
    res = analyze_examples(engine, tiny_tokenizer, toy_examples(1), tools=[StubPython()], reward_fn=box_reward,
                           config=cfg, current_logp_fn=teacher_forced_logp_fn(tiny_model),
                           anchor_logp_fn=teacher_forced_logp_fn(anchor))
    assert res.branches_run == 2 * len(res.positions) > 0
    assert engine.stats.cache_hits >= 1 and engine.stats.reused_tokens > 0
    assert not res.omega_constant
    omegas = {round(p.omega, 6) for p in res.positions}
    assert len(omegas) > 1 and all(0.8 - 1e-6 <= w <= 1.2 + 1e-6 for w in omegas)
    assert all(p.bs is None or p.bs == p.bs for p in res.positions)
    # the Omega variants: one omega[...] and one bs[...] per spec; the unclipped sum leaves [0.8, 1.2]
    # at some position, the clipped variant never does
    names = set(res.positions[0].variant_scores)
    assert names == {f"{kind}[{spec}]" for spec in cfg.omega_variants for kind in ("omega", "bs")}
    assert {f"omega[{cfg.omega_variants[0]}]", "bs[sum,g=1]"} <= set(res.summary.precision_at_k)
    sums = [p.variant_scores["omega[sum,g=1]"] for p in res.positions]
    assert all(0.8 - 1e-6 <= p.variant_scores["omega[clipped,g=0.98923]"] <= 1.2 + 1e-6 for p in res.positions)
    assert any(abs(x) > 0.2 for x in sums)
    assert all((p.bs is None) == (p.variant_scores["bs[sum,g=1]"] is None) for p in res.positions)
    lo, hi = res.summary.precision_ci["entropy"]
    assert lo <= res.summary.precision_at_k["entropy"] <= hi or res.summary.precision_at_k["entropy"] != \
        res.summary.precision_at_k["entropy"]


def test_cli_analyze_end_to_end(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "an"
    code = main(["analyze", "--model", str(tiny_model_dir), "--data", "proc:arith?n_operands=[2,2]&digits=[1,2]",
                 "--prompts", "1", "--rollouts", "1", "--positions", "2", "--samples", "2",
                 "--max-response-tokens", "24", "--system-prompt", "short", "--anchor-model", str(tiny_model_dir),
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "precision@K" in printed
    data = json.loads((out / "analysis.json").read_text())
    assert data["branches_run"] == 2 * len(data["positions"])
    # the anchor is the policy itself: Omega is computed (not constant by construction) and exactly 1
    assert data["omega_constant"] is False and {p["omega"] for p in data["positions"]} == {1.0}
    assert data["meta"]["anchor_model"] == str(tiny_model_dir)
    assert (out / "report" / "index.html").is_file() and (out / "timing.json").is_file()


def test_cli_analyze_refuses_a_bad_omega_variant(tiny_model_dir, tmp_path, capsys):
    code = main(["analyze", "--model", str(tiny_model_dir), "--data", "proc:arith?n_operands=[2,2]&digits=[1,2]",
                 "--prompts", "1", "--omega-variants", "sum,gamma=0.9", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "omega variant 'sum,gamma=0.9'" in capsys.readouterr().err
