"""``appo perf``: our engine and trainer against ``model.generate`` and TRL, side by side in one run.

:func:`run_bench` is the Python call behind ``appo perf`` (and ``perf/appo_bench.py``). It
measures, on the same models, prompts, lengths and seeds, each figure as min/median/max over
``repeats`` interleaved repeats and as a speedup (> 1 = ours better):

=========  =====================================================================  ===================
section    figure                                                                 target
=========  =====================================================================  ===================
rollout    tokens/s of ``HFEngine.generate`` vs ``model.generate``, batch 1/8/32   >= 3x
decode     bare-forward step time / our decode step time                          >= 0.7
branching  K forks with KV reuse vs the same forks re-prefilled, P:C 1:1 and 4:1  >= 2x at 1:1
training   old-log-prob and update tokens/s vs TRL's; padding of both layouts     >= 1.2x
rl_step    one RL step, ours (grpo, appo) vs TRL ``GRPOTrainer``, two shapes,     <= 0.7x (TRL's)
           gradient checkpointing equal on both sides (off, and/or on)
cli_step   ``appo train`` vs ``Trainer.train_step``, fresh processes, at TRL's shape -
memory     peak RSS of a 32 x 512 rollout in a fresh process                      < 4 GiB
serve      ``appo serve`` over loopback: req/s, p50/p99 latency, 1/8/32 clients,   (none; vs a baseline
           streaming off/on (:mod:`~appo.perf.serve_load`)                       endpoint if given)
vllm       tokens/s of VLLMEngine (vLLM CPU) vs HFEngine, B=32/128, plain and      (measured, no target)
           with forks (skipped where vLLM does not import: run from .venv-vllm)
=========  =====================================================================  ===================

Every figure records its peak RSS (per contender), and the result records the machine (CPU, cores,
torch/transformers/trl versions), the thread settings and the load average before and after each
section. See ``docs/perf.md`` for a full run and what limits each figure. The sections' modules:
:mod:`~appo.perf.rollout`, :mod:`~appo.perf.branching`, :mod:`~appo.perf.training`,
:mod:`~appo.perf.rl_step`, :mod:`~appo.perf.memory`; shared timing in :mod:`~appo.perf.harness`.

May import: :mod:`appo.config`, :mod:`appo.data`, :mod:`appo.engine`, :mod:`appo.models`, :mod:`appo.prompts`,
:mod:`appo.rewards`, :mod:`appo.train`, :mod:`appo.types`. Nothing imports it but the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SECTIONS = ("rollout", "decode", "branching", "training", "rl_step", "cli_step", "serve", "vllm", "memory")
"""All sections, in the order they run."""


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one model's figures."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    """Rollout batch sizes."""
    new_tokens: int = 64
    """New tokens per row in the rollout figures."""
    prompt_len: int = 48
    """Rollout prompts have lengths in ``[prompt_len/2, prompt_len]``."""
    decode_batches: tuple[int, ...] = (1, 8, 32)
    """Batch sizes of the decode-bound figures."""
    decode_context: int = 128
    """Context length before the timed decode steps."""
    decode_steps: int = 32
    """Timed decode steps."""
    branches: int = 8
    """K forks in the branching figures."""
    fork_prefix: int = 256
    """Prefix length P of each fork (the continuation is P / ratio)."""
    train_prompts: int = 4
    """Prompts of the training figures' batch (x ``rows_per_prompt`` rows)."""
    train_max_response: int = 128
    """Longest response of the training batch."""
    rows_per_prompt: int = 8
    """Rows per prompt (training batch and RL step)."""
    micro_rows: int = 8
    """Rows per forward/backward, both sides."""
    rl_prompts: int = 2
    """Prompts per RL step."""
    rl_max_response: int = 64
    """Longest response in the RL step."""
    rl_trl_prompts: int = 4
    """Prompts per RL step at TRL's single-process shape (x ``rows_per_prompt`` rows, no accumulation)."""
    rl_trl_max_response: int = 64
    """Longest response at TRL's shape."""
    cli_steps: int = 4
    """Steps per process of the ``cli_step`` figure (the first is a warm-up)."""
    vllm_batches: tuple[int, ...] = (32, 128)
    """Rows per call of the vLLM-vs-HFEngine figures (:mod:`appo.perf.vllm_rollout`)."""


