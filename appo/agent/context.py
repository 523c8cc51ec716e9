"""What every rollout strategy takes and returns, the strategy registry, and rollout metrics.

A strategy is ``strategy(ctx: RolloutContext, prompts: list[PromptSpec], cfg: StrategyConfig) ->
RolloutOutput``; it returns exactly ``cfg.n_total`` rows per prompt (``independent`` ignores
``n_initial``), ordered by (group, uid), with consistent tree links.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from appo.agent.loop import AgentLoop, LoopLimits
from appo.agent.oracle import DecisiveSpec
from appo.agent.protocols import ToolProtocol, get_protocol, tool_map
from appo.engine.base import Engine, SamplingParams
from appo.plugins import register_unique
from appo.tools.base import Tool
from appo.types import Rollout

LogpFn = Callable[[list[Rollout]], list[torch.Tensor]]


@dataclass(frozen=True)
class PromptSpec:
    """One prompt to roll out."""

    group: int
    """Prompt index within the step; becomes every row's ``group``. Unique within one call."""
    prompt_ids: tuple[int, ...]
    """Prompt token ids (chat template applied, e.g. by ``ToolProtocol.build_prompt_ids``)."""
    data_index: int = -1
    """Dataset index of the example, copied to the rows."""
    decisive: DecisiveSpec | None = None
    """Where the task's decisive token sits, when it is known by construction (``extra_info["decisive"]``):
    APPO's ``oracle`` points and the precision metrics of every point choice."""


@dataclass(frozen=True)
class StrategyConfig:
    """What every rollout strategy is given besides the prompts: the row budget and its own typed options."""

    n_total: int = 16
    """Rows per prompt every strategy returns (the budget)."""
    n_initial: int = 8
    """Rows sampled from the prompt before branching (arpo, appo, tree); ignored by independent."""
    options: Any = None
    """The strategy's typed options (the dataclass it registered with: :mod:`appo.agent.strategy_options`
    for the built-ins); None: that dataclass's defaults."""

    def __post_init__(self) -> None:
        if self.n_total < 1 or not 1 <= self.n_initial <= self.n_total:
            raise ValueError(f"StrategyConfig: need n_total >= 1 and 1 <= n_initial <= n_total, got "
                             f"n_total={self.n_total}, n_initial={self.n_initial}")


@dataclass(frozen=True)
class RolloutContext:
    """Everything a strategy needs besides the prompts. Build with :meth:`create`."""

    engine: Engine
    """Samples turns (``HFEngine`` or any Engine)."""
    tokenizer: Any
    """The policy's tokenizer (decoding for the protocol, tool-result tokenization)."""
    protocol: ToolProtocol
    """Tool-call protocol (``tags`` or ``hermes``)."""
    tools: Mapping[str, Tool]
    """Tools by name."""
    params: SamplingParams
    """Sampling parameters; stop strings are added by the loop, the seed is drawn from ``rng``."""
    limits: LoopLimits
    """Tool-call and length limits."""
    rng: random.Random
    """Seeded generator: engine seeds, ARPO forks and tree expansions all draw from it."""
    current_logp_fn: LogpFn | None = None
    """APPO: teacher-forced log-probs of each row's response tokens under the current policy ([R_i] each)."""
    anchor_logp_fn: LogpFn | None = None
    """APPO: the same under the anchor policy (``rollout``: :func:`engine_logprobs`; ``previous``;
    ``reference``). Without both fns Omega is constant and BS = Z(H)."""
    key_prefix: str = ""
    """Prefix of the engine cache keys (e.g. ``"step12/"``), so concurrent steps do not collide."""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(cls, engine, tokenizer, protocol: str | ToolProtocol, tools: Sequence[Tool] | Mapping[str, Tool],
               params: SamplingParams | None = None, limits: LoopLimits | None = None, seed: int = 0,
               **kwargs) -> RolloutContext:
        """A context with a protocol looked up by name, tools by name, and ``random.Random(seed)``."""
        return cls(engine=engine, tokenizer=tokenizer, protocol=get_protocol(protocol), tools=tool_map(tools),
                   params=params or SamplingParams(), limits=limits or LoopLimits(), rng=random.Random(seed),
                   **kwargs)

    def loop(self) -> AgentLoop:
        """A fresh agent loop over this context."""
        return AgentLoop(self.engine, self.tokenizer, self.protocol, self.tools, self.params, self.limits,
                         self.rng, key_prefix=self.key_prefix)

    def whitespace_ids(self, ids: Sequence[int]) -> list[bool]:
        """Whether each token decodes to whitespace only (cached per token id)."""
        cache = self._cache.setdefault("ws", {})
        out = []
        for t in ids:
            if t not in cache:
                cache[t] = self.tokenizer.decode([t], skip_special_tokens=False).strip() == ""
            out.append(cache[t])
        return out


