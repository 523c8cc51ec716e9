"""The agent layer: tool-call protocols, the multi-turn token-in/token-out loop, rollout strategies.

Typical use (what a trainer does each step)::

    ctx = RolloutContext.create(engine, tokenizer, "tags", tools, SamplingParams(temperature=1.0),
                                LoopLimits(max_tool_calls=3, max_response_tokens=4096), seed=step,
                                current_logp_fn=teacher_forced_logp_fn(policy),
                                anchor_logp_fn=teacher_forced_logp_fn(previous_policy),  # or engine_logprobs
                                key_prefix=f"step{step}/")
    prompts = prompt_specs(ctx, examples, data_indices)
    out = run_strategy("appo", ctx, prompts, StrategyConfig(n_total=16, n_initial=8))
    out.rows  # n_total Rollouts per prompt, ordered by (group, uid); out.metrics for logging

May import: :mod:`appo.core`, :mod:`appo.engine`, :mod:`appo.plugins`, :mod:`appo.tools`, :mod:`appo.types` (the
Engine and Tool protocols). Not the config, the algorithms or the trainer.
"""

from appo.agent.context import (
    ROLLOUT_STRATEGIES,
    STRATEGY_OPTIONS,
    PromptSpec,
    RolloutContext,
    RolloutOutput,
    StrategyConfig,
    check_tree,
    engine_logprobs,
    get_strategy,
    prompt_specs,
    register_strategy,
    rollout_metrics,
    teacher_forced_logp_fn,
)
from appo.agent.loop import (
    AgentLoop,
    LoopLimits,
    LoopStart,
    TokenAlignmentError,
    TurnEvent,
    fork_start,
    verify_token_alignment,
)
from appo.agent.oracle import DecisiveSpec, decisive_token, oracle_point, point_precision
from appo.agent.protocols import (
    PROTOCOLS,
    HermesProtocol,
    TagsProtocol,
    ToolProtocol,
    TurnAction,
    build_prompt_ids,
    end_of_turn_ids,
    get_protocol,
    register_protocol,
    render_demonstration,
    turn_end_id,
)
from appo.agent.strategies import arpo_delta_entropy, arpo_window_entropy, run_strategy
from appo.agent.strategy_options import AppoConfig, ArpoConfig, TreeConfig, strategy_options
from appo.agent.template_protocol import TemplateProtocol  # noqa: E402 - registers the `template` protocol

__all__ = [
    "AppoConfig", "ArpoConfig", "STRATEGY_OPTIONS", "TreeConfig", "strategy_options", "DecisiveSpec",
    "decisive_token", "oracle_point", "point_precision", "arpo_delta_entropy", "arpo_window_entropy",
    "AgentLoop", "HermesProtocol", "LoopLimits", "LoopStart", "PROTOCOLS", "PromptSpec", "ROLLOUT_STRATEGIES",
    "RolloutContext", "RolloutOutput", "StrategyConfig", "TagsProtocol", "TemplateProtocol", "TokenAlignmentError",
    "ToolProtocol",
    "TurnAction", "TurnEvent", "build_prompt_ids", "check_tree", "end_of_turn_ids", "engine_logprobs",
    "fork_start", "get_protocol", "get_strategy", "prompt_specs", "register_protocol", "register_strategy",
    "render_demonstration", "rollout_metrics", "run_strategy", "teacher_forced_logp_fn", "turn_end_id",
    "verify_token_alignment",
]
