"""The ``appo`` command line: a thin layer over documented Python calls.

=========  ======================================================
command    Python call
=========  ======================================================
train      :func:`appo.train.trainer.train`
sft        :func:`appo.train.sft_run.run_sft`
sft-train  :func:`appo.train.sft_run.sft_then_train`
eval       :func:`appo.eval.evaluate_benchmarks`
           (``--endpoint``: :func:`appo.serve.client.evaluate_endpoint_benchmarks`)
serve      :func:`appo.serve.server.serve`
report     :func:`appo.report.write_report`
demo       :func:`appo.demo.run_demo`
build-tiny :func:`appo.demo.build_tiny_base`
bench      :func:`appo.bench.run_bench`
list       :func:`appo.catalog.catalog`
=========  ======================================================

``train`` and ``sft`` take ``--config FILE`` (or the name of a config shipped in ``appo/configs/``) and dotted overrides
(``actor.optim.lr=1e-5``), exactly as :func:`appo.config.load_config`; ``--print-config`` prints the
resolved config and runs nothing. Errors are mapped to one line and an exit code in one place
(:mod:`appo.cli_errors`): 2 for usage and input errors, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from appo import __version__
from appo.cli_errors import INTERRUPTED, describe_error, full_traceback_wanted, one_line


def _config(args) -> Config:  # noqa: F821
    from appo.config import load_config

    return load_config(args.config, args.overrides)  # a file or a shipped config's name



# ------------------------------------------------------------------------------------ argument types
def spec_list(text: str) -> list[str]:
    """Comma-separated specs, split only at commas outside brackets, braces, parentheses and quotes (so
    ``proc:arith?n_operands=[2,3]&digits=[1,2]`` stays whole); blanks dropped. Raises
    ``argparse.ArgumentTypeError`` for an empty list or unbalanced brackets/quotes."""
    items, depth, quote, cur = [], [], None, ""
    pairs = {"[": "]", "{": "}", "(": ")"}
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in pairs:
            depth.append(ch)
        elif ch in pairs.values():
            if not depth or pairs[depth.pop()] != ch:
                raise argparse.ArgumentTypeError(f"{text!r}: unbalanced {ch!r}; close every bracket of a spec")
        elif ch == "," and not depth:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    if depth or quote:
        opener = quote or depth[-1]
        raise argparse.ArgumentTypeError(f"{text!r}: unclosed {opener!r}; add {quote or pairs[opener]!r}")
    items = [i.strip() for i in [*items, cur] if i.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty list; give at least one name, e.g. gsm8k or proc:arith "
                                         "(`appo list benchmarks` lists them)")
    return items


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type); the message says what was given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1 (omit the option to use every example)")
    return value


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
    loss = result.metrics["epoch_loss"]
    print(f"SFT on {result.num_examples} demonstrations: loss {loss[0]:.3f} -> {loss[-1]:.3f}; "
          f"model {result.model_dir}")
    return 0


def cmd_sft_train(args) -> int:
    from appo.train.interrupt import TrainingInterrupted
    from appo.train.sft_run import run_sft, sft_stage_config, sft_train_config
    from appo.train.trainer import train

    cfg = _config(args)
    if args.print_config:
        return _print_config(cfg)
    sft = run_sft(sft_stage_config(cfg), progress=True)  # sft_then_train's two halves, with a line between
    loss = sft.metrics["epoch_loss"]
    print(f"SFT on {sft.num_examples} demonstrations: loss {loss[0]:.3f} -> {loss[-1]:.3f}; model {sft.model_dir}")
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


def cmd_bench(args) -> int:
    from appo.bench import run_from_args

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

    try:
        settings = StudySettings(
            tasks=tuple(args.tasks.split(",")), seeds=_int_list(args.seeds), steps=args.steps,
            test_freq=args.test_freq, val_examples=args.val_examples, val_samples=args.val_samples,
            val_greedy=not args.no_greedy, final_evals=args.final_evals, ablations=not args.no_ablations,
            variants=tuple(v for v in (args.variants or "").split(",") if v), workers=args.workers,
            sft_examples=args.sft_examples, sft_epochs=args.sft_epochs, extra_overrides=tuple(args.overrides))
    except ValueError as e:
        print(f"appo study: {e}", file=sys.stderr)
        return 2
    if args.smoke:
        settings = StudySettings(tasks=settings.tasks[:1], seeds=(0,), steps=2, test_freq=1, val_examples=4,
                                 val_samples=2, final_evals=2, ablations=False, workers=1, sft_examples=32,
                                 sft_epochs=1, variants=settings.variants,
                                 extra_overrides=("data.train_batch_size=2", "actor.ppo_mini_batch_size=2",
                                                  "rollout.n=4", "rollout.n_initial=2", *args.overrides))

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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default (booleans and None excepted), even for options without help."""

    @staticmethod
    def _shows(default) -> bool:
        return default is not None and default is not argparse.SUPPRESS and not isinstance(default, bool)

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or not self._shows(action.default) or action.required:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)".strip()
        return text

    def _format_action(self, action):
        if not (action.help or "").strip() and self._shows(action.default):
            action.help = "(default: %(default)s)"  # an option without help still shows its default
        return super()._format_action(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line usage error: ``appo eval: error: <what>; see `appo eval --help``` (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)}; see `{self.prog} --help`\n")


