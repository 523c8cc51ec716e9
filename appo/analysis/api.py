"""``appo analyze``: :func:`analyze` (load a model and data, then measure) and :func:`analyze_examples`
(measure with an engine you already have), both returning an :class:`AnalysisResult`.

What is measured is in :mod:`appo.analysis.montecarlo`; which positions and how a re-draw forks in
:mod:`appo.analysis.positions`; the statistics in :mod:`appo.analysis.stats`; the files in
:mod:`appo.analysis.export`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from appo.analysis.export import write_dump, write_json
from appo.analysis.montecarlo import Estimate, LogpFn, estimate_influence
from appo.analysis.plots import plot_along_sequence, plot_vs_scores
from appo.analysis.records import AnalysisConfig, PositionRecord, RolloutRecord
from appo.analysis.stats import Summary, format_summary, summarize
from appo.rewards.base import RewardFn
from appo.types import Example


@dataclass(frozen=True)
class AnalysisResult:
    """Everything an analysis measured, and where it wrote it."""

    config: AnalysisConfig
    """The knobs used."""
    positions: tuple[PositionRecord, ...]
    """Every analysed position, ordered by (prompt, rollout, t)."""
    rollouts: tuple[RolloutRecord, ...]
    """Every analysed rollout."""
    summary: Summary
    """Correlations, precision@K, proximity shares, per-region influence."""
    effect_summary: Summary | None
    """The same statistics with the token effect |Q - V| in place of influence (``paired`` runs), else None."""
    branches_run: int
    """Continuations run (the budget: sum of positions x M)."""
    omega_constant: bool
    """True without an anchor model: Omega is 1 everywhere, BS = Z(H) and Omega ranks nothing."""
    meta: dict = field(default_factory=dict)
    """Model, anchor, data spec, examples (JSON-ready; part of ``analysis.json``)."""
    timing: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase (``timing.json``; the only output that differs between equal runs)."""
    files: dict[str, str] = field(default_factory=dict)
    """Name -> path of every file written (empty when no ``out_dir`` was given)."""

    def to_dict(self) -> dict:
        """The content of ``analysis.json`` (deterministic for a seed: no timing, no paths)."""
        return {"config": asdict(self.config), "meta": self.meta, "omega_constant": self.omega_constant,
                "branches_run": self.branches_run, "rollouts": [r.to_dict() for r in self.rollouts],
                "positions": [p.to_dict() for p in self.positions]}

    def table(self) -> str:
        """The summary table(s) as printed by ``appo analyze``."""
        text = format_summary(self.summary, header=[*_header(self), "", "target: influence |E[R | re-draw t] - R|"])
        if self.effect_summary is not None:
            text += "\n\n" + format_summary(self.effect_summary, target="effect",
                                             header=["target: token effect |Q(s_t, a_t) - V(s_t)| (paired)"])
        return text

    def summaries_dict(self) -> dict:
        """The content of ``summary.json``: ``influence`` and ``token_effect`` (None unless paired)."""
        return {"influence": self.summary.to_dict(),
                "token_effect": self.effect_summary.to_dict() if self.effect_summary is not None else None}


def _header(res: AnalysisResult) -> list[str]:
    c = res.config
    prompts = len({r.group for r in res.rollouts})
    lines = [f"influence analysis: {prompts} prompt(s) x {c.rollouts_per_prompt} rollout(s); "
             f"{len(res.positions)} positions x M={c.samples_per_position} -> {res.branches_run} continuations"]
    if res.omega_constant:
        lines.append("Omega: constant (no anchor model), so BS = Z(H) and omega ranks nothing")
    rewards = [r.reward for r in res.rollouts]
    if rewards:
        lines.append(f"rollout reward: mean {sum(rewards) / len(rewards):.3f}, "
                     f"distinct values {len(set(rewards))}")
    return lines


