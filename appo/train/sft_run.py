"""``appo sft``: supervised cold start on demonstrations rendered exactly as the agent loop renders rollouts.

Demonstrations come from the procedural tasks in ``data.train_files`` (their demonstration writers give
the model-side turns; the real tools fill in the results) or from a JSONL file of
``{"question": ..., "answers": [...], "turns": [...]}`` rows (``data.train_files=[my_demos.jsonl]`` with
``turns``). Prompt and tool-result tokens are masked out of the loss (:func:`appo.train.sft.sft_train`).
"""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from appo.agent import render_demonstration
from appo.config import Config, save_config
from appo.data.sources import load_examples, task_of
from appo.prompts import resolve_system_prompt
from appo.train.components import build_model, build_tools_for
from appo.train.sft import sft_train
from appo.types import Example


@dataclass(frozen=True)
class SftResult:
    """Where the model went and how training went."""

    model_dir: Path
    """The fine-tuned HF model folder (weights + tokenizer)."""
    metrics: dict
    """``sft_train``'s metrics (epoch and step losses, tokens, time)."""
    num_examples: int
    """Demonstrations trained on."""


def demonstrations(cfg: Config) -> list[tuple[Example, list[str]]]:
    """(example, turns) pairs: ``sft.num_examples`` per procedural spec, plus every row of JSONL files
    that carry ``turns``."""
    pairs: list[tuple[Example, list[str]]] = []
    for spec in cfg.data.train_files:
        task = task_of(spec)
        if task is not None:
            for ex in load_examples([spec], "train", cfg.sft.num_examples, cfg.data.seed):
                pairs.append((ex, task.demonstration(ex)))
            continue
        path = Path(spec)
        if path.suffix != ".jsonl" or not path.is_file():
            raise ValueError(f"data.train_files entry {spec!r}: appo sft needs procedural tasks (proc:...) or a "
                             "JSONL file of {question, answers, turns} rows")
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("turns"), list) or "question" not in row:
                raise ValueError(f"{path}:{i + 1}: an SFT row needs 'question' and a list 'turns' "
                                 "(model-side texts; every turn but the last ends with a tool call)")
            answers = row.get("answers") or []
            ex = Example(id=f"{path.stem}/{i}", question=row["question"], answers=tuple(map(str, answers)),
                         kind=row.get("kind", "qa"), metric=row.get("metric", "f1"), data_source=path.stem)
            pairs.append((ex, row["turns"]))
    return pairs


def render_all(pairs: Sequence[tuple[Example, list[str]]], tokenizer, tools, protocol: str,
               system_prompt: str | None, workers: int = 8) -> list[tuple[list[int], list[int]]]:
    """Render every demonstration (tools run concurrently across demonstrations, order kept)."""
    def one(pair):
        ex, turns = pair
        return render_demonstration(protocol, tokenizer, tools, ex, turns, system_prompt=system_prompt)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, pairs))


def run_sft(cfg: Config, log_fn=None, progress: bool = False) -> SftResult:
    """Fine-tune ``cfg.model.path`` on demonstrations (see module docstring); save to ``sft.output_dir``
    (default ``<run dir>/sft_model``). The Python call behind ``appo sft``. ``progress``: print each phase
    (model, demonstrations, training, saving) and a step bar with the loss to stderr."""
    def say(text: str) -> None:
        if progress:
            print(f"[sft] {text}", file=sys.stderr, flush=True)

    run_dir = Path(cfg.trainer.default_local_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "sft_config.yaml")
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    say(f"loading {cfg.model.path}")
    model, tokenizer = build_model(cfg)
    tools, _ = build_tools_for(cfg, run_dir)
    pairs = demonstrations(cfg)
    if not pairs:
        raise ValueError("no demonstrations: data.train_files names no procedural task or demonstration file")
    say(f"rendering {len(pairs)} demonstrations (the tools run for each)")
    examples = render_all(pairs, tokenizer, tools, cfg.rollout.protocol,
                          resolve_system_prompt(cfg.rollout.system_prompt, tools, cfg.rollout.protocol))
    s = cfg.sft
    total = s.epochs * math.ceil(len(examples) / s.batch_size)
    say(f"training: {s.epochs} epoch(s) x {math.ceil(len(examples) / s.batch_size)} steps of {s.batch_size}")
    bar = None
    if progress:
        from appo.train.progress import ProgressDisplay

        bar = ProgressDisplay(total, "sft")

    def on_step(step: int, m: dict) -> None:
        if bar is not None:
            bar.update(step, advance=0, loss=m["sft/loss"])
        if log_fn is not None:
            log_fn(step, m)

    try:
        metrics = sft_train(model, examples, lr=s.lr, epochs=s.epochs, batch_size=s.batch_size,
                            grad_clip=cfg.actor.grad_clip, weight_decay=s.weight_decay, seed=cfg.trainer.seed,
                            pad_id=tokenizer.pad_token_id, log_fn=on_step)
    finally:
        if bar is not None:
            bar.close()
    out = Path(s.output_dir or run_dir / "sft_model")
    say(f"saving {out}")
    full_model(model).save_pretrained(out)
    tokenizer.save_pretrained(out)
    for tool in tools:
        tool.close()
    return SftResult(model_dir=out, metrics=metrics, num_examples=len(examples))


def full_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model whose ``save_pretrained`` writes a complete ``from_pretrained`` folder: a peft (LoRA) model
    with its adapters merged into the base weights (``W + B A * alpha / r``, peft's ``merge_and_unload``),
    anything else as is. peft's own ``save_pretrained`` writes only the adapter, which ``appo eval``,
    ``appo serve`` and ``appo train`` (``model.path=<sft_model>``) cannot load as a model."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def sft_then_train(cfg: Config, progress: bool = False):
    """SFT ``cfg.model.path`` into ``<run dir>/sft/sft_model`` (or ``sft.output_dir``), then train that
    model with RL into the run directory (``trainer.default_local_dir``) with the same config: the README's
    two steps in one call (``appo sft-train``). Returns ``(SftResult, TrainResult)``."""
    from appo.train.trainer import train

    sft = run_sft(sft_stage_config(cfg), progress=progress)
    return sft, train(sft_train_config(cfg, sft.model_dir))


def sft_stage_config(cfg: Config) -> Config:
    """``cfg`` with the run directory ``<run dir>/sft`` (the SFT half of :func:`sft_then_train`)."""
    import dataclasses

    sft_dir = str(Path(cfg.trainer.default_local_dir) / "sft")
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, default_local_dir=sft_dir))


def sft_train_config(cfg: Config, model_dir: str | Path) -> Config:
    """``cfg`` with ``model.path`` set to the SFT'd model (the RL half of :func:`sft_then_train`)."""
    import dataclasses

    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(model_dir)))
