"""The argument parser of the ``appo`` command: every subcommand, its options and defaults, and the
handler (:mod:`appo.cli.commands`) each one runs. A usage error is one line and exit code 2."""

from __future__ import annotations

import argparse

from appo import __version__
from appo.cli.commands import (
    cmd_analyze,
    cmd_build_tiny,
    cmd_demo,
    cmd_eval,
    cmd_list,
    cmd_perf,
    cmd_report,
    cmd_serve,
    cmd_sft,
    cmd_sft_train,
    cmd_study,
    cmd_train,
    cmd_vllm_serve,
)
from appo.cli_errors import one_line


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
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every endpoint but "
                                                   "/health (default $APPO_API_KEY; unset: no key)")
    s.add_argument("--max-body-bytes", type=int, default=4 * 2**20, help="larger request bodies get 413")
    s.set_defaults(fn=cmd_serve)


def _add_vllm_serve_parser(sub) -> None:
    s = sub.add_parser("vllm-serve", help="vLLM's own OpenAI server (vllm serve) for a model trained here: our "
                                          "tool-call parser and chat template, CPU settings (needs .venv-vllm)")
    s.add_argument("model", help="HF model folder, a checkpoint RUN/checkpoints/step_N, or a run directory")
    s.add_argument("vllm_args", nargs="*", help="more `vllm serve` arguments, after `--` (e.g. -- --max-num-seqs 8)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", default=None, help="model id clients send (default: RUN/step_N or the folder name)")
    s.add_argument("--protocol", default="auto", choices=["auto", "tags", "hermes"],
                   help="tool-call protocol: auto (the run's, else tags)")
    s.add_argument("--dtype", default="float32")
    s.add_argument("--gpu-memory-utilization", type=float, default=0.07,
                   help="share of the device's memory vLLM reserves (on CPU: of host RAM)")
    s.add_argument("--kv-cache-memory-bytes", type=int, default=None, help="KV cache in bytes instead of a share")
    s.add_argument("--max-model-len", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    s.set_defaults(fn=cmd_vllm_serve)


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
    _add_vllm_serve_parser(sub)

    s = sub.add_parser("report", help="static HTML report of a run's decision points and curves")
    s.add_argument("run_dir")
    s.add_argument("--steps", default=None, help="comma-separated steps (default: every dumped step)")
    s.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    s.add_argument("--max-prompts", type=int, default=None)
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("study", help="APPO vs GRPO/ARPO/Tree-GRPO and ablations at equal budget (CPU, ~2 h)")
    s.add_argument("--out", default="runs/study")
    s.add_argument("--tasks", default="arith",
                   help="comma-separated: arith, chain, multihop, mix, depth_early, depth_middle, depth_late "
                        "or proc: specs")
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

    s = sub.add_parser("perf", aliases=["bench"],
                       help="speed and memory against model.generate and TRL, side by side (docs/perf.md; "
                            "`appo bench` is the old name, kept as an alias)")
    from appo.perf import add_arguments

    add_arguments(s)
    s.set_defaults(fn=cmd_perf)
    return p