def score_lists(positions: Sequence[PositionRecord]) -> dict[str, list]:
    """Per score of :data:`~appo.analysis.stats.SCORES`, its value at each position (None where missing)."""
    ps = positions
    return {"entropy": [p.entropy for p in ps], "omega": [p.omega for p in ps], "bs": [p.bs for p in ps],
            "appo_order": [None if p.bs is None else p.bs - (0.0 if p.strict else 1e6) for p in ps],
            "surprisal": [-p.logprob for p in ps], "earliness": [1.0 - p.rel_position for p in ps]}


def _summary(est: Estimate, config: AnalysisConfig, effect: bool = False) -> Summary:
    ps = est.positions
    target = [p.token_effect for p in ps] if effect else [p.influence for p in ps]
    scores = score_lists(ps)
    for name in (ps[0].variant_scores if ps else {}):  # the Omega variants (docs/algorithm.md 3.1)
        scores[name] = [p.variant_scores.get(name) for p in ps]
    return summarize(target, scores, [p.tool_distance for p in ps], [p.region for p in ps], k=config.precision_k,
                     near_tool_tokens=config.near_tool_tokens,
                     standard_error=[p.effect_standard_error if effect else p.standard_error for p in ps],
                     rollout=[(p.group, p.rollout) for p in ps], bootstrap=config.bootstrap, seed=config.seed,
                     rel_position=[p.rel_position for p in ps])


