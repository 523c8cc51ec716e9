"""Rollout strategies: independent (GRPO), arpo, appo, tree (Tree-GRPO). Registry in ``context``.

All four share the agent loop (one :class:`~appo.agent.loop.AgentLoop` per call, so forks reuse the
KV their parents left under their cache keys; every key is released when the strategy returns) and
return exactly ``cfg.n_total`` rows per prompt. Row uids are given in creation order: initial rows
``0 .. n_initial-1``, then forks/fills.

Choices where the papers are silent (also in each function's docstring; docs/algorithm.md 11):

- ARPO's normalised entropy is the sum of a window's token entropies divided by ``log |V|``, as its
  reference computes it (``dH`` then lies in [-w, w], w the window). The copy forks at the tool result (it shares the
  response up to the result's last token and samples its own next turn); a copy does not fork again
  at the result it was forked at. Budget left at the end is filled with independent rows.
- APPO excludes, besides tool/prompt and whitespace-only tokens, each row's last token and tokens
  with no response budget after them: a fork there can only reproduce its parent.
- Tree nodes are step boundaries (the last token of a tool result) owned by the row that produced
  them; each round every tree expands ``expand_nodes`` nodes until the budget is used; a
  prompt whose rows have no tool call has no node, and that round adds new independent trees.
- Random choices (ARPO's fork draws, the tree's expansions, APPO's ``random`` points) come from
  :meth:`AgentLoop.rng_for` keyed by (prompt group, row, position or round), and every engine request
  carries a per-row seed (:mod:`appo.agent.loop`): a prompt's rows do not depend on the other prompts
  of the call, so prompts can be split over workers with the same result.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch

from appo.agent.context import (
    ROLLOUT_STRATEGIES,
    PromptSpec,
    RolloutContext,
    RolloutOutput,
    StrategyConfig,
    check_prompts,
    engine_logprobs,
    finish,
    get_strategy,
    register_strategy,
    rollout_metrics,
)
from appo.agent.loop import AgentLoop, LoopStart, TurnEvent, fork_start
from appo.agent.oracle import decisive_token, oracle_point, point_precision
from appo.agent.strategy_options import AppoConfig, ArpoConfig, TreeConfig, strategy_options
from appo.core import arpo_branch_probability, branching_score, likelihood_gain, omega_noise_rows, select_branch_points
from appo.types import Rollout

__all__ = [
    "ROLLOUT_STRATEGIES", "PromptSpec", "RolloutContext", "RolloutOutput", "StrategyConfig", "arpo_delta_entropy",
    "arpo_window_entropy", "engine_logprobs", "get_strategy", "register_strategy", "rollout_metrics", "run_strategy",
]


def run_strategy(name: str, ctx: RolloutContext, prompts: list[PromptSpec], cfg: StrategyConfig) -> RolloutOutput:
    """Look up ``name`` in :data:`ROLLOUT_STRATEGIES` and run it."""
    return get_strategy(name)(ctx, prompts, cfg)


def _initial(loop: AgentLoop, prompts: list[PromptSpec], n: int, first_uid: int = 0) -> None:
    for p in prompts:
        for u in range(first_uid, first_uid + n):
            loop.add(LoopStart(group=p.group, uid=u, prompt_ids=tuple(p.prompt_ids), data_index=p.data_index))


@register_strategy("independent")
def independent(ctx: RolloutContext, prompts: list[PromptSpec], cfg: StrategyConfig) -> RolloutOutput:
    """GRPO: ``n_total`` independent rows per prompt (``n_initial`` is ignored)."""
    check_prompts(prompts)
    loop = ctx.loop()
    try:
        _initial(loop, prompts, cfg.n_total)
        rows = loop.run()
    finally:
        loop.release()
    return finish(rows, prompts, cfg.n_total)


def arpo_window_entropy(ent: Sequence[float], log_v: float) -> float:
    """ARPO's normalised entropy of a window of tokens, as its reference computes it: the *sum* of the
    window's per-token entropies divided by ``log |V|`` (the reference gathers the top-k log-probs of the
    first <= 20 tokens of a round into one list and sums ``-p log p`` over all of them). Not the per-token
    mean: over a 20-token window the sum is 20x the mean, so ``beta * dH`` moves the fork probability
    (0.2 vs 1.2 nats per token, 20 tokens each, |V| = 151,665: p = 0.835; the mean gives 0.517).
    0 for an empty window."""
    return sum(ent) / log_v


def arpo_delta_entropy(entropies: Sequence[float], loss_mask: Sequence[int], tool_spans: Sequence, turn_start: int,
                       new_to: int, w: int, log_v: float, at: str = "call_turn") -> float:
    """ARPO's entropy change ``dH`` when a row starts the turn at ``turn_start`` after a tool result.

    ``dH = Hn(window) - Hn(first <= w model tokens of the row's first turn)``, ``Hn`` =
    :func:`arpo_window_entropy`. The window, by ``at``:

    - ``call_turn`` (the reference code): the first <= w model tokens of the turn that made the call whose
      result ends at ``turn_start`` (the reference decides right after appending result r, from the round
      that produced call r); after the first result that turn is the first turn, so ``dH = 0`` and the fork
      probability is ``tau``.
    - ``after_result`` (the paper's wording): the first <= w tokens of the new turn (``[turn_start, new_to)``).

    Leaves out: the reference's top-k partial entropy and its slot-keyed baseline (see docs/algorithm.md 11).
    """
    if at not in ("call_turn", "after_result"):
        raise ValueError(f"at={at!r} must be 'call_turn' or 'after_result'")
    first_end = tool_spans[0].call_end
    first = [e for e, m in zip(entropies[:first_end], loss_mask[:first_end]) if m == 1][:w]
    if at == "after_result":
        window = list(entropies[turn_start: min(new_to, turn_start + w)])
    else:
        r = next(i for i, sp in enumerate(tool_spans) if sp.result_end == turn_start)
        start, end = (tool_spans[r - 1].result_end if r > 0 else 0), tool_spans[r].call_end
        window = [e for e, m in zip(entropies[start:end], loss_mask[start:end]) if m == 1][:w]
    return arpo_window_entropy(window, log_v) - arpo_window_entropy(first, log_v)


@register_strategy("arpo", options=ArpoConfig)
def arpo(ctx: RolloutContext, prompts: list[PromptSpec], cfg: StrategyConfig) -> RolloutOutput:
    """ARPO's entropy-based adaptive rollout.

    ``n_initial`` rows per prompt. Whenever a row samples the first tokens of a turn that follows a
    tool result it produced, ``dH = Hn(window) - Hn(first <= w tokens of the row's first turn)`` with
    ``Hn = sum of the window's entropies / log |V|`` (:func:`arpo_window_entropy`, the reference's sum;
    w = ``entropy_window``); the window is the turn that made the call (``entropy_at=call_turn``, the
    reference code: dH = 0 at the first result) or the new turn (``after_result``), see
    :func:`arpo_delta_entropy`; and
    with probability ``arpo_branch_probability(dH, tau, beta)`` one copy forks at the result's last
    token (it shares the response up to there and samples its own next turn), while the prompt has
    fewer than ``n_total`` rows. At the end, missing rows are filled with independent rows
    (``origin="initial"``), so the budget is always met. Leaves out: ARPO's top-k entropy (the
    engine's entropies are used as they come) and its per-step beam cap.
    """
    check_prompts(prompts)
    o = strategy_options(cfg.options, ArpoConfig)
    log_v = math.log(max(len(ctx.tokenizer), 2))
    w = o.entropy_window
    count = {p.group: cfg.n_initial for p in prompts}
    stats = {"forks": 0, "checks": 0, "p_sum": 0.0}

    def on_round(loop: AgentLoop, events: list[TurnEvent]) -> None:
        for ev in events:
            st = loop.state(ev.index)
            if ev.turn_start == 0 or ev.new_from != ev.turn_start:
                continue  # not the first call of a turn that follows a tool result
            if st.split is not None and ev.turn_start <= st.split + 1:
                continue  # the result was inherited from the parent, which already decided at it
            d_h = arpo_delta_entropy(st.entropies, st.loss_mask, st.tool_spans, ev.turn_start, ev.new_to, w, log_v,
                                     o.entropy_at)
            p = arpo_branch_probability(d_h, o.tau, o.beta)
            stats["checks"] += 1
            stats["p_sum"] += p
            draw = loop.rng_for("arpo", st.group, st.uid, ev.turn_start).random()
            if count[st.group] < cfg.n_total and draw < p:
                loop.add(fork_start(st, ev.turn_start - 1, uid=count[st.group]))
                count[st.group] += 1
                stats["forks"] += 1

    loop = ctx.loop()
    try:
        _initial(loop, prompts, cfg.n_initial)
        loop.run(on_round)
        fill = 0
        for p in prompts:
            for u in range(count[p.group], cfg.n_total):
                loop.add(LoopStart(group=p.group, uid=u, prompt_ids=tuple(p.prompt_ids), data_index=p.data_index))
                fill += 1
        rows = loop.run()
    finally:
        loop.release()
    extra = {"arpo/forks": float(stats["forks"]), "arpo/fill_rows": float(fill),
             "arpo/checks": float(stats["checks"]),
             "arpo/mean_fork_probability": stats["p_sum"] / max(stats["checks"], 1)}
    return finish(rows, prompts, cfg.n_total, extra)


def _valid_mask(ctx: RolloutContext, row: Rollout, fork: str = "after") -> torch.Tensor:
    """Model tokens that are not whitespace-only and whose fork can differ from the parent: with
    ``after`` (fork keeps token t) not the last token nor a token without budget after it; with
    ``redraw`` (fork re-samples token t) not position 0 (a fork there is just a new sample)."""
    T = len(row.response_ids)
    ws = ctx.whitespace_ids(row.response_ids)
    last_ok = ctx.limits.max_response_tokens - 1  # a fork after t needs t + 1 < max_response_tokens
    if fork == "redraw":
        valid = [m == 1 and not w and t > 0 for t, (m, w) in enumerate(zip(row.loss_mask, ws))]
    else:
        valid = [m == 1 and not w and t < T - 1 and t < last_ok
                 for t, (m, w) in enumerate(zip(row.loss_mask, ws))]
    return torch.tensor(valid, dtype=torch.bool)


def _logps(fn, rows: list[Rollout], name: str) -> list[torch.Tensor]:
    out = list(fn(rows))
    if len(out) != len(rows):
        raise ValueError(f"{name} returned {len(out)} tensors for {len(rows)} rows")
    for r, x in zip(rows, out):
        if x.dim() != 1 or x.shape[0] != len(r.response_ids):
            raise ValueError(f"{name}: row (group {r.group}, uid {r.uid}) needs a [{len(r.response_ids)}] tensor of "
                             f"response-aligned log-probs, got shape {tuple(x.shape)}")
    return [x.detach().float().cpu() for x in out]


def _random_points(valid: list[torch.Tensor], k: int, rng) -> list[tuple[int, int]]:
    """``k`` (row, position) pairs drawn uniformly from the valid positions (with replacement only when
    fewer than ``k`` exist); the ``random`` ablation of APPO's point choice."""
    pool = [(i, int(t)) for i, v in enumerate(valid) for t in torch.nonzero(v).flatten().tolist()]
    if not pool:
        return []
    return rng.sample(pool, k) if len(pool) >= k else [rng.choice(pool) for _ in range(k)]


def _oracle_ok(row: Rollout, t: int | None) -> int | None:
    """The oracle point ``t`` if a fork there is possible (a model token with a model token after it)."""
    if t is None or t + 1 >= len(row.response_ids) or not (row.loss_mask[t] == 1 and row.loss_mask[t + 1] == 1):
        return None
    return t


def _oracle_scores(items, oracle: list[int | None]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Scores and masks that make :func:`select_branch_points` take the oracle points (one per row that has
    one, in row order, repeated cyclically up to k)."""
    scores, masks = [], []
    for (_, row, _, _), t in zip(items, oracle):
        m = torch.zeros(len(row.response_ids), dtype=torch.bool)
        if t is not None:
            m[t] = True
        masks.append(m)
        scores.append(torch.where(m, torch.ones(len(m)), torch.full((len(m),), -math.inf)))
    return scores, masks


@register_strategy("appo", options=AppoConfig)
def appo(ctx: RolloutContext, prompts: list[PromptSpec], cfg: StrategyConfig) -> RolloutOutput:
    """APPO: Branching-Score forks from the initial rows (docs/algorithm.md 2-5; depth 1).

    Per initial row: ``H`` = the engine's entropies; ``Omega = likelihood_gain(logp_current, logp_anchor,
    valid, omega_gamma, omega_clip_eps, form=omega_form)`` from ``ctx.current_logp_fn`` /
    ``ctx.anchor_logp_fn``; ``BS = branching_score(H, Omega, valid)`` (Z(H) * Z(Omega), falling back to
    Z(H) when Omega has zero variance or is numerical noise, :func:`~appo.core.omega_noise_rows`: for the
    ``rollout`` anchor (:func:`engine_logprobs`) the noise is the measured trainer-vs-engine mismatch
    ``logp_current - logp_engine``, which is all of delta, so that anchor always falls back to Z(H) when
    the engine runs the current weights; without the two fns Omega is 1 everywhere, hence BS = Z(H)).
    Valid tokens are model tokens (loss_mask 1), not whitespace-only, and (``after``) not the row's last
    token nor a token with no response budget after it, (``redraw``) not position 0. Per prompt,
    ``select_branch_points`` pools the initial rows' strict candidates (Z(H) > 0 and Z(Omega) > 0) and
    takes ``k = n_total - n_initial`` points; each point (row i, position t) forks through the same loop
    (KV of the parent reused via its cache key): with ``fork = "after"`` (default, the paper and
    the reference code) from ``prompt + response[: t + 1]`` (split = t: token t is kept and lies in the
    shared prefix, so it gets the branch contrast); with ``"redraw"`` from ``prompt + response[:t]`` so
    the branch re-samples token t itself (split = t - 1; the advantage's ``redraw_contrast`` gives the
    parent's token t its contrast, docs/algorithm.md 6.3). Initial rows get ``omega`` and ``scores`` for
    reports. ``points`` selects ablations: ``entropy`` (Omega ignored, BS = Z(H)), ``random`` (uniform
    valid points) and ``oracle`` (per initial row, the point whose fork re-samples the prompt's known
    decisive token, :mod:`appo.agent.oracle`; rows without one give none). When the prompts carry a
    decisive spec, every arm logs ``appo/oracle_precision`` (share of its points equal to the oracle's),
    ``appo/decisive_token_rate`` (share at the decisive token itself) and ``appo/decisive_found_rate``.
    Leaves out: depth > 1.
    """
    check_prompts(prompts)
    o = strategy_options(cfg.options, AppoConfig)
    k = cfg.n_total - cfg.n_initial
    loop = ctx.loop()
    extra: dict[str, float] = {}
    try:
        _initial(loop, prompts, cfg.n_initial)
        initial = loop.run()
        use_omega = (ctx.current_logp_fn is not None and ctx.anchor_logp_fn is not None
                     and o.points == "score")
        cur = _logps(ctx.current_logp_fn, initial, "current_logp_fn") if use_omega else None
        anc = _logps(ctx.anchor_logp_fn, initial, "anchor_logp_fn") if use_omega else None
        anchor_is_engine = ctx.anchor_logp_fn is engine_logprobs  # `rollout` anchor: delta is engine-vs-trainer
        annotated: list[Rollout] = []
        by_group: dict[int, list[tuple[int, Rollout, object, torch.Tensor]]] = {}
        n_deg = n_strict = n_points = 0
        for i, row in enumerate(initial):
            valid = _valid_mask(ctx, row, o.fork)
            ent = torch.tensor(row.entropies, dtype=torch.float32)
            noise = None
            if use_omega:
                omega = likelihood_gain(cur[i], anc[i], valid, o.gamma, o.omega_clip_eps,
                                        form=o.omega_form)
                mismatch = cur[i] - anc[i] if anchor_is_engine else None
                noise = omega_noise_rows(cur[i], anc[i], valid, o.gamma, logp_noise=mismatch,
                                         ratio=o.omega_noise_ratio)
            else:
                omega = torch.ones_like(ent)
            bs = branching_score(ent, omega, valid, omega_noise=noise)
            n_deg += int(bs.omega_degenerate)
            annotated.append(replace(row, omega=tuple(omega.tolist()), scores=tuple(bs.score.tolist())))
            by_group.setdefault(row.group, []).append((i, annotated[-1], bs, valid))
        spec_of = {p.group: p.decisive for p in prompts}
        prec_sum = dec_sum = 0.0
        n_counted = n_rows_dec = 0
        for g, items in by_group.items():
            spec = spec_of.get(g)
            dec = [None if spec is None else decisive_token(ctx.tokenizer, r.response_ids, spec)
                   for _, r, _, _ in items]
            orc = [_oracle_ok(r, oracle_point(d, o.fork)) for (_, r, _, _), d in zip(items, dec)]
            n_rows_dec += sum(d is not None for d in dec)
            if o.points == "oracle":
                points = select_branch_points(*_oracle_scores(items, orc), k)
            elif o.points == "random":
                points = _random_points([v for *_, v in items], k, loop.rng_for("appo_points", g))
            else:
                points = select_branch_points([b.score for _, _, b, _ in items], [v for *_, v in items], k,
                                              [b.strict for _, _, b, _ in items])
            if spec is not None:
                prec, on, n_c = point_precision(points, orc, dec)
                if n_c:
                    prec_sum, dec_sum, n_counted = prec_sum + prec * n_c, dec_sum + on * n_c, n_counted + n_c
            for j, (ri, t) in enumerate(points):
                _, parent, bs, _ = items[ri]
                n_points += 1
                n_strict += bool(bs.strict[t])
                split = t - 1 if o.fork == "redraw" else t
                loop.add(fork_start(parent, split, uid=cfg.n_initial + j, branch_score=float(bs.score[t])))
            if len(points) < k:  # no valid token anywhere (e.g. every row empty): independent rows fill up
                for u in range(cfg.n_initial + len(points), cfg.n_total):
                    p = next(p for p in prompts if p.group == g)
                    loop.add(LoopStart(group=g, uid=u, prompt_ids=tuple(p.prompt_ids), data_index=p.data_index))
        rows = loop.run()
        extra = {"appo/omega_degenerate_rate": n_deg / max(len(initial), 1),
                 "appo/strict_point_rate": n_strict / max(n_points, 1),
                 "appo/branch_points": float(n_points)}
        if any(p.decisive is not None for p in prompts):  # a task that knows its decisive token (issue 24)
            extra.update({"appo/oracle_precision": prec_sum / n_counted if n_counted else float("nan"),
                          "appo/decisive_token_rate": dec_sum / n_counted if n_counted else float("nan"),
                          "appo/decisive_found_rate": n_rows_dec / max(len(initial), 1)})
    finally:
        loop.release()
    by_key = {(r.group, r.uid): r for r in annotated}
    rows = [by_key.get((r.group, r.uid), r) for r in rows]
    return finish(rows, prompts, cfg.n_total, extra)


@register_strategy("tree", options=TreeConfig)
def tree(ctx: RolloutContext, prompts: list[PromptSpec], cfg: StrategyConfig) -> RolloutOutput:
    """Tree-GRPO's rollout: trees whose nodes are whole agent steps (a model turn plus its tool result).

    Starts from ``n_initial`` rows (one tree each). Each round, per prompt, every tree (in random
    order) expands up to ``expand_nodes`` of its nodes drawn uniformly without replacement:
    each is forked at its step boundary and continued to the end. Rounds repeat until the prompt has
    ``n_total`` rows (the last round takes only what the budget allows). A node is the last token of a
    tool result, owned by the row that produced it (so a shared node is counted once), with budget
    left after it. When a prompt has no node in a round, or after ``expand_iters`` rounds, the
    missing rows are new independent trees (``origin="initial"``; in a round without nodes at most
    ``n_initial`` of them, since they may bring nodes). Leaves out: Tree-GRPO's advantage (in
    ``appo.core.advantages``).
    """
    check_prompts(prompts)
    o = strategy_options(cfg.options, TreeConfig)
    count = {p.group: cfg.n_initial for p in prompts}
    loop = ctx.loop()
    rounds = fill = 0

    def new_trees(p: PromptSpec, n: int) -> None:
        nonlocal fill
        for u in range(count[p.group], count[p.group] + n):
            loop.add(LoopStart(group=p.group, uid=u, prompt_ids=tuple(p.prompt_ids), data_index=p.data_index))
        count[p.group] += n
        fill += n

    try:
        _initial(loop, prompts, cfg.n_initial)
        rows = loop.run()
        while any(count[p.group] < cfg.n_total for p in prompts):
            rounds += 1
            for p in prompts:
                need = cfg.n_total - count[p.group]
                if need <= 0:
                    continue
                if o.expand_iters and rounds > o.expand_iters:
                    new_trees(p, need)
                    continue
                nodes: dict[int, list[tuple[Rollout, int]]] = {}
                for r in rows:
                    if r.group != p.group:
                        continue
                    for s in r.tool_spans:
                        if s.result_end - 1 > (r.split if r.split is not None else -1) \
                                and s.result_end < ctx.limits.max_response_tokens:
                            nodes.setdefault(r.tree, []).append((r, s.result_end - 1))
                if not nodes:  # no step to expand yet: new trees (they may bring nodes)
                    new_trees(p, min(need, cfg.n_initial))
                    continue
                trees = sorted(nodes)
                rng = loop.rng_for("tree", p.group, rounds)
                rng.shuffle(trees)
                picks = [pick for t in trees
                         for pick in rng.sample(nodes[t], min(o.expand_nodes, len(nodes[t])))]
                for row, t in picks[:need]:
                    loop.add(fork_start(row, t, uid=count[p.group]))
                    count[p.group] += 1
            rows = loop.run()
    finally:
        loop.release()
    return finish(rows, prompts, cfg.n_total, {"tree/rounds": float(rounds), "tree/fill_rows": float(fill)})
