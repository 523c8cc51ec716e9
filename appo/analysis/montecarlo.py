"""Monte-Carlo influence of rollout positions: sample rollouts, re-draw chosen tokens M times, score.

For each rollout r (reward R) and analysed position t, M continuations start from
``prompt + response[: t]`` (token t re-drawn, see :mod:`appo.analysis.positions`) and run through the
same agent loop (tools, limits, protocol) to their end; their rewards R_1..R_M give

    influence_t = | mean_m R_m - R |,   var_t = sample variance of R_1..R_M.

``mean_m R_m`` estimates V(s_t), the value of the state before token t, so influence_t measures how far
the rollout's outcome lies from what re-deciding t *and everything after it* gives: it includes the luck
of all later draws, which shrinks toward the end of a rollout. With ``paired``, M more continuations keep
token t (prefix ``response[: t + 1]``, the training fork); they estimate Q(s_t, a_t), and
``token_effect_t = |Q - V|`` isolates the effect of the token drawn at t (its advantage's magnitude; the
estimator is in ``PositionRecord.token_effect``).

The per-token signals next to it are the ones APPO branches on: H_t (the engine's entropy), Omega_t
(``likelihood_gain`` of current vs anchor log-probs, 1.0 everywhere without an anchor, so that BS falls
back to Z(H_t)) and BS_t = Z(H_t) * Z(Omega_t) over APPO's valid tokens of the rollout.

KV reuse: the rollouts keep their KV under their cache keys until every continuation has run, and an
engine that reuses prefixes by content (``HFEngine``) serves every re-draw prefix from them.
Continuations run ``batch_size`` at a time, one agent loop per batch whose keys are released after it,
so kept KV stays bounded. Seeds: rollouts, position sampling and each batch draw from generators
seeded by strings built from ``config.seed``, so the same seed gives the same numbers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from appo.agent.loop import AgentLoop, LoopLimits, LoopStart, fork_start
from appo.analysis.positions import choose_positions, redraw_start, token_regions, tool_boundaries, tool_distance
from appo.analysis.records import AnalysisConfig, PositionRecord, RolloutRecord, parse_omega_variant
from appo.core import branching_score, likelihood_gain
from appo.dump import TokenTexts
from appo.engine.base import Engine, SamplingParams
from appo.rewards.base import RewardFn, RewardOutput
from appo.types import Example, Rollout

LogpFn = Callable[[list[Rollout]], list[torch.Tensor]]


@dataclass(frozen=True)
class Estimate:
    """What :func:`estimate_influence` measured."""

    rows: list[Rollout]
    """The analysed rollouts (with ``omega`` and ``scores`` filled in), ordered by (group, uid)."""
    rewards: list[RewardOutput]
    """Reward of each row."""
    positions: list[PositionRecord]
    """One record per analysed position, ordered by (group, rollout, t)."""
    rollouts: list[RolloutRecord]
    """One record per row."""
    branches_run: int
    """Continuations run (= sum over rows of positions x M, twice that when paired)."""
    omega_constant: bool
    """True when no anchor was given: Omega is 1 everywhere and BS = Z(H)."""
    timing: dict[str, float]
    """Wall seconds per phase (rollouts, scores, redraws)."""


def make_loop(engine: Engine, tokenizer, tools, config: AnalysisConfig, rng: random.Random,
              key_prefix: str) -> AgentLoop:
    """An agent loop with the analysis' protocol, sampling temperature and limits."""
    params = SamplingParams(temperature=config.temperature, max_new_tokens=config.max_response_tokens)
    limits = LoopLimits(max_tool_calls=config.max_tool_calls, max_response_tokens=config.max_response_tokens,
                        on_tool_limit=config.on_tool_limit)
    return AgentLoop(engine, tokenizer, config.protocol, tools, params, limits, rng, key_prefix=key_prefix)


def appo_valid_mask(row: Rollout, texts: Sequence[str], max_response_tokens: int) -> torch.Tensor:
    """Tokens APPO may branch on: model tokens that are not whitespace-only, not the row's last token
    and with response budget after them (the APPO strategy's rule)."""
    T = len(row.response_ids)
    return torch.tensor([m == 1 and s.strip() != "" and t < T - 1 and t < max_response_tokens - 1
                         for t, (m, s) in enumerate(zip(row.loss_mask, texts))], dtype=torch.bool)