def analyze_examples(
    engine,
    tokenizer,
    examples: Sequence[Example],
    *,
    tools: Sequence,
    reward_fn: RewardFn,
    config: AnalysisConfig = AnalysisConfig(),
    current_logp_fn: LogpFn | None = None,
    anchor_logp_fn: LogpFn | None = None,
    out_dir: str | Path | None = None,
    report: bool = True,
    meta: dict | None = None,
    clock: Callable[[], float] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> AnalysisResult:
    """Measure the influence of positions in rollouts of ``examples`` sampled from ``engine``.

    Prompts are built by ``config.protocol`` with ``config.system_prompt``; rollouts, re-draws and
    rewards as in :mod:`appo.analysis.montecarlo`. With ``out_dir`` every file of
    :mod:`appo.analysis.export` is written (``report``: also the HTML report). Omega needs both log-prob
    functions (current policy and anchor); without them it is constant and the result says so.
    ``on_progress(phase, done, total)`` reports the rollouts and each batch of continuations.
    """
    from appo.agent.protocols import build_prompt_ids
    from appo.prompts import resolve_system_prompt

    if not examples:
        raise ValueError("analyze: no examples; check the data spec and prompts")
    clock = clock or time.perf_counter
    t0 = clock()
    system = resolve_system_prompt(config.system_prompt, tools, config.protocol)  # names a user's tools too
    prompt_ids = [build_prompt_ids(config.protocol, ex, tokenizer, tools, system) for ex in examples]
    est = estimate_influence(engine, tokenizer, examples, prompt_ids, tools=tools, reward_fn=reward_fn,
                             config=config, current_logp_fn=current_logp_fn, anchor_logp_fn=anchor_logp_fn,
                             clock=clock, on_progress=on_progress)
    meta = {**(meta or {}), "examples": [ex.id for ex in examples]}
    res = AnalysisResult(config=config, positions=tuple(est.positions), rollouts=tuple(est.rollouts),
                         summary=_summary(est, config),
                         effect_summary=_summary(est, config, effect=True) if config.paired else None,
                         branches_run=est.branches_run,
                         omega_constant=est.omega_constant, meta=meta, timing=dict(est.timing))
    if out_dir is not None:
        res = _write(res, est, examples, tokenizer, Path(out_dir), report, clock)
    timing = {**res.timing, "total_s": clock() - t0}
    return replace(res, timing={k: round(v, 3) for k, v in timing.items()})


def _write(res: AnalysisResult, est: Estimate, examples, tokenizer, out: Path, report: bool, clock) -> AnalysisResult:
    t0 = clock()
    out.mkdir(parents=True, exist_ok=True)
    files = {"analysis": write_json(out / "analysis.json", res.to_dict()),
             "summary_json": write_json(out / "summary.json", res.summaries_dict())}
    (out / "summary.txt").write_text(res.table() + "\n", encoding="utf-8")
    files["summary_txt"] = out / "summary.txt"
    plots = out / "plots"
    files["plot_sequence"] = plot_along_sequence(est.rows, est.positions, plots / "influence_along_sequence.png")
    files["plot_scores"] = plot_vs_scores(est.positions, plots / "influence_vs_scores.png", est.omega_constant)
    files["dump"] = write_dump(out, est.rows, examples, est.rewards, est.positions, tokenizer,
                               extra={"analysis_summary": res.summaries_dict()})
    if report:
        from appo.report import write_report

        files["report"] = write_report(out)
    timing = {**res.timing, "outputs_s": clock() - t0}
    files["timing"] = write_json(out / "timing.json", {k: round(v, 3) for k, v in timing.items()})
    return replace(res, timing=timing, files={k: str(v) for k, v in files.items()})


def _examples(data: str | Sequence[Example], prompts: int, split: str, data_seed: int) -> list[Example]:
    from appo.data.sources import load_examples

    if isinstance(data, (str, Path)):
        examples = load_examples([str(data)], split, prompts, data_seed)
    else:
        examples = list(data)
    if not examples:
        raise ValueError(f"analyze: data {data!r} gave no examples")
    return examples[:prompts]


def _tools(specs: Sequence, data: Any, work_dir: Path | None) -> list:
    from appo.data.sources import write_task_corpus
    from appo.tools.registry import build_tools

    specs = list(specs)
    if "search" in specs and isinstance(data, (str, Path)):
        work_dir = work_dir if work_dir is not None else Path(tempfile.mkdtemp(prefix="appo-analyze-"))
        corpus = write_task_corpus([str(data)], work_dir / "corpus.jsonl")
        if corpus is not None:  # a procedural task's corpus; otherwise the recorded web-search cache
            specs[specs.index("search")] = {"name": "search", "backend": "bm25", "corpus": str(corpus), "top_k": 2}
    return build_tools(specs)


def analyze(
    model: Any,
    data: str | Sequence[Example],
    *,
    prompts: int = 4,
    rollouts_per_prompt: int = 2,
    positions_per_rollout: int = 8,
    samples_per_position: int = 4,
    tools: Sequence = ("python",),
    protocol: str = "tags",
    system_prompt: str | None = None,
    reward: str | RewardFn = "default",
    anchor_model: Any = None,
    tokenizer: Any = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    split: str = "test",
    data_seed: int = 0,
    engine: Any = None,
    device: str = "cpu",
    num_threads: int | None = 1,
    report: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
    **config: Any,
) -> AnalysisResult:
    """Measure where in its rollouts a model's decisions change the outcome (the Python call behind
    ``appo analyze``).

    ``model``: a path / cached hub id / ``.gguf`` / alias (``smollm2-135m-instruct``) loaded with its
    tokenizer, or a loaded model (pass ``tokenizer``). ``data``: a benchmark name, a data file or a
    ``proc:`` task spec (its ``split`` stream, ``data_seed``), or a list of Examples; the first
    ``prompts`` examples are used. ``tools``: tool specs (``python``, ``search``: BM25 over a procedural
    task's corpus, else the recorded web-search cache). ``anchor_model`` (same forms; same tokenizer):
    Omega compares the model's teacher-forced log-probs with the anchor's; None makes Omega constant.
    ``engine``: an Engine to sample from instead of an ``HFEngine`` over ``model`` (then ``model`` may be
    None when no anchor is given). Other keywords are :class:`AnalysisConfig` fields (``max_response_tokens``,
    ``temperature``, ``precision_k``, ``near_tool_tokens``, ``batch_size``, ...). ``num_threads``: torch
    threads for the whole call (1 by default: the machine is shared). ``on_progress(phase, done, total)``:
    called after the rollouts and after each batch of continuations. Leaves out: analysis of
    continuations of continuations (depth 1), and any significance test (the summary notes the counts).
    """
    import torch

    from appo.agent import teacher_forced_logp_fn
    from appo.rewards import get_reward

    cfg = AnalysisConfig(rollouts_per_prompt=rollouts_per_prompt, positions_per_rollout=positions_per_rollout,
                         samples_per_position=samples_per_position, protocol=protocol, system_prompt=system_prompt,
                         seed=seed, **config)
    if isinstance(prompts, bool) or not isinstance(prompts, int) or prompts < 1:
        raise ValueError(f"analyze: prompts={prompts!r} must be a positive integer")
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    t0 = time.perf_counter()
    built: list = []
    try:
        lm, tok = _load(model, tokenizer, device)
        anchor, _ = _load(anchor_model, tok, device) if anchor_model is not None else (None, None)
        if anchor is not None and lm is None:
            raise ValueError("analyze: anchor_model needs model (Omega compares the two); pass the policy model")
        if tok is None:
            raise ValueError("analyze: no tokenizer; pass a model path, or tokenizer= with a loaded model or engine")
        load_s = time.perf_counter() - t0
        examples = _examples(data, prompts, split, data_seed)
        built = list(_tools(tools, data, Path(out_dir) if out_dir is not None else None))
        if engine is None:
            if lm is None:
                raise ValueError("analyze: pass model (a path or a loaded model) or engine")
            from appo.engine.hf import HFEngine

            engine = HFEngine(lm, tok, max_batch_size=cfg.batch_size, num_threads=num_threads)
        reward_fn = get_reward(reward) if isinstance(reward, str) else reward
        cur = teacher_forced_logp_fn(lm, cfg.temperature) if anchor is not None else None
        anc = teacher_forced_logp_fn(anchor, cfg.temperature) if anchor is not None else None
        meta = {"model": _name(model), "anchor_model": _name(anchor_model), "data": _name(data),
                "split": split, "data_seed": data_seed, "tools": [_name(t) for t in tools],
                "reward": _name(reward)}
        res = analyze_examples(engine, tok, examples, tools=built, reward_fn=reward_fn, config=cfg,
                               current_logp_fn=cur, anchor_logp_fn=anc, out_dir=out_dir, report=report, meta=meta,
                               on_progress=on_progress)
    finally:
        for t in built:
            t.close()
        torch.set_num_threads(threads)
    timing = {"load_s": round(load_s, 3), **res.timing}
    if out_dir is not None:
        write_json(Path(out_dir) / "timing.json", timing)
    return replace(res, timing=timing)


def _load(model: Any, tokenizer: Any, device: str):
    """(model, tokenizer): load a path-like, keep a loaded model (its tokenizer must be passed)."""
    if model is None:
        return None, tokenizer
    if isinstance(model, (str, Path)):
        from appo.models.loading import load_model_and_tokenizer

        lm, tok = load_model_and_tokenizer(model, device=device)
        if tokenizer is not None and len(tok) != len(tokenizer):
            raise ValueError(f"analyze: {model} has a {len(tok)}-token vocabulary, the policy {len(tokenizer)}; "
                             "the anchor must share the policy's tokenizer")
        return lm, tokenizer if tokenizer is not None else tok
    return model, tokenizer


def _name(x: Any) -> Any:
    if x is None or isinstance(x, (int, float)):
        return x
    if isinstance(x, (str, Path)):
        return str(x)
    if isinstance(x, (list, tuple)):
        return f"{len(x)} items"
    if isinstance(x, dict):
        return str(x.get("name", "dict"))
    return getattr(x, "name", None) or getattr(x, "__name__", None) or type(x).__name__