SIZES = {
    "tiny": Sizes(),
    "smollm2-135m-instruct": Sizes(new_tokens=32, decode_batches=(1, 8), decode_steps=16, fork_prefix=128,
                                   train_prompts=1, train_max_response=64, rl_prompts=1, rl_max_response=48,
                                   rl_trl_prompts=2, rl_trl_max_response=32),
}
"""Default sizes per model; any other model gets the SmolLM2 sizes."""

SMOKE = Sizes(batch_sizes=(1, 4), new_tokens=4, prompt_len=16, decode_batches=(2,), decode_context=16, decode_steps=4,
              branches=2, fork_prefix=24, train_prompts=1, train_max_response=8, rows_per_prompt=4, micro_rows=4,
              rl_prompts=1, rl_max_response=8, rl_trl_prompts=1, rl_trl_max_response=8, cli_steps=2,
              vllm_batches=(4,))
"""Seconds-long sizes for ``--smoke`` (schema check, not a measurement)."""


@dataclass(frozen=True)
class BenchOptions:
    """What :func:`run_bench` runs."""

    models: tuple[str, ...] = ("tiny", "smollm2-135m-instruct")
    """Models: ``tiny`` (built locally) and/or names :func:`appo.models.loading.load_model_and_tokenizer` takes."""
    threads: tuple[int, ...] = (1, 2)
    """torch intra-op thread counts; rollout/decode/branching/training run at each, rl_step and memory at the first."""
    sections: tuple[str, ...] = SECTIONS
    """Sections to run (a subset of :data:`SECTIONS`)."""
    repeats: int = 3
    """Recorded repeats per figure (after one warm-up)."""
    with_trl: bool = True
    """Compare against TRL where it is installed (figures are recorded as skipped where it is not)."""
    smoke: bool = False
    """Seconds-long sizes, the first model and the first thread count only: for tests (numbers mean nothing)."""
    rl_shapes: tuple[str, ...] = ("accum", "trl")
    """RL-step shapes: ``accum`` (micro-batches of ``micro_rows``, gradient accumulation) and/or ``trl``
    (TRL's single-process shape: every row of the step in one micro-batch)."""
    gradient_checkpointing: tuple[bool, ...] = (False,)
    """RL-step gradient checkpointing, the same on both sides (TRL's and ours); one figure per value. TRL's own
    default is on; off is the default here because it is ours."""
    memory_rows: int = 32
    """Rows of the memory figure's rollout."""
    memory_tokens: int = 512
    """New tokens per row of the memory figure."""
    sizes: dict = field(default_factory=dict)
    """Per-model :class:`Sizes` overriding :data:`SIZES`."""
    serve_clients: tuple[int, ...] = (1, 8, 32)
    """Concurrent clients of the ``serve`` load test."""
    serve_baseline_url: str | None = None
    """Another OpenAI-compatible server (``http://host:port/v1``) serving the same model as ``bench`` (or
    ``serve_baseline_model``): the ``serve`` load runs against it too, interleaved (e.g. ``vllm serve``)."""
    serve_baseline_model: str | None = None
    """The model id the baseline endpoint serves."""


def _sizes(opts: BenchOptions, model: str) -> Sizes:
    if opts.smoke:
        return SMOKE
    return opts.sizes.get(model) or SIZES.get(model) or SIZES["smollm2-135m-instruct"]


