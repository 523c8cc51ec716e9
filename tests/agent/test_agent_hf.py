"""The agent layer on the real tiny model through HFEngine: sampled ids/log-probs match teacher forcing,
tool results are spliced in with mask 0, and forks reuse their parent's KV."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch
from agent_doubles import StubPython, StubSearch

from appo.agent import (
    AgentLoop,
    LoopLimits,
    LoopStart,
    RolloutContext,
    StrategyConfig,
    check_tree,
    engine_logprobs,
    fork_start,
    prompt_specs,
    run_strategy,
    teacher_forced_logp_fn,
)
from appo.agent.protocols import get_protocol
from appo.engine.base import SamplingParams
from appo.engine.hf import HFEngine
from appo.engine.scoring import score_sequences
from appo.types import Example, ToolResult

EX = Example(id="t/0", question="What is 2+3?", answers=("5",), kind="math", metric="math_equiv", data_source="t")


def _assert_matches_teacher_forcing(model, rows):
    scored = score_sequences(model, [r.prompt_ids + r.response_ids for r in rows], [len(r.prompt_ids) for r in rows])
    for r, (logp, ent) in zip(rows, scored):
        m = torch.tensor(r.loss_mask, dtype=torch.bool)
        torch.testing.assert_close(torch.tensor(r.logprobs)[m], logp[m], atol=2e-4, rtol=0)
        torch.testing.assert_close(torch.tensor(r.entropies)[m], ent[m], atol=2e-4, rtol=0)


def test_hf_appo_rows_are_what_the_model_sampled(tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    engine = HFEngine(tiny_model, tok, max_batch_size=8)

    tools = [StubPython(), StubSearch()]
    ctx = RolloutContext.create(engine, tok, "tags", tools, SamplingParams(max_new_tokens=16),
                                LoopLimits(max_response_tokens=14), seed=3,
                                current_logp_fn=teacher_forced_logp_fn(tiny_model), anchor_logp_fn=engine_logprobs)
    prompts = prompt_specs(ctx, [EX], [7])
    prompt = prompts[0].prompt_ids
    out = run_strategy("appo", ctx, prompts, StrategyConfig(n_total=3, n_initial=2))
    assert all(r.data_index == 7 for r in out.rows)
    assert [r.uid for r in out.rows] == [0, 1, 2] and out.rows[2].origin == "branch"
    check_tree(out.rows)
    _assert_matches_teacher_forcing(tiny_model, out.rows)
    assert engine.stats.reused_tokens >= len(prompt) + out.rows[2].split  # the branch reused its parent's KV


@pytest.mark.parametrize("protocol", ["tags", "hermes"])
def test_hf_tool_round_and_fork_reuse(tiny_model, tiny_tokenizer, protocol):
    """A start whose prefix closes a call: the tool runs, its tokens are appended with mask 0, the real
    model continues; a fork at the step boundary then reuses the KV kept under the parent's key."""
    tok = tiny_tokenizer
    engine = HFEngine(tiny_model, tok, max_batch_size=4)
    tools = {"python": StubPython()}
    call = ("<python>print(1)</python>" if protocol == "tags" else
            "<tool_call>\n" + json.dumps({"name": "python", "arguments": {"code": "print(1)"}}) + "\n</tool_call>")
    call_ids = tuple(tok.encode(call, add_special_tokens=False))
    n = len(call_ids)
    n_result = len(get_protocol(protocol).result_ids(tok, ToolResult("out:8")))
    loop = AgentLoop(engine, tok, protocol, tools, SamplingParams(max_new_tokens=16, seed=0),
                     LoopLimits(max_response_tokens=n + n_result + 8), random.Random(0))
    prompt = tuple(loop.protocol.build_prompt_ids(EX, tok, tools))
    loop.add(LoopStart(group=0, uid=0, prompt_ids=prompt, response_ids=call_ids, logprobs=(0.0,) * n,
                       entropies=(0.0,) * n, loss_mask=(1,) * n))
    (row,) = loop.run()
    span = row.tool_spans[0]
    assert (span.call_start, span.call_end, span.ok) == (0, n, True)
    assert set(row.loss_mask[span.call_end: span.result_end]) == {0}
    assert "out:8" in tok.decode(list(row.response_ids[span.call_end: span.result_end]))
    assert len(row.response_ids) > span.result_end  # the model continued after the result
    tail = replace(row, loss_mask=tuple(m if t >= span.result_end else 0 for t, m in enumerate(row.loss_mask)))
    _assert_matches_teacher_forcing(tiny_model, [tail])
    before = engine.stats.reused_tokens
    loop.add(fork_start(row, span.result_end - 1, uid=1))
    rows = loop.run()
    assert rows[1].response_ids[: span.result_end] == row.response_ids[: span.result_end]
    assert engine.stats.reused_tokens - before >= len(prompt) + span.result_end - 1
    loop.release()


def test_rollout_anchor_omega_is_flagged_as_mismatch_on_real_engine_trainer_pairs(tiny_model, tiny_tokenizer):
    """Real pairs: the engine's log-probs (KV-cached decode) against the trainer's teacher forcing on the same
    weights differ by float noise (|delta| ~ 1e-6), which the old absolute test on Omega's std (1e-6) missed
    on about half the rows. The test on the suffix sum relative to that measured mismatch flags every row,
    so the `rollout` anchor falls back to BS = Z(H); a real policy change (a perturbed copy of the weights,
    as after an update) stays well above the same mismatch and is kept."""
    from appo.core import omega_noise_rows, zscore_masked

    tok = tiny_tokenizer
    engine = HFEngine(tiny_model, tok, max_batch_size=8)
    current = teacher_forced_logp_fn(tiny_model)
    ctx = RolloutContext.create(engine, tok, "tags", [StubPython(), StubSearch()], SamplingParams(max_new_tokens=24),
                                LoopLimits(max_response_tokens=24), seed=5, current_logp_fn=current,
                                anchor_logp_fn=engine_logprobs)
    prompts = prompt_specs(ctx, [EX, EX], [0, 1])
    out = run_strategy("appo", ctx, prompts, StrategyConfig(n_total=6, n_initial=4))
    assert out.metrics["appo/omega_degenerate_rate"] == 1.0
    rows = [r for r in out.rows if r.origin == "initial"]
    for r in rows:  # BS = Z(H) over the valid (finite-score) tokens
        valid = torch.isfinite(torch.tensor(r.scores))
        z, _ = zscore_masked(torch.tensor(r.entropies), valid)
        torch.testing.assert_close(torch.tensor(r.scores)[valid], z[valid], atol=1e-5, rtol=0)

    cur, eng = current(rows), engine_logprobs(rows)
    moved = type(tiny_model)(tiny_model.config)
    moved.load_state_dict(tiny_model.state_dict())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=gen))
    prev = teacher_forced_logp_fn(moved.eval())(rows)
    for r, c, e, a in zip(rows, cur, eng, prev):
        m = torch.tensor(r.loss_mask, dtype=torch.bool)
        if int(m.sum()) < 3:
            continue
        assert float((c - e)[m].abs().max()) < 1e-4  # the measured mismatch is float noise
        assert bool(omega_noise_rows(c, e, m, logp_noise=c - e))  # `rollout` anchor: noise
        assert not bool(omega_noise_rows(c, a, m, logp_noise=c - e))  # a real policy change: signal