def variant_scores(entropy: torch.Tensor, logp_current: torch.Tensor, logp_anchor: torch.Tensor,
                   valid: torch.Tensor, config: AnalysisConfig) -> dict[str, list[float]]:
    """Per Omega variant of ``config.omega_variants`` (``form,g=gamma``): ``omega[spec]`` (Omega of that
    form and discount, :func:`appo.core.likelihood_gain`) and ``bs[spec]`` (Z(H) * Z(that Omega) over
    ``valid``, -inf where not valid), one value per response token of the row."""
    out: dict[str, list[float]] = {}
    for spec in config.omega_variants:
        form, gamma = parse_omega_variant(spec)
        om = likelihood_gain(logp_current, logp_anchor, valid, gamma, config.omega_clip_eps, form=form)
        out[f"omega[{spec}]"] = om.tolist()
        out[f"bs[{spec}]"] = branching_score(entropy, om, valid).score.tolist()
    return out


def _logps(fn: LogpFn, rows: list[Rollout], name: str) -> list[torch.Tensor]:
    out = list(fn(rows))
    if len(out) != len(rows) or any(x.shape != (len(r.response_ids),) for x, r in zip(out, rows)):
        raise ValueError(f"{name} must return one [R_i] tensor of response log-probs per row")
    return [x.detach().float().cpu() for x in out]


def score_rows(reward_fn: RewardFn, examples: Sequence[Example], rows: Sequence[Rollout]) -> list[RewardOutput]:
    """Reward of each row (``examples[row.group]`` is its example)."""
    if not rows:
        return []
    out = list(reward_fn([examples[r.group] for r in rows], [r.response_text for r in rows]))
    if len(out) != len(rows):
        raise RuntimeError(f"reward function returned {len(out)} results for {len(rows)} responses")
    return out