def run_bench(opts: BenchOptions = BenchOptions(), progress=print, on_section=None) -> dict:
    """Run the benchmark; returns ``{"machine", "options", "figures", "sections", "started", "seconds"}``.

    ``figures`` is a list of records (see :func:`appo.perf.harness.figure`); a figure that could not run
    (TRL missing) has ``skipped`` with the reason. ``progress(str)`` gets one line per figure;
    ``on_section(result)`` (if given) gets the partial result after every section, so a long run that
    dies late keeps what it measured.
    """
    import torch

    from appo.perf import harness
    from appo.perf.models import load_bench_model
    from appo.perf.trl_side import trl_available

    bad_shapes = [x for x in opts.rl_shapes if x not in ("accum", "trl")]
    if bad_shapes:
        raise ValueError(f"unknown RL-step shapes {bad_shapes}; choose from accum, trl")
    bad = [s for s in opts.sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"unknown bench sections {bad}; choose from {', '.join(SECTIONS)}")
    if opts.repeats < 1 or not opts.threads or min(opts.threads) < 1:
        raise ValueError(f"repeats={opts.repeats} and threads={opts.threads} must be >= 1")
    no_trl = None if opts.with_trl else "disabled (with_trl=False)"
    no_trl = no_trl or trl_available()
    models = opts.models[:1] if opts.smoke else opts.models
    threads = opts.threads[:1] if opts.smoke else opts.threads
    t_start = time.time()
    result = {"machine": harness.machine_record(), "options": _jsonable(opts),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "figures": [], "sections": [], "trl_skipped": no_trl}

    def add(figs, section, model, t, load_before):
        for f in figs:
            f.setdefault("details", {})
            result["figures"].append(f)
            progress(format_line(f))
        result["sections"].append({"section": section, "model": model, "threads": t, "load_before": load_before,
                                   "load_after": harness.load_average()})
        result["seconds"] = round(time.time() - t_start, 1)
        if on_section is not None:
            on_section(result)

    for model_name in models:
        s = _sizes(opts, model_name)
        micro = [x for x in ("rollout", "decode", "branching", "training") if x in opts.sections]
        if micro:
            model, tok = load_bench_model(model_name)
            for t in threads:
                torch.set_num_threads(t)
                for section in micro:
                    load = harness.load_average()
                    if section == "rollout":
                        from appo.perf.rollout import rollout_figures

                        figs = rollout_figures(model, tok, model_name, t, s.batch_sizes, s.new_tokens, s.prompt_len,
                                               opts.repeats)
                    elif section == "decode":
                        from appo.perf.rollout import decode_bound_figures

                        figs = decode_bound_figures(model, tok, model_name, t, s.decode_batches, s.decode_context,
                                                    s.decode_steps, opts.repeats)
                    elif section == "branching":
                        from appo.perf.branching import branching_figures

                        figs = branching_figures(model, tok, model_name, t, s.branches, s.fork_prefix, (1, 4),
                                                 opts.repeats)
                    else:
                        from appo.perf.training import training_figures

                        figs = training_figures(model, tok, model_name, t, prompts=s.train_prompts,
                                                rows_per_prompt=s.rows_per_prompt, max_response=s.train_max_response,
                                                micro_rows=s.micro_rows, repeats=opts.repeats, with_trl=no_trl is None)
                        if no_trl:
                            figs.append(harness.skipped("training", f"{model_name} t{t} TRL side", no_trl))
                    add(figs, section, model_name, t, load)
            del model, tok
        if "rl_step" in opts.sections:
            load = harness.load_average()
            if no_trl:
                add([harness.skipped("rl_step", f"{model_name} vs TRL", no_trl)], "rl_step", model_name, threads[0],
                    load)
            else:
                from appo.perf.rl_step import rl_step_figures

                for shape in opts.rl_shapes:
                    for ckpt in opts.gradient_checkpointing:
                        load = harness.load_average()
                        prompts, max_resp, micro = ((s.rl_prompts, s.rl_max_response, s.micro_rows)
                                                    if shape == "accum" else
                                                    (s.rl_trl_prompts, s.rl_trl_max_response,
                                                     s.rl_trl_prompts * s.rows_per_prompt))
                        add(rl_step_figures(model_name, threads[0], prompts=prompts, rows=s.rows_per_prompt,
                                            max_response=max_resp, micro_rows=micro, repeats=opts.repeats,
                                            shape=shape, gradient_checkpointing=ckpt),
                            "rl_step", model_name, threads[0], load)
        if "cli_step" in opts.sections:
            from appo.perf.cli_step import cli_step_figures

            load = harness.load_average()
            add(cli_step_figures(model_name, threads[0], prompts=s.rl_trl_prompts, rows=s.rows_per_prompt,
                                 max_response=s.rl_trl_max_response, micro_rows=s.rl_trl_prompts * s.rows_per_prompt,
                                 steps=s.cli_steps, rounds=1 if opts.smoke else opts.repeats,
                                 progress=progress), "cli_step", model_name, threads[0], load)
        if "serve" in opts.sections:
            from appo.perf.models import model_path
            from appo.perf.serve_load import serve_figures

            load = harness.load_average()
            add(serve_figures(model_name, model_path(model_name), threads[0],
                              (1, 2) if opts.smoke else opts.serve_clients, requests_per_client=1 if opts.smoke else 4,
                              max_tokens=4 if opts.smoke else 32, repeats=opts.repeats,
                              baseline_url=opts.serve_baseline_url, baseline_model=opts.serve_baseline_model),
                "serve", model_name, threads[0], load)
        if "vllm" in opts.sections:  # both engines at the largest thread count; each figure saved as it comes
            from appo.perf.vllm_rollout import iter_vllm_rollout_figures

            load = harness.load_average()
            for fig in iter_vllm_rollout_figures(model_name, threads[-1], s.vllm_batches, s.new_tokens, s.prompt_len,
                                                 repeats=opts.repeats):
                add([fig], "vllm", model_name, threads[-1], load)
                load = harness.load_average()
    if "memory" in opts.sections:
        from appo.perf.memory import memory_figure

        name = "smollm2-135m-instruct" if "smollm2-135m-instruct" in models else models[0]
        rows, tokens = (2, 4) if opts.smoke else (opts.memory_rows, opts.memory_tokens)
        load = harness.load_average()
        add([memory_figure(name, rows, tokens, threads[0])], "memory", name, threads[0], load)
    result["seconds"] = round(time.time() - t_start, 1)
    return result


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _num(x, unit: str) -> str:
    if x is None:
        return "-"
    if unit.startswith("s"):
        return f"{x * 1000:.1f}ms" if x < 1 else f"{x:.2f}s"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def format_line(f: dict) -> str:
    """One table line for a figure record."""
    if "skipped" in f:
        return f"{f['section']:<9} {f['name']:<42} skipped: {f['skipped']}"
    if "check" in f:  # a correctness check recorded beside the figures (e.g. vLLM's log-probs vs ours)
        return (f"{f['section']:<9} {f['name']:<42} {f['check']}: max |diff| {f['max_abs_diff']:.2e}, "
                f"mean {f['mean_abs_diff']:.2e} over {f['tokens']} tokens")
    o, b, u = f["ours"], f.get("baseline"), f["unit"]
    ours = f"{_num(o['median'], u)} [{_num(o['min'], u)}-{_num(o['max'], u)}]"
    base = f"{_num(b['median'], u)} [{_num(b['min'], u)}-{_num(b['max'], u)}]" if b else "-"
    sp = f["speedup"]
    speed = "-" if sp is None else f"{sp:.2f}x"
    if sp is not None and f.get("speedup_min") is not None:
        speed += f" [{f['speedup_min']:.2f}-{f['speedup_max']:.2f}]"
    met = {True: "met", False: "MISSED", None: ""}[f["met"]]
    rss = f"{f.get('ours_peak_rss_mb') or 0:.0f}/{f.get('baseline_peak_rss_mb') or 0:.0f}"
    line = (f"{f['section']:<9} {f['name']:<42} {u:<8} {ours:<28} {base:<28} {speed:<20} "
            f"{f['target_text']:<34} {met:<6} {rss}")
    if f["section"] == "serve":
        from appo.perf.serve_load import format_latencies

        line += "\n" + format_latencies(f)
    return line


