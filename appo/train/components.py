"""Build what a run needs from its config: model, engine, tools, reward, data, optimizer.

Each builder is a small documented call, so a script can assemble a run by hand and swap any part
(another engine, a custom tool list, a custom reward) before handing it to :class:`~appo.train.trainer.Trainer`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from appo.agent import LoopLimits
from appo.algorithms import Algorithm, get_algorithm
from appo.config import Config
from appo.data.sources import data_overrides, examples_for, load_examples, write_task_corpus
from appo.engine.base import SamplingParams
from appo.engine.registry import get_engine_spec
from appo.models.loading import LoraSpec, frozen_copy, load_model_and_tokenizer
from appo.models.precision import low_precision_adamw_warning, set_compute_dtype
from appo.rewards import get_reward
from appo.tools.registry import build_tools
from appo.types import Example


@dataclass
class Components:
    """The live objects of a run."""

    model: torch.nn.Module
    """The policy (trained in place; the engine samples from the same object)."""
    tokenizer: Any
    """The policy's tokenizer."""
    engine: Any
    """Rollout engine (``HFEngine`` over ``model``, or ``VLLMEngine`` fed its weights)."""
    tools: list
    """Tools the agent may call."""
    reward_fn: Any
    """Batch reward function."""
    train_examples: list[Example]
    """Training prompts."""
    val_examples: list[Example]
    """Validation prompts (may be empty)."""
    optimizer: torch.optim.Optimizer
    """AdamW over the trainable parameters."""
    scheduler: torch.optim.lr_scheduler.LambdaLR
    """Warm-up then constant or cosine learning rate."""
    ref_model: torch.nn.Module | None = None
    """Frozen initial policy (KL penalty, ``reference`` anchor); None when unused."""
    prev_model: torch.nn.Module | None = None
    """The policy before the latest update (APPO's ``previous`` anchor); None when unused."""
    tool_specs: tuple | None = None
    """The specs ``tools`` were built from (names, dicts, ``file.py:function``; corpus paths resolved): Ray
    rollout workers build their own tools from them. None when the tools were handed in as objects."""
    corpus: str | None = None
    """The search corpus written for the procedural tasks (``run_dir/corpus.jsonl``), if any."""
    extra: dict = field(default_factory=dict)
    """Anything else a custom script wants to carry."""
    train_model: torch.nn.Module | None = None
    """The module the update runs (``model`` itself, or its DDP / FSDP2 wrapper across processes); the
    trainer sets it (:meth:`appo.distributed.ddp.DistEnv.wrap`); None before that."""


def build_model(cfg: Config):
    """Policy model and tokenizer from ``cfg.model`` (HF folder, cached hub id, GGUF, alias; LoRA), with
    ``model.compute_dtype`` recorded on it (:mod:`appo.models.precision`). Warns once when the parameters are
    bfloat16 / float16 (AdamW steps below their rounding are lost), naming the mixed-precision fix."""
    m = cfg.model
    lora = LoraSpec(m.lora_rank, m.lora_alpha, m.lora_dropout, m.target_modules) if m.lora_rank > 0 else None
    warning = low_precision_adamw_warning(m.dtype)
    if warning is not None:
        warnings.warn(warning, stacklevel=2)
    model, tokenizer = load_model_and_tokenizer(m.path, m.dtype, m.device, lora, tokenizer_path=m.tokenizer_path,
                                                trust_remote_code=m.trust_remote_code,
                                                gradient_checkpointing=m.enable_gradient_checkpointing)
    set_compute_dtype(model, m.compute_dtype)
    return model, tokenizer


def tool_specs_for(cfg: Config, run_dir: str | Path) -> tuple[list, Path | None]:
    """The tool specs of ``cfg.tools`` with a plain ``search`` resolved to the procedural tasks' corpus
    (written to ``run_dir/corpus.jsonl``, BM25, top-2) when the training data has one; and that corpus."""
    specs = list(cfg.tools)
    corpus = None
    if "search" in specs:
        corpus = write_task_corpus(list(cfg.data.train_files) + list(cfg.data.val_files),
                                   Path(run_dir) / "corpus.jsonl")
        if corpus is not None:
            specs[specs.index("search")] = {"name": "search", "backend": "bm25", "corpus": str(corpus),
                                            "index_dir": str(Path(run_dir) / "bm25_index"), "top_k": 2}
    return specs, corpus


