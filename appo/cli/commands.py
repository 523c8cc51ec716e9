"""The handler of each ``appo`` command: ``cmd_<command>(args) -> exit code``, each a thin layer over the
documented Python call listed in :mod:`appo.cli` (arguments parsed by :mod:`appo.cli.parser`). Handlers
import what they call lazily, so ``appo --help`` stays fast."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from appo.cli_errors import INTERRUPTED


def _config(args):
    from appo.config import load_config

    return load_config(args.config, args.overrides)  # a file or a shipped config's name


def _print_config(cfg) -> int:
    import yaml

    from appo.config import config_to_dict

    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True), end="")
    return 0


def _resume_command(args, extra: tuple[str, ...], command: str | None = None) -> str:
    """The command line that resumes an interrupted run: this one (``appo <command> ...``), without its
    ``trainer.resume_*`` overrides, plus ``extra``."""
    argv = [a for a in args.argv if not a.startswith(("trainer.resume_mode=", "trainer.resume_from_path="))]
    if command is not None:
        argv = [command, *[a for a in argv[1:] if a != "--sft-first"]]
    return shlex.join(["appo", *argv, *extra])


def cmd_train(args) -> int:
    from appo.train.interrupt import TrainingInterrupted
    from appo.train.trainer import train

    cfg = _config(args)
    if args.print_config:
        return _print_config(cfg)
    try:
        result = train(cfg)
    except TrainingInterrupted as stop:
        print(f"appo train: {stop}; resume with: {_resume_command(args, stop.resume_overrides)}", file=sys.stderr)
        return INTERRUPTED
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    last = result.val.get(result.steps) or {}
    print(f"trained {result.steps} steps; run directory {result.run_dir}"
          + (f"; val acc {last['all'].get('acc', float('nan')):.3f}" if "all" in last else ""))
    return 0


def cmd_sft(args) -> int:
    from appo.train.sft_run import run_sft

    cfg = _config(args)
    if args.print_config:
        return _print_config(cfg)
    result = run_sft(cfg, progress=True)
    print(_sft_summary(result))
    return 0


def _sft_summary(result) -> str:
    """The line ``appo sft`` / ``sft-train`` end with: over several epochs the first and last epoch's mean loss;
    in one epoch the first and last step's loss (an epoch's mean against itself says nothing), with the mean."""
    m = result.metrics
    epochs, steps = m["epoch_loss"], m.get("step_loss", [])
    if len(epochs) > 1 or not steps:
        loss = f"epoch loss {epochs[0]:.3f} -> {epochs[-1]:.3f}" if epochs else "no loss recorded"
    else:
        loss = f"step loss {steps[0]:.3f} -> {steps[-1]:.3f} (one epoch, mean {epochs[0]:.3f})"
    return f"SFT on {result.num_examples} demonstrations, {m.get('steps', len(steps))} steps: {loss}; " \
           f"model {result.model_dir}"


def cmd_sft_train(args) -> int:
    from appo.train.interrupt import TrainingInterrupted
    from appo.train.sft_run import run_sft, sft_stage_config, sft_train_config
    from appo.train.trainer import train

    cfg = _config(args)
    if args.print_config:
        return _print_config(cfg)
    sft = run_sft(sft_stage_config(cfg), progress=True)  # sft_then_train's two halves, with a line between
    print(_sft_summary(sft))
    try:
        result = train(sft_train_config(cfg, sft.model_dir))
    except TrainingInterrupted as stop:
        resume = _resume_command(args, (*stop.resume_overrides, f"model.path={sft.model_dir}"), command="train")
        print(f"appo sft-train: {stop}; resume the RL part with: {resume}", file=sys.stderr)
        return INTERRUPTED
    print(f"trained {result.steps} steps from {sft.model_dir}; run directory {result.run_dir}")
    return 0


def cmd_build_tiny(args) -> int:
    from appo.demo import build_tiny_base

    cfg = _config(args)
    out = build_tiny_base(args.out, cfg)
    print(f"tiny base model and tokenizer: {out} (next: appo sft -c {args.config or 'demo'} model.path={out} "
          f"trainer.default_local_dir={Path(out).parent / 'sft'})")
    return 0


def cmd_list(args) -> int:
    from appo.catalog import catalog, format_catalog

    print(format_catalog(catalog(args.kind)))
    return 0


def _eval_endpoint(args, benchmarks, on_batch):
    """``appo eval --endpoint URL``: the chat-level agent over an OpenAI-compatible server."""
    from appo.serve.client import evaluate_endpoint_benchmarks

    return evaluate_endpoint_benchmarks(
        args.endpoint, benchmarks, model=args.model, api_key=args.api_key, limit=args.limit,
        tools=[t for t in args.tools.split(",") if t], reward=args.reward, protocol=args.protocol,
        system_prompt=args.system_prompt, max_response_tokens=args.max_response_tokens,
        max_tool_calls=args.max_tool_calls, temperature=args.temperature, n=args.n, workers=args.batch_size,
        seed=args.seed, on_batch=on_batch)


def cmd_eval(args) -> int:
    from appo.eval import evaluate_benchmarks, format_table
    from appo.train.progress import ProgressDisplay

    benchmarks = args.benchmarks
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if args.print_config:
        import yaml

        shown = {k: v for k, v in vars(args).items() if k not in ("fn", "argv", "command", "print_config")}
        print(yaml.safe_dump({**shown, "tools": tools}, sort_keys=False), end="")
        return 0
    bars: dict[str, ProgressDisplay] = {}

    def on_batch(name, done, total, summary):
        bar = bars.setdefault(name, ProgressDisplay(total, f"eval {name}"))
        bar.update(done, advance=0, acc=summary.get("acc"), tool_calls=summary.get("tool_calls"))

    if not args.model and not args.endpoint:
        print("appo eval: error: give --model PATH (a local model) or --endpoint URL (an OpenAI-compatible server)",
              file=sys.stderr)
        return 2
    try:
        result = _eval_endpoint(args, benchmarks, on_batch) if args.endpoint else evaluate_benchmarks(
            args.model, benchmarks, limit=args.limit, tools=tools,
            reward=args.reward, protocol=args.protocol, system_prompt=args.system_prompt,
            max_response_tokens=args.max_response_tokens, max_tool_calls=args.max_tool_calls,
            temperature=args.temperature, n=args.n, batch_size=args.batch_size, seed=args.seed, device=args.device,
            on_batch=on_batch)
    finally:
        for bar in bars.values():
            bar.close()
    print(format_table(result.summary))
    out = result.to_json(args.out)
    print(f"wrote {out}")
    return 0


def cmd_report(args) -> int:
    from appo.report import write_report

    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    path = write_report(args.run_dir, steps=steps, out_dir=args.out, max_prompts=args.max_prompts)
    print(f"report: {path}")
    return 0


def cmd_demo(args) -> int:
    from appo.demo import run_demo

    run_demo(args.out, quick=args.quick, overrides=args.overrides)
    return 0


def cmd_analyze(args) -> int:
    from appo.analysis import analyze

    extra = {k: getattr(args, k) for k in ("max_response_tokens", "max_tool_calls", "temperature", "precision_k",
                                           "near_tool_tokens", "batch_size", "paired", "bootstrap")}
    if args.omega_variants is not None:
        extra["omega_variants"] = tuple(v for v in args.omega_variants.split() if v)

    def progress(phase: str, done: int, total: int) -> None:
        print(f"[analyze] {phase}: {done}/{total}", file=sys.stderr, flush=True)

    res = analyze(args.model, args.data, prompts=args.prompts, rollouts_per_prompt=args.rollouts,
                  positions_per_rollout=args.positions, samples_per_position=args.samples,
                  tools=[t for t in args.tools.split(",") if t], protocol=args.protocol,
                  system_prompt=args.system_prompt, reward=args.reward, anchor_model=args.anchor_model,
                  seed=args.seed, out_dir=args.out, split=args.split, data_seed=args.data_seed, device=args.device,
                  num_threads=args.num_threads or None, on_progress=progress, **extra)
    print(res.table())
    print(f"wall time {res.timing.get('load_s', 0) + res.timing.get('total_s', 0):.1f}s "
          + " ".join(f"{k}={v:.1f}" for k, v in res.timing.items()))
    print(f"wrote {args.out}/ (analysis.json, summary.txt, plots/, report/index.html)")
    return 0


def cmd_perf(args) -> int:
    from appo.perf import run_from_args

    return run_from_args(args)


def _int_list(text: str) -> tuple[int, ...]:
    """``0,1,2`` or ``0-9`` (inclusive) or a mix (``0-3,7``) as a tuple of ints."""
    out: list[int] = []
    for part in (p for p in text.split(",") if p):
        lo, _, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
        except ValueError:
            raise ValueError(f"--seeds {text!r}: write integers or ranges, e.g. 0,1,2 or 0-9") from None
    return tuple(out)


def cmd_study(args) -> int:
    from appo.study import StudySettings, run_study
    from appo.study.analysis import write_results
    from appo.study.runner import smoke_settings, split_variants

    try:
        settings = StudySettings(
            tasks=tuple(args.tasks.split(",")), seeds=_int_list(args.seeds), steps=args.steps,
            test_freq=args.test_freq, val_examples=args.val_examples, val_samples=args.val_samples,
            val_greedy=not args.no_greedy, final_evals=args.final_evals, ablations=not args.no_ablations,
            variants=split_variants(args.variants or ""), workers=args.workers,
            sft_examples=args.sft_examples, sft_epochs=args.sft_epochs, extra_overrides=tuple(args.overrides))
    except ValueError as e:
        print(f"appo study: {e}", file=sys.stderr)
        return 2
    if args.smoke:
        settings = smoke_settings(settings, tuple(args.overrides))

    def on_done(spec, seconds, code):
        print(f"{'done' if code == 0 else f'FAILED ({code})'}: {spec.task} {spec.variant.name} seed {spec.seed} "
              f"in {seconds / 60:.1f} min", flush=True)

    if args.report_only:
        if not Path(args.out).is_dir():
            print(f"appo study: --out {args.out} is not a folder; give the folder an earlier study wrote",
                  file=sys.stderr)
            return 2
    else:
        run_study(args.out, settings, on_done)
    doc = write_results(args.out, settings, args.doc or Path(args.out) / "results.md",
                        "appo " + shlex.join(args.argv))
    print(f"results: {doc}")
    return 0


def cmd_serve(args) -> int:
    from appo.serve.extras import require

    require(("fastapi", "uvicorn"), "serve", "appo serve")
    from appo.serve.server import serve

    serve(args.model, host=args.host, port=args.port, name=args.name, protocol=args.protocol, device=args.device,
          dtype=args.dtype, max_tokens=args.max_tokens, max_batch_size=args.max_batch_size,
          num_threads=args.num_threads or None, log_level=args.log_level, api_key=args.api_key,
          max_body_bytes=args.max_body_bytes)
    return 0


def cmd_vllm_serve(args) -> int:
    from appo.serve.vllm_serve import VLLMServeOptions, serve_vllm

    return serve_vllm(args.model, VLLMServeOptions(
        host=args.host, port=args.port, name=args.name, protocol=args.protocol, dtype=args.dtype,
        gpu_memory_utilization=args.gpu_memory_utilization, kv_cache_memory_bytes=args.kv_cache_memory_bytes,
        max_model_len=args.max_model_len, seed=args.seed, api_key=args.api_key, extra_args=tuple(args.vllm_args)))
