"""Cross-field rules of a run config: the generic ones here, then the chosen algorithm's and engine's own.

Per-algorithm rules live in the algorithm's spec (:meth:`appo.algorithms.Algorithm.validate`), per-engine
rules in the engine's (:class:`appo.engine.registry.EngineSpec`); both raise ``ValueError``, turned into a
:class:`~appo.config.typed_yaml.ConfigError` here so every bad config fails the same way, at load time.
"""

from __future__ import annotations

import re

from appo.algorithms import Algorithm, get_algorithm
from appo.config.schema import Config
from appo.config.typed_yaml import ConfigError, build
from appo.engine.registry import get_engine_spec


def validate_config(cfg: Config, algorithm: Algorithm | None = None) -> Config:
    """Check the cross-field rules; return ``cfg`` unchanged or raise :class:`ConfigError` with the fix.

    Rules: counts and lengths >= 1 (``sft.num_examples``, epochs and batch size included); rollout workers,
    GPUs, restarts and timeout >= 0, worker CPUs > 0; ``data.*_max_samples`` >= 1 or -1;
    ``actor.ppo_mini_batch_size`` divides ``data.train_batch_size``; ``trainer.dist_timeout_s`` >= 1;
    temperature > 0 and top-p in (0, 1]; clip ratios, lr, grad clip, LoRA rank, tool calls >= 0;
    dual-clip bound > 1; a ``cuda`` device only where CUDA is available; ``resume_path`` needs
    ``resume_from_path``; at least one checkpoint kept; then the rules of the algorithm
    (:meth:`appo.algorithms.Algorithm.validate`, e.g. ``rollout.n_initial < rollout.n`` for branching ones) and
    of the engine (:class:`appo.engine.registry.EngineSpec`, e.g. ``vllm`` needs CUDA), and the types of
    ``algorithm.options`` against the algorithm's ``options_type``.
    ``algorithm``: ``algorithm.name`` already resolved (by :func:`appo.config.load_config`), else resolved here.
    Not checked: that files and tools exist (their loaders say so, with the path).
    """
    r, d, act, t = cfg.rollout, cfg.data, cfg.actor, cfg.trainer
    at_least_one = {
        "rollout.n": r.n, "rollout.n_initial": r.n_initial, "rollout.val_kwargs.n": r.val_kwargs.n,
        "data.train_batch_size": d.train_batch_size, "data.max_prompt_length": d.max_prompt_length,
        "data.max_response_length": d.max_response_length, "actor.ppo_mini_batch_size": act.ppo_mini_batch_size,
        "actor.ppo_micro_batch_size_per_gpu": act.ppo_micro_batch_size_per_gpu, "actor.ppo_epochs": act.ppo_epochs,
        "actor.ppo_max_token_len_per_gpu": act.ppo_max_token_len_per_gpu,
        "trainer.dist_timeout_s": t.dist_timeout_s,
        "sft.num_examples": cfg.sft.num_examples, "sft.epochs": cfg.sft.epochs, "sft.batch_size": cfg.sft.batch_size,
    }
    for key, value in at_least_one.items():
        if value < 1:
            raise ConfigError(f"{key}={value} must be >= 1")
    for key, value in {"rollout.workers": r.workers, "rollout.worker_gpus": r.worker_gpus,
                       "rollout.worker_restarts": r.worker_restarts, "rollout.worker_timeout_s": r.worker_timeout_s,
                       "sft.lr": cfg.sft.lr}.items():
        if value < 0:
            raise ConfigError(f"{key}={value} must be >= 0")
    samples = {"data.train_max_samples": d.train_max_samples, "data.val_max_samples": d.val_max_samples}
    for key, value in samples.items():
        if value == 0 or value < -1:
            raise ConfigError(f"{key}={value} must be >= 1, or -1 for all examples")
    if r.workers and r.worker_cpus <= 0:
        raise ConfigError(f"rollout.worker_cpus={r.worker_cpus} must be > 0")
    if d.train_batch_size % act.ppo_mini_batch_size:
        raise ConfigError(
            f"actor.ppo_mini_batch_size={act.ppo_mini_batch_size} must divide data.train_batch_size="
            f"{d.train_batch_size}; fix: actor.ppo_mini_batch_size={d.train_batch_size}")
    if r.temperature <= 0:
        raise ConfigError(f"rollout.temperature={r.temperature} must be > 0 for training rollouts")
    for key, value in {"rollout.top_p": r.top_p, "rollout.val_kwargs.top_p": r.val_kwargs.top_p}.items():
        if not 0 < value <= 1:
            raise ConfigError(f"{key}={value} must be in (0, 1]")
    non_negative = {
        "actor.clip_ratio_low": act.clip_ratio_low, "actor.clip_ratio_high": act.clip_ratio_high,
        "actor.optim.lr": act.optim.lr, "actor.grad_clip": act.grad_clip, "model.lora_rank": cfg.model.lora_rank,
        "rollout.max_tool_calls": r.max_tool_calls, "rollout.val_kwargs.temperature": r.val_kwargs.temperature,
        "actor.optim.lr_warmup_steps": act.optim.lr_warmup_steps,
        "trainer.total_training_steps": t.total_training_steps,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}={value} must be >= 0")
    for key, value in {"rollout.top_k": r.top_k, "rollout.val_kwargs.top_k": r.val_kwargs.top_k}.items():
        if value < -1:
            raise ConfigError(f"{key}={value} must be >= 0 (or -1 / 0 for off)")
    if act.clip_ratio_c <= 1:
        raise ConfigError(f"actor.clip_ratio_c={act.clip_ratio_c} must be > 1 (the dual-clip bound)")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.model.device):
        raise ConfigError(f"model.device={cfg.model.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if cfg.model.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"model.device={cfg.model.device} but CUDA is not available on this machine; "
                              "fix: model.device=cpu (or model.device=auto)")
    _check_plugins(cfg, algorithm)
    if t.resume_mode == "resume_path" and not t.resume_from_path:
        raise ConfigError("trainer.resume_mode=resume_path needs trainer.resume_from_path=<checkpoint folder>")
    if t.max_actor_ckpt_to_keep is not None and t.max_actor_ckpt_to_keep < 1:
        raise ConfigError(f"trainer.max_actor_ckpt_to_keep={t.max_actor_ckpt_to_keep} must be >= 1 or null")
    return cfg


def _check_plugins(cfg: Config, algorithm: Algorithm | None) -> None:
    """The algorithm's and the engine's rules (:func:`validate_config`), as :class:`ConfigError`."""
    try:
        algorithm = algorithm or get_algorithm(cfg.algorithm.name)
        if algorithm.options_type is not None:
            build(algorithm.options_type, cfg.algorithm.options, "algorithm.options.")
        elif cfg.algorithm.options:
            raise ValueError(f"algorithm.options={cfg.algorithm.options!r}: algorithm {algorithm.name!r} takes no "
                             "options (its settings are its own section, e.g. algorithm.appo)")
        algorithm.validate(cfg)
        get_engine_spec(cfg.rollout.name).validate(cfg)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