def build_tools_for(cfg: Config, run_dir: str | Path) -> tuple[list, Path | None]:
    """Tools of ``cfg.tools`` (specs resolved by :func:`tool_specs_for`) and the written corpus, if any."""
    specs, corpus = tool_specs_for(cfg, run_dir)
    return build_tools(specs), corpus


def build_engine(model, tokenizer, cfg: Config):
    """The rollout engine of ``cfg.rollout.name`` (:mod:`appo.engine.registry`: ``hf`` over ``model`` itself,
    ``vllm`` on the GPU fed ``model``'s weights, or ``package.module:NAME`` from outside appo)."""
    return get_engine_spec(cfg.rollout.name).build(model, tokenizer, cfg)


def build_reward(cfg: Config):
    """The batch reward of ``cfg.reward``: ``funcs`` with ``weights`` (:mod:`appo.rewards.weighted`) when
    given, else ``name`` with ``kwargs``."""
    r = cfg.reward
    if r.funcs:
        from appo.rewards.weighted import build_weighted

        return build_weighted(r.funcs, r.weights)
    if r.weights:
        raise ValueError("reward.weights is set but reward.funcs is empty; list the functions in reward.funcs")
    return functools.partial(get_reward(r.name), **r.kwargs) if r.kwargs else get_reward(r.name)


def build_optimizer(model: torch.nn.Module, cfg: Config, total_steps: int):
    """AdamW over trainable parameters and a LambdaLR: linear warm-up over ``lr_warmup_steps``, then
    constant, or cosine down to ``min_lr_ratio * lr`` at ``total_steps``."""
    o = cfg.actor.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)

    def factor(step: int) -> float:
        if o.lr_warmup_steps and step < o.lr_warmup_steps:
            return (step + 1) / o.lr_warmup_steps
        if o.lr_scheduler_type == "cosine":
            span = max(1, total_steps - o.lr_warmup_steps)
            progress = min(1.0, (step - o.lr_warmup_steps) / span)
            return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def sampling_params(cfg: Config, validation: bool = False) -> SamplingParams:
    """Engine sampling settings for training rollouts or validation."""
    r = cfg.rollout
    src = r.val_kwargs if validation else r
    return SamplingParams(temperature=src.temperature, top_p=src.top_p, top_k=max(0, src.top_k),
                          max_new_tokens=cfg.data.max_response_length)


def loop_limits(cfg: Config) -> LoopLimits:
    """Tool-call and length limits of the agent loop."""
    return LoopLimits(max_tool_calls=cfg.rollout.max_tool_calls, max_response_tokens=cfg.data.max_response_length,
                      on_tool_limit=cfg.rollout.on_tool_limit)