def cmd_serve(args) -> int:
    from appo.serve.server import serve

    serve(args.model, host=args.host, port=args.port, name=args.name, protocol=args.protocol, device=args.device,
          dtype=args.dtype, max_tokens=args.max_tokens, max_batch_size=args.max_batch_size,
          num_threads=args.num_threads or None, log_level=args.log_level)
    return 0


def _add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat, completions, tools, log-probs) "
                                     "for a model or a run's checkpoint")
    s.add_argument("model", help="model folder / hub id / .gguf / alias, a run directory (latest checkpoint), "
                                 "RUN/checkpoints/step_N or RUN/checkpoints/latest")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", default=None, help="model id clients send (default: RUN/step_N or the folder name)")
    s.add_argument("--protocol", default="auto", help="tool-call protocol: auto (the run's, else from the chat "
                                                      "template), tags or hermes")
    s.add_argument("--device", default="auto")
    s.add_argument("--dtype", default="float32")
    s.add_argument("--max-tokens", type=int, default=512, help="default max_tokens of a request")
    s.add_argument("--max-batch-size", type=int, default=16)
    s.add_argument("--num-threads", type=int, default=0, help="torch threads while generating (0: torch's setting)")
    s.add_argument("--log-level", default="info")
    s.set_defaults(fn=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (each ``--help`` shows the defaults)."""
    p = ArgumentParser(prog="appo", description="RL for tool-using LLM agents (APPO, GRPO, ARPO, Tree-GRPO)",
                       formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"appo {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    _add = sub.add_parser

    def add_parser(name, **kw):
        return _add(name, formatter_class=HelpFormatter, **kw)

    sub.add_parser = add_parser  # every subcommand shows its defaults

    for name, fn, help_ in (("train", cmd_train, "train a policy with RL"),
                            ("sft", cmd_sft, "supervised cold start on demonstrations"),
                            ("sft-train", cmd_sft_train, ("SFT then RL in one go: SFT into RUN_DIR/sft/sft_model, "
                                                          "then train that model into RUN_DIR"))):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--config", "-c", help="YAML config file or a shipped config name (`appo list configs`)")
        s.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
        s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. actor.optim.lr=1e-5")
        s.set_defaults(fn=fn)

    s = sub.add_parser("build-tiny", help="build only the demo's tiny base model and tokenizer (seconds, CPU)")
    s.add_argument("out", help="output folder (a Hugging Face model folder)")
    s.add_argument("--config", "-c", default="demo", help="config whose data.train_files (proc: tasks) and "
                                                          "rollout.system_prompt shape the tokenizer")
    s.add_argument("overrides", nargs="*", help="dotted overrides of that config")
    s.set_defaults(fn=cmd_build_tiny)

    from appo.catalog import KINDS

    s = sub.add_parser("list", help="list benchmarks, tools, rewards, algorithms or shipped configs")
    s.add_argument("kind", choices=KINDS)
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("eval", help="evaluate a model with tools on benchmarks")
    s.add_argument("--model", default=None, help="HF folder, cached hub id, .gguf file or alias "
                   "(smollm2-135m-instruct); with --endpoint: the served model's id (default: the first it lists)")
    s.add_argument("--endpoint", default=None,
                   help="evaluate an OpenAI-compatible server (http://host:port/v1) instead")
    s.add_argument("--api-key", default=None, help="the endpoint's API key (default $OPENAI_API_KEY)")
    s.add_argument("--benchmarks", required=True, type=spec_list,
                   help="comma-separated names (gsm8k,math500,...), files or proc: tasks; commas inside [] stay")
    s.add_argument("--limit", type=positive_int, default=None, help="examples per benchmark (>= 1; default all)")
    s.add_argument("--tools", default="python,search", help="comma-separated tools ('' for none)")
    s.add_argument("--print-config", action="store_true", help="print the resolved arguments as YAML and exit")
    s.add_argument("--reward", default="default", help="reward name or file.py:function")
    s.add_argument("--protocol", default="tags", choices=["tags", "hermes", "template"])
    s.add_argument("--system-prompt", default=None, help="reference, fewshot, short, or literal text")
    s.add_argument("--max-response-tokens", type=int, default=1024)
    s.add_argument("--max-tool-calls", type=int, default=3)
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--n", type=int, default=1, help="samples per question")
    s.add_argument("--batch-size", type=int, default=32, help="prompts per engine call (--endpoint: requests at once)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", default="eval_results.json", help="JSON output path")
    s.set_defaults(fn=cmd_eval)

    _add_serve_parser(sub)

    s = sub.add_parser("report", help="static HTML report of a run's decision points and curves")
    s.add_argument("run_dir")
    s.add_argument("--steps", default=None, help="comma-separated steps (default: every dumped step)")
    s.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    s.add_argument("--max-prompts", type=int, default=None)
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("study", help="APPO vs GRPO/ARPO/Tree-GRPO and ablations at equal budget (CPU, ~2 h)")
    s.add_argument("--out", default="runs/study")
    s.add_argument("--tasks", default="arith",
                   help="comma-separated: arith, chain, multihop, mix or proc: specs")
    s.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, or a range like 0-9")
    s.add_argument("--steps", type=int, default=60)
    s.add_argument("--test-freq", type=int, default=10)
    s.add_argument("--val-examples", type=int, default=256, help="held-out problems per evaluation")
    s.add_argument("--val-samples", type=int, default=4, help="samples per problem at the training temperature")
    s.add_argument("--no-greedy", action="store_true", help="skip the greedy validation pass")
    s.add_argument("--final-evals", type=int, default=3, help="the final score averages the last N evaluations")
    s.add_argument("--variants", default=None, help="comma-separated variants to run (default: all), e.g. grpo,appo")
    s.add_argument("--no-ablations", action="store_true")
    s.add_argument("--workers", type=int, default=2, help="runs at once (one torch thread each)")
    s.add_argument("--sft-examples", type=int, default=4000)
    s.add_argument("--sft-epochs", type=int, default=3)
    s.add_argument("--doc", default=None, help="Markdown file to write (default OUT/results.md)")
    s.add_argument("--smoke", action="store_true", help="a minute-long pipeline check (CI)")
    s.add_argument("--report-only", action="store_true",
                   help="train nothing: write the tables from the runs already finished under --out")
    s.add_argument("overrides", nargs="*", help="dotted overrides applied to every run")
    s.set_defaults(fn=cmd_study)

    s = sub.add_parser("demo", help="the main job: tiny model -> SFT -> APPO -> eval before/after -> report")
    s.add_argument("--out", default="runs/demo", help="output folder")
    s.add_argument("--quick", action="store_true", help="a minute-long version (CI smoke test)")
    s.add_argument("overrides", nargs="*", help="dotted overrides of the demo's training config")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("analyze", help="measure which rollout positions change the outcome (Monte-Carlo re-draws) "
                                       "and how entropy, Omega and the Branching Score rank them")
    s.add_argument("--model", required=True,
                   help="HF folder, cached hub id, .gguf file or alias (smollm2-135m-instruct)")
    s.add_argument("--data", required=True, help="benchmark name, data file or proc: task spec")
    s.add_argument("--prompts", type=int, default=4, help="examples analysed (the first ones)")
    s.add_argument("--rollouts", type=int, default=2, help="rollouts per prompt")
    s.add_argument("--positions", type=int, default=8, help="stratified positions per rollout (plus tool boundaries)")
    s.add_argument("--samples", type=int, default=4, help="M: continuations re-drawn per position")
    s.add_argument("--paired", action="store_true", help="also M continuations that keep token t (token effect)")
    s.add_argument("--tools", default="python", help="comma-separated tools")
    s.add_argument("--protocol", default="tags", choices=["tags", "hermes", "template"])
    s.add_argument("--system-prompt", default=None, help="reference, fewshot, short, or literal text")
    s.add_argument("--reward", default="default", help="reward name or file.py:function")
    s.add_argument("--anchor-model", default=None,
                   help="anchor policy for Omega (same tokenizer); none: Omega constant")
    s.add_argument("--max-response-tokens", type=int, default=256)
    s.add_argument("--max-tool-calls", type=int, default=3)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--precision-k", type=int, default=None, help="K of precision@K (default 20%% of positions)")
    s.add_argument("--near-tool-tokens", type=int, default=5, help="N: 'near a tool call' means within N tokens")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--omega-variants", default=None,
                   help="space-separated Omega variants 'form,g=gamma' (form clipped/mean/sum) scored next to the "
                        "configured Omega with an anchor (default: appo.analysis.records.OMEGA_VARIANTS; '' none)")
    s.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for precision@K intervals (0: none)")
    s.add_argument("--split", default="test", help="stream of a proc: task (train/test)")
    s.add_argument("--data-seed", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--num-threads", type=int, default=1, help="torch threads (0: leave torch's setting)")
    s.add_argument("--out", default="runs/analysis", help="output folder")
    s.set_defaults(fn=cmd_analyze)

    s = sub.add_parser("bench",
                       help="speed and memory against model.generate and TRL, side by side (docs/benchmarks.md)")
    from appo.bench import add_arguments

    add_arguments(s)
    s.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``appo`` script. A usage or input error prints ``appo <command>: error: <one
    line>`` and returns 2; Ctrl-C returns 130 (:mod:`appo.cli_errors`; ``APPO_TRACEBACK=1`` re-raises)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.fn(args)
    except BaseException as exc:  # mapped below; anything unmapped is re-raised
        if isinstance(exc, SystemExit) or full_traceback_wanted():
            raise
        err = describe_error(exc)
        if err is None:
            raise
        print(f"appo {args.command}: error: {one_line(err.message)}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