@dataclass(frozen=True)
class RolloutOutput:
    """What a strategy returns."""

    rows: list[Rollout]
    """``n_total`` rows per prompt, ordered by (group, uid)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Scalar metrics (``rollout/*`` and strategy-specific keys)."""


Strategy = Callable[[RolloutContext, list[PromptSpec], StrategyConfig], RolloutOutput]
ROLLOUT_STRATEGIES: dict[str, Strategy] = {}
"""Registered rollout strategies by name: independent, arpo, appo, tree."""
STRATEGY_OPTIONS: dict[str, type | None] = {}
"""Each registered strategy's options dataclass (None: it takes none), read by algorithms and the config."""


def register_strategy(name: str, options: type | None = None) -> Callable[[Strategy], Strategy]:
    """Decorator adding a strategy to :data:`ROLLOUT_STRATEGIES`, with ``options`` its typed options (a
    dataclass it reads from ``StrategyConfig.options``); refuses duplicate names."""

    def deco(fn: Strategy) -> Strategy:
        register_unique(ROLLOUT_STRATEGIES, name, fn, "rollout strategy")
        STRATEGY_OPTIONS[name] = options
        return fn

    return deco


def get_strategy(name: str) -> Strategy:
    """The strategy registered under ``name``."""
    if name not in ROLLOUT_STRATEGIES:
        raise ValueError(f"unknown rollout strategy {name!r}; choose one of {sorted(ROLLOUT_STRATEGIES)}")
    return ROLLOUT_STRATEGIES[name]


def engine_logprobs(rows: list[Rollout]) -> list[torch.Tensor]:
    """The behaviour log-probs the engine recorded, per row: the ``rollout`` anchor of APPO's Omega."""
    return [torch.tensor(r.logprobs, dtype=torch.float32) for r in rows]


def teacher_forced_logp_fn(model, temperature: float = 1.0, batch_size: int = 8) -> LogpFn:
    """A ``LogpFn`` scoring rows under ``model`` by teacher forcing (``appo.engine.scoring``).

    Use it for ``current_logp_fn`` (the policy) and, for the ``previous`` / ``reference`` anchors,
    for ``anchor_logp_fn`` with that policy's model; the ``rollout`` anchor is :func:`engine_logprobs`.
    Pass the sampling temperature so the log-probs are of the same distribution the engine reports.
    """
    from appo.engine.scoring import score_sequences

    def fn(rows: list[Rollout]) -> list[torch.Tensor]:
        scored = score_sequences(model, [tuple(r.prompt_ids) + tuple(r.response_ids) for r in rows],
                                 [len(r.prompt_ids) for r in rows], temperature=temperature, batch_size=batch_size)
        return [logp for logp, _ in scored]

    return fn


def prompt_specs(ctx: RolloutContext, examples: Sequence, data_indices: Sequence[int] | None = None,
                 system_prompt: str | None = None) -> list[PromptSpec]:
    """One PromptSpec per example (group = position), prompts built by the context's protocol."""
    idx = list(data_indices) if data_indices is not None else [-1] * len(examples)
    if len(idx) != len(examples):
        raise ValueError(f"data_indices has {len(idx)} entries for {len(examples)} examples")
    return [PromptSpec(group=g, data_index=i, prompt_ids=tuple(
        ctx.protocol.build_prompt_ids(ex, ctx.tokenizer, ctx.tools, system_prompt)),
        decisive=DecisiveSpec.from_info((getattr(ex, "extra_info", None) or {}).get("decisive")))
        for g, (ex, i) in enumerate(zip(examples, idx))]