def build_components(cfg: Config, run_dir: str | Path, train_dataset: Any = None,
                     val_dataset: Any = None, algorithm: Algorithm | None = None) -> Components:
    """Everything :class:`~appo.train.trainer.Trainer` needs, built from ``cfg``. ``train_dataset`` /
    ``val_dataset`` (a ``datasets.Dataset`` / ``DatasetDict``, a list of rows or of Examples) replace
    ``data.train_files`` / ``data.val_files`` when given; ``algorithm`` is the run's resolved
    ``algorithm.name`` (resolved here when not given)."""
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    d = cfg.data
    if not d.train_files and train_dataset is None:
        raise ValueError("data.train_files is empty; name a benchmark, a parquet/jsonl file or a procedural "
                         "task, e.g. data.train_files=[proc:arith]")
    kind, metric = data_overrides(d.task, d.metric)
    if train_dataset is not None:
        train = examples_for(d, train_dataset, "train")
    else:
        train = load_examples(d.train_files, "train", d.train_max_samples, d.seed, kind, metric)
    if val_dataset is not None:
        val = examples_for(d, val_dataset, "test")
    else:
        val = load_examples(d.val_files, "test", d.val_max_samples, d.seed, kind, metric) if d.val_files else []
    model, tokenizer = build_model(cfg)
    specs, corpus = tool_specs_for(cfg, run_dir)
    tools = build_tools(specs)
    reward_fn = build_reward(cfg)
    optimizer, scheduler = build_optimizer(model, cfg, cfg.trainer.total_training_steps)
    algorithm = algorithm or get_algorithm(cfg.algorithm.name)
    anchor = algorithm.omega_anchor(cfg)  # Omega's: previous / reference need a copy
    needs_ref = cfg.actor.use_kl_loss or anchor == "reference"
    needs_prev = anchor == "previous"
    return Components(
        model=model, tokenizer=tokenizer, engine=build_engine(model, tokenizer, cfg), tools=tools,
        reward_fn=reward_fn, train_examples=train, val_examples=val, optimizer=optimizer, scheduler=scheduler,
        ref_model=frozen_copy(model) if needs_ref else None, prev_model=frozen_copy(model) if needs_prev else None,
        tool_specs=tuple(specs), corpus=str(corpus) if corpus else None,
    )


@dataclass(frozen=True)
class ConfigWorkerFactory:
    """Builds a worker's parts from a training config, as the trainer builds its own (model from
    ``model.path``, ``HFEngine``, tools from ``tool_specs``). Picklable: Ray ships it to each worker."""

    cfg: Any
    """The run's :class:`~appo.config.Config`."""
    tool_specs: tuple
    """Resolved tool specs (:func:`tool_specs_for`: corpus and index paths filled in;
    files the trainer wrote, read by the workers, so multi-node runs need a shared file system)."""
    device: str = "cpu"
    """Where the worker's model lives (``cuda`` when the actor was given a GPU)."""

    def __call__(self):
        cfg = dataclasses.replace(self.cfg, model=dataclasses.replace(self.cfg.model, device=self.device))
        model, tokenizer = build_model(cfg)
        model.eval()
        from appo.distributed.ray_rollout import WorkerParts

        return WorkerParts(model, tokenizer, build_engine(model, tokenizer, cfg), build_tools(list(self.tool_specs)))


def build_rollout_pool(cfg: Config, components: Components, algorithm: Algorithm | None = None):
    """``rollout.workers`` Ray actors (:class:`appo.distributed.ray_rollout.RayRolloutPool`), each building
    the model, engine and tools from ``cfg`` as this process did (tool specs from ``components.tool_specs``;
    files they name must be readable by every worker). Weights are not pushed here: the trainer does.
    ``algorithm``: the run's resolved ``algorithm.name`` (resolved here when not given)."""
    from appo.distributed.ray_rollout import RayRolloutPool

    r = cfg.rollout
    if not get_engine_spec(r.name).ray_workers:
        raise ValueError(f"rollout.workers={r.workers} runs HFEngine workers; rollout.name={r.name!r} is not supported")
    specs = components.tool_specs
    if specs is None or any(not isinstance(s, (str, dict)) for s in specs):
        raise ValueError("rollout.workers > 0 builds each worker's tools from their specs (names, dicts, "
                         "'file.py:function'); these components hold none or hold tool objects: put the specs in "
                         "Components.tool_specs")
    factory = ConfigWorkerFactory(cfg, tuple(specs), device="cuda" if r.worker_gpus > 0 else "cpu")
    algorithm = algorithm or get_algorithm(cfg.algorithm.name)
    anchor = algorithm.omega_anchor(cfg) or "rollout"  # used only when Omega is scored
    return RayRolloutPool(factory, r.workers, anchor=anchor, address=r.ray_address,
                          num_cpus=r.worker_cpus, num_gpus=r.worker_gpus, max_restarts=r.worker_restarts,
                          timeout_s=r.worker_timeout_s or None)