def estimate_influence(
    engine: Engine,
    tokenizer,
    examples: Sequence[Example],
    prompt_ids: Sequence[Sequence[int]],
    *,
    tools,
    reward_fn: RewardFn,
    config: AnalysisConfig,
    current_logp_fn: LogpFn | None = None,
    anchor_logp_fn: LogpFn | None = None,
    clock: Callable[[], float] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Estimate:
    """Sample ``config.rollouts_per_prompt`` rollouts per prompt and estimate the influence of their
    chosen positions (module docstring). ``prompt_ids[g]`` is the prompt of ``examples[g]``. Omega uses
    ``current_logp_fn`` / ``anchor_logp_fn`` when both are given, else it is constant.
    ``on_progress(phase, done, total)`` is called after the rollouts and after each batch of continuations."""
    import time

    clock = clock or time.perf_counter
    if len(prompt_ids) != len(examples):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(examples)} examples")
    if (current_logp_fn is None) != (anchor_logp_fn is None):
        raise ValueError("pass both current_logp_fn and anchor_logp_fn (Omega compares the two) or neither")
    cfg, texts, timing = config, TokenTexts(tokenizer), {}
    t0 = clock()
    loop = make_loop(engine, tokenizer, tools, cfg, random.Random(f"{cfg.seed}/rollouts"), "analysis/rollout/")
    for g, (_ex, ids) in enumerate(zip(examples, prompt_ids)):
        for u in range(cfg.rollouts_per_prompt):
            loop.add(LoopStart(group=g, uid=u, prompt_ids=tuple(ids), data_index=g))
    try:
        rows = sorted(loop.run(), key=lambda r: (r.group, r.uid))
        timing["rollouts_s"] = clock() - t0
        if on_progress is not None:
            on_progress("rollouts", len(rows), len(rows))
        t0 = clock()
        rewards = score_rows(reward_fn, examples, rows)
        omega_constant = current_logp_fn is None
        cur = None if omega_constant else _logps(current_logp_fn, rows, "current_logp_fn")
        anc = None if omega_constant else _logps(anchor_logp_fn, rows, "anchor_logp_fn")
        timing["scores_s"] = clock() - t0
        annotated, plans, starts, variants = [], [], [], []
        for i, row in enumerate(rows):
            tok = texts(row.response_ids)
            valid = appo_valid_mask(row, tok, cfg.max_response_tokens)
            ent = torch.tensor(row.entropies, dtype=torch.float32)
            omega = (torch.ones_like(ent) if omega_constant
                     else likelihood_gain(cur[i], anc[i], valid, cfg.omega_gamma, cfg.omega_clip_eps))
            bs = branching_score(ent, omega, valid)
            row = replace(row, omega=tuple(omega.tolist()), scores=tuple(bs.score.tolist()))
            annotated.append(row)
            variants.append({} if omega_constant else variant_scores(ent, cur[i], anc[i], valid, cfg))
            bounds = tool_boundaries(row) if cfg.include_tool_boundaries else {}
            eligible = [t for t, (m, s) in enumerate(zip(row.loss_mask, tok)) if m == 1 and s.strip()]
            pos = choose_positions(eligible, cfg.positions_per_rollout,
                                   random.Random(f"{cfg.seed}/positions/{row.group}/{row.uid}"), sorted(bounds))
            plans.append((row, tok, bounds, pos, bs.strict.tolist()))
        next_uid = {g: cfg.rollouts_per_prompt for g in range(len(examples))}
        for row, _, _, pos, _ in plans:
            for t in pos:
                for fork in (redraw_start, fork_start) if cfg.paired else (redraw_start,):
                    for _ in range(cfg.samples_per_position):
                        starts.append(fork(row, t, uid=next_uid[row.group]))
                        next_uid[row.group] += 1
        t0 = clock()
        redraws: list[Rollout] = []
        for b in range(0, len(starts), cfg.batch_size):
            bl = make_loop(engine, tokenizer, tools, cfg, random.Random(f"{cfg.seed}/redraw/{b}"),
                           f"analysis/redraw{b}/")
            for s in starts[b: b + cfg.batch_size]:
                bl.add(s)
            try:
                redraws += bl.run()
            finally:
                bl.release()
            if on_progress is not None:
                on_progress("continuations", len(redraws), len(starts))
        timing["redraws_s"] = clock() - t0
    finally:
        loop.release()
    t0 = clock()
    redraw_rewards = [float(r.score) for r in score_rows(reward_fn, examples, redraws)]
    redraw_tokens = [r.response_ids[len(s.response_ids)] if len(r.response_ids) > len(s.response_ids) else None
                     for r, s in zip(redraws, starts)]
    timing["redraw_scores_s"] = clock() - t0
    positions, records, k, M = [], [], 0, cfg.samples_per_position
    for (row, tok, bounds, pos, strict), rew, var in zip(plans, rewards, variants):
        regions = token_regions(row, tok, cfg.protocol)
        R = float(rew.score)
        ex_id = examples[row.group].id
        for t in pos:
            branch = tuple(redraw_rewards[k: k + M])
            same = tuple(tok_id == row.response_ids[t] for tok_id in redraw_tokens[k: k + M])
            keep = tuple(redraw_rewards[k + M: k + 2 * M]) if cfg.paired else ()
            k += 2 * M if cfg.paired else M
            bs_t = row.scores[t]
            scored = bs_t != float("-inf")
            positions.append(PositionRecord(
                group=row.group, example_id=ex_id, rollout=row.uid, t=t, token=tok[t], region=regions[t],
                boundary=bounds.get(t), tool_distance=tool_distance(t, row.tool_spans),
                entropy=float(row.entropies[t]), logprob=float(row.logprobs[t]), omega=float(row.omega[t]),
                bs=float(bs_t) if scored else None, strict=bool(strict[t]) if scored else None,
                rel_position=t / len(row.response_ids), rollout_reward=R, branch_rewards=branch,
                influence=abs(sum(branch) / len(branch) - R), keep_rewards=keep, branch_same=same,
                variant_scores={name: (None if not math.isfinite(v[t]) else float(v[t])) for name, v in var.items()}))
        records.append(RolloutRecord(
            group=row.group, uid=row.uid, example_id=ex_id, reward=R, stop_reason=row.stop_reason,
            n_tokens=len(row.response_ids), n_model_tokens=sum(row.loss_mask),
            tool_spans=tuple((s.call_start, s.call_end, s.result_end, s.name) for s in row.tool_spans),
            positions=tuple(pos)))
    return Estimate(rows=annotated, rewards=rewards, positions=positions, rollouts=records,
                    branches_run=len(redraws), omega_constant=omega_constant, timing=timing)
