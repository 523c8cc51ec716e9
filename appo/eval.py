"""Evaluation: run the agent with its tools over examples and score the answers.

:func:`evaluate` is the Python call behind ``appo eval`` and the trainer's periodic validation: it
rolls out ``n`` independent samples per example (greedy by default) through the same agent loop the
trainer uses, scores them with the reward function, and reports per-benchmark means of the reward's
metrics (``acc``; ``em`` and ``f1`` on QA), tool calls per question and the truncation rate.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from appo.agent import LoopLimits, RolloutContext, StrategyConfig, prompt_specs, run_strategy
from appo.engine.base import SamplingParams
from appo.rewards.base import RewardFn
from appo.types import Example


@dataclass(frozen=True)
class EvalRow:
    """One scored sample."""

    id: str
    """Example id."""
    source: str
    """Benchmark / data source name."""
    score: float
    """Reward."""
    metrics: dict
    """Reward metrics (acc, em, f1, format_ok, ...)."""
    tool_calls: int
    """Tool calls the model made."""
    stop_reason: str
    """Why the rollout ended."""
    response: str
    """Decoded response (model text and tool results)."""


@dataclass(frozen=True)
class EvalResult:
    """Per-source summaries and every scored row."""

    summary: dict[str, dict[str, float]]
    """source -> {n, score, acc, em, f1, tool_calls, truncation_rate, ...}; ``all`` pools every row."""
    rows: list[EvalRow] = field(default_factory=list)
    """Every sample, in example order."""

    def to_json(self, path: str | Path) -> Path:
        """Write the summary and rows as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"summary": self.summary, "rows": [asdict(r) for r in self.rows]}
        path.write_text(json.dumps(payload, indent=1, ensure_ascii=False))
        return path


def summarize(rows: Sequence[EvalRow]) -> dict[str, dict[str, float]]:
    """Means per source (and ``all``): score, every reward metric a row defines, tool calls, truncations."""
    by_source: dict[str, list[EvalRow]] = defaultdict(list)
    for r in rows:
        by_source[r.source].append(r)
        by_source["all"].append(r)
    out = {}
    for source, rs in by_source.items():
        sums: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            for k, v in r.metrics.items():
                sums[k].append(float(v))
        out[source] = {
            "n": float(len(rs)),
            "score": sum(r.score for r in rs) / len(rs),
            **{k: sum(v) / len(v) for k, v in sorted(sums.items())},
            "tool_calls": sum(r.tool_calls for r in rs) / len(rs),
            "truncation_rate": sum(r.stop_reason == "max_length" for r in rs) / len(rs),
        }
    return out


def evaluate(
    engine,
    tokenizer,
    examples: Sequence[Example],
    *,
    reward_fn: RewardFn,
    tools: Sequence,
    protocol: str = "tags",
    params: SamplingParams = SamplingParams(temperature=0.0, max_new_tokens=512),
    limits: LoopLimits = LoopLimits(),
    n: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    system_prompt: str | None = None,
    on_batch: Callable[[int, int, dict], None] | None = None,
) -> EvalResult:
    """Roll out ``n`` samples per example with ``tools`` and score them with ``reward_fn``.

    Examples go through the engine ``batch_size`` prompts at a time (one ``independent`` strategy
    call each, seeded ``seed + batch index``). ``on_batch(done, total, running_summary)`` is called
    after each batch (progress displays). Greedy decoding (temperature 0) makes ``n > 1`` pointless;
    pass a temperature for pass@k-style sampling. Leaves out: pass@k estimators, per-token dumps.
    """
    if not examples:
        raise ValueError("evaluate() got no examples; check the benchmark names / --limit")
    rows: list[EvalRow] = []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start : start + batch_size])
        ctx = RolloutContext.create(engine, tokenizer, protocol, tools, params, limits,
                                    seed=seed + start // batch_size, key_prefix=f"eval{start}/")
        prompts = prompt_specs(ctx, chunk, range(start, start + len(chunk)), system_prompt=system_prompt)
        out = run_strategy("independent", ctx, prompts, StrategyConfig(n_total=n, n_initial=n))
        rollouts = out.rows
        scored = reward_fn([chunk[r.group] for r in rollouts], [r.response_text for r in rollouts])
        for r, s in zip(rollouts, scored):
            ex = chunk[r.group]
            rows.append(EvalRow(id=ex.id, source=ex.data_source, score=float(s.score), metrics=dict(s.metrics),
                                tool_calls=r.num_tool_calls, stop_reason=r.stop_reason, response=r.response_text))
        if on_batch is not None:
            on_batch(min(start + batch_size, len(examples)), len(examples), summarize(rows)["all"])
    return EvalResult(summary=summarize(rows), rows=rows)


def format_table(summary: dict[str, dict[str, float]]) -> str:
    """A plain-text table of a summary: one line per source in the summary's order, ``all`` last."""
    cols = ["n", "acc", "em", "f1", "score", "tool_calls", "truncation_rate"]
    names = [k for k in summary if k != "all"] + (["all"] if "all" in summary else [])
    width = max([len(n) for n in names] + [9])
    lines = [f"{'benchmark':<{width}} " + " ".join(f"{c:>15}" for c in cols)]
    for name in names:
        s = summary[name]
        cells = []
        for c in cols:
            v = s.get(c)
            cells.append(f"{'-':>15}" if v is None or (isinstance(v, float) and math.isnan(v))
                         else f"{int(v):>15d}" if c == "n" else f"{v:>15.3f}")
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)