def check_prompts(prompts: Sequence[PromptSpec]) -> None:
    """Raise on duplicate groups or empty prompts."""
    groups = [p.group for p in prompts]
    if len(set(groups)) != len(groups):
        raise ValueError(f"prompts have duplicate groups {sorted(g for g, c in Counter(groups).items() if c > 1)}; "
                         "give each prompt its own group index")


def rollout_metrics(rows: Sequence[Rollout], n_prompts: int) -> dict[str, float]:
    """Rows, branches per prompt, tool calls and errors, truncations, length, stop-reason counts."""
    n = max(len(rows), 1)
    spans = [s for r in rows for s in r.tool_spans]
    errors = sum(not s.ok for s in spans)
    m = {
        "rollout/rows": float(len(rows)),
        "rollout/branches_per_prompt": sum(r.origin == "branch" for r in rows) / max(n_prompts, 1),
        "rollout/tool_calls_per_rollout": len(spans) / n,
        "rollout/tool_errors": float(errors),
        "rollout/tool_error_rate": errors / max(len(spans), 1),
        "rollout/truncations": float(sum(r.stop_reason == "max_length" for r in rows)),
        "rollout/response_length": sum(len(r.response_ids) for r in rows) / n,
    }
    for reason in ("answer", "eos", "max_tool_calls", "max_length", "no_action"):
        m[f"rollout/stop/{reason}"] = float(sum(r.stop_reason == reason for r in rows))
    return m


def finish(rows: Sequence[Rollout], prompts: Sequence[PromptSpec], cfg_n_total: int,
           extra: dict[str, float] | None = None) -> RolloutOutput:
    """Sort rows by (group, uid), check the budget and tree links, and attach metrics."""
    rows = sorted(rows, key=lambda r: (r.group, r.uid))
    check_tree(rows)
    counts = Counter(r.group for r in rows)
    for p in prompts:
        if counts.get(p.group, 0) != cfg_n_total:
            raise RuntimeError(f"strategy produced {counts.get(p.group, 0)} rows for group {p.group}, "
                               f"expected n_total={cfg_n_total}")
    return RolloutOutput(rows=list(rows), metrics={**rollout_metrics(rows, len(prompts)), **(extra or {})})


def check_tree(rows: Sequence[Rollout]) -> None:
    """Raise unless uids are 0..n-1 per group and every branch shares ``response_ids[: split + 1]``
    with an existing parent, has the parent's root, and carries the parent's completed tool calls."""
    by_group: dict[int, dict[int, Rollout]] = {}
    for r in rows:
        by_group.setdefault(r.group, {})[r.uid] = r
    for g, rs in by_group.items():
        if sorted(rs) != list(range(len(rs))):
            raise RuntimeError(f"group {g}: uids {sorted(rs)} are not 0..{len(rs) - 1}")
        for r in rs.values():
            if r.parent is None:
                if r.root is not None or r.origin != "initial":
                    raise RuntimeError(f"group {g} uid {r.uid}: a root row must have root=None, origin=initial")
                continue
            p = rs.get(r.parent)
            if p is None:
                raise RuntimeError(f"group {g} uid {r.uid}: parent {r.parent} does not exist")
            t = r.split
            if not 0 <= t < len(p.response_ids) or r.response_ids[: t + 1] != p.response_ids[: t + 1]:
                raise RuntimeError(f"group {g} uid {r.uid}: does not share response_ids[:{t + 1}] with parent {p.uid}")
            if r.root != p.tree:
                raise RuntimeError(f"group {g} uid {r.uid}: root {r.root} != parent's tree {p.tree}")
            carried = [s for s in p.tool_spans if s.result_end <= t + 1]
            if list(r.tool_spans[: len(carried)]) != carried:
                raise RuntimeError(f"group {g} uid {r.uid}: tool calls of the shared prefix were not carried over")