def format_table(result: dict) -> str:
    """The whole result as a fixed-width table (plus the machine line)."""
    m = result["machine"]
    head = (f"{'section':<9} {'figure':<42} {'unit':<8} {'ours median [min-max]':<28} "
            f"{'baseline median [min-max]':<28} {'speedup [min-max]':<20} {'target':<34} {'':<6} "
            "peak RSS MiB ours/base")
    lines = [f"machine: {m['cpu']}, {m['logical_cores']} cores, torch {m['torch']}, transformers {m['transformers']}, "
             f"trl {m['trl']}", head]
    lines += [format_line(f) for f in result["figures"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (``appo perf`` and ``perf/appo_bench.py``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="appo perf", description=__doc__.split("\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    return run_from_args(args)


def add_arguments(ap) -> None:
    """The ``appo perf`` options."""
    ap.add_argument("--models", default="tiny,smollm2-135m-instruct",
                    help="comma-separated: tiny, smollm2-135m-instruct, a folder")
    ap.add_argument("--threads", default="1,2",
                    help="comma-separated torch thread counts (rl_step/memory use the first)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--repeats", type=int, default=3, help="recorded repeats per figure (>= 3 for a real run)")
    ap.add_argument("--rl-shapes", default="accum,trl",
                    help="comma-separated RL-step shapes: accum (gradient accumulation), "
                         "trl (TRL's single-process shape)")
    ap.add_argument("--gradient-checkpointing", default="off",
                    help="RL step: off, on or off,on; the same setting on both sides (TRL's default is on)")
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL comparisons")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds-long sizes, first model and thread count only (schema check, numbers mean nothing)")
    ap.add_argument("--json", default="runs/bench/bench.json", help="where to write the JSON result")
    ap.add_argument("--serve-baseline-url", default=None,
                    help="serve section: also load this OpenAI-compatible server (same model), e.g. vllm serve")
    ap.add_argument("--serve-baseline-model", default=None, help="the model id the baseline endpoint serves")


def run_from_args(args) -> int:
    """Run :func:`run_bench` from parsed ``add_arguments`` options; print the table, write the JSON."""
    opts = BenchOptions(models=tuple(m for m in args.models.split(",") if m),
                        threads=tuple(int(t) for t in args.threads.split(",") if t),
                        sections=tuple(s for s in args.sections.split(",") if s), repeats=args.repeats,
                        with_trl=not args.no_trl, smoke=args.smoke,
                        rl_shapes=tuple(x for x in args.rl_shapes.split(",") if x),
                        serve_baseline_url=getattr(args, "serve_baseline_url", None),
                        serve_baseline_model=getattr(args, "serve_baseline_model", None))
    path = Path(args.json)
    ckpt = [x for x in args.gradient_checkpointing.split(",") if x]
    if not ckpt or set(ckpt) - {"off", "on"}:
        print(f"appo perf: --gradient-checkpointing {args.gradient_checkpointing!r}: give off, on or off,on",
              file=sys.stderr)
        return 2
    opts = dataclasses.replace(opts, gradient_checkpointing=tuple(x == "on" for x in ckpt))
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(result: dict) -> None:
        result["argv"] = sys.argv[1:]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=float))
        tmp.replace(path)

    result = run_bench(opts, progress=lambda line: print(line, flush=True), on_section=write)
    write(result)
    print(format_table(result))
    print(f"wrote {path} ({result['seconds']}s)")
    return 0