DEFAULT_EVAL_TOOLS = ("python", "search")
"""Tools given to the agent by :func:`evaluate_benchmarks` unless told otherwise (search: the recorded
web-search cache bundled in ``data/search``)."""


def evaluate_benchmarks(
    model: str,
    benchmarks: Sequence[str],
    *,
    limit: int | None = None,
    tools: Sequence = DEFAULT_EVAL_TOOLS,
    reward: str = "default",
    protocol: str = "tags",
    system_prompt: str | None = None,
    max_response_tokens: int = 1024,
    max_tool_calls: int = 3,
    temperature: float = 0.0,
    n: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    on_batch: Callable[[str, int, int, dict], None] | None = None,
) -> EvalResult:
    """Load ``model`` (folder, cached hub id, GGUF file or alias) and evaluate it with tools on each
    benchmark (names, or dataset files / ``proc:`` specs), ``limit`` (>= 1; None: all) examples each. The Python call
    behind ``appo eval``. ``system_prompt``: None keeps the data's own or the protocol's default; the
    names in :data:`appo.prompts.SYSTEM_PROMPTS` (``reference``, ``fewshot``) or literal text."""
    from appo.engine.hf import HFEngine
    from appo.models.loading import load_model_and_tokenizer
    from appo.prompts import resolve_system_prompt

    check_benchmark_args(benchmarks, limit)
    lm, tokenizer = load_model_and_tokenizer(model, device=device)
    engine = HFEngine(lm, tokenizer, max_batch_size=batch_size)

    def run_one(examples, reward_fn, built, params, limits, cb):
        return evaluate(engine, tokenizer, examples, reward_fn=reward_fn, tools=built, protocol=protocol,
                        params=params, limits=limits, n=n, batch_size=batch_size, seed=seed,
                        system_prompt=resolve_system_prompt(system_prompt, built, protocol), on_batch=cb)

    return run_benchmarks(benchmarks, run_one, limit=limit, tools=tools, reward=reward,
                          max_response_tokens=max_response_tokens, max_tool_calls=max_tool_calls,
                          temperature=temperature, seed=seed, on_batch=on_batch)


def check_benchmark_args(benchmarks: Sequence[str], limit: int | None) -> None:
    """Refuse an empty benchmark list or a ``limit`` that is not an integer >= 1 (None: every example)."""
    if not benchmarks:
        raise ValueError("no benchmarks to evaluate; name at least one (`appo list benchmarks` lists them)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be an integer >= 1, or None for every example")


def run_benchmarks(benchmarks: Sequence[str], run_one: Callable, *, limit: int | None, tools: Sequence, reward: str,
                   max_response_tokens: int, max_tool_calls: int, temperature: float, seed: int,
                   on_batch: Callable[[str, int, int, dict], None] | None) -> EvalResult:
    """The benchmark loop shared by :func:`evaluate_benchmarks` (a local model) and
    :func:`appo.serve.client.evaluate_endpoint_benchmarks` (an endpoint): build the tools (``search`` over
    the benchmarks' own corpus when they ship one), the reward, sampling params and loop limits once; per
    benchmark load ``limit`` examples and call ``run_one(examples, reward_fn, tools, params, limits,
    progress)``, which returns an :class:`EvalResult`; close the tools; summarise all rows."""
    from appo.data.sources import load_examples, write_task_corpus
    from appo.rewards import get_reward
    from appo.tools.registry import build_tools

    specs = list(tools)
    if "search" in specs:
        import tempfile

        corpus = write_task_corpus(benchmarks, Path(tempfile.mkdtemp(prefix="appo-eval-")) / "corpus.jsonl")
        if corpus is not None:
            specs[specs.index("search")] = {"name": "search", "backend": "bm25", "corpus": str(corpus), "top_k": 2}
    built = build_tools(specs)
    reward_fn = get_reward(reward)
    params = SamplingParams(temperature=temperature, max_new_tokens=max_response_tokens)
    limits = LoopLimits(max_tool_calls=max_tool_calls, max_response_tokens=max_response_tokens)
    rows: list[EvalRow] = []
    try:
        for name in benchmarks:
            examples = load_examples([name], "test", limit or -1, seed)
            examples = examples[:limit] if limit is not None else examples
            if not examples:
                raise ValueError(f"benchmark {name!r} has no examples to evaluate; check the file or spec")
            cb = (lambda done, total, s, _n=name: on_batch(_n, done, total, s)) if on_batch else None
            rows.extend(run_one(examples, reward_fn, built, params, limits, cb).rows)
    finally:
        for t in built:
            t.close()
    return EvalResult(summary=summarize(rows), rows=rows)
