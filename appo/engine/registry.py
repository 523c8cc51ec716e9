"""Rollout engines by name (``rollout.name``): how each is built from the run config, and its config rules.

``hf`` (:class:`~appo.engine.hf.HFEngine`, transformers in-process) and ``vllm``
(:class:`~appo.engine.vllm.VLLMEngine`, CUDA) are built in. Another engine is one file anywhere: an
:class:`EngineSpec` named in the config as ``rollout.name=package.module:NAME`` (or ``path/to/file.py:NAME``,
:mod:`appo.plugins`), or registered in-process
with :func:`register_engine`. Builders take the whole run config (:class:`appo.config.Config`) and only
read it; this module never imports the config package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from appo.plugins import UnknownNameError, is_plugin_spec, load_plugin, register_unique

EngineBuilder = Callable[[Any, Any, Any], Any]
"""``build(model, tokenizer, cfg) -> Engine``: the engine sampling from ``model`` (the trained policy)."""


def _no_rules(cfg: Any) -> None:
    return None


@dataclass(frozen=True)
class EngineSpec:
    """One rollout engine as the trainer builds it."""

    name: str
    """The ``rollout.name`` it is registered under."""
    build: EngineBuilder
    """``build(model, tokenizer, cfg) -> Engine`` (:class:`appo.engine.base.Engine`)."""
    validate: Callable[[Any], None] = _no_rules
    """Raises ``ValueError`` (one line: key, value, fix) when ``cfg`` breaks a rule of this engine; the config
    loader turns it into a :class:`appo.config.ConfigError`."""
    ray_workers: bool = False
    """Whether Ray rollout workers (``rollout.workers > 0``) can build it (they build it from ``cfg`` too)."""


def build_hf(model: Any, tokenizer: Any, cfg: Any) -> Any:
    """:class:`~appo.engine.hf.HFEngine` over ``model`` itself (no copy: it sees every update)."""
    from appo.engine.hf import HFEngine

    return HFEngine(model, tokenizer, max_batch_size=cfg.rollout.max_batch_size)


def build_vllm(model: Any, tokenizer: Any, cfg: Any) -> Any:
    """:class:`~appo.engine.vllm.VLLMEngine` loading ``model.path`` on the GPU, with ``model`` as its policy
    (its weights are pushed to vLLM whenever they changed)."""
    from appo.engine.vllm import VLLMEngine
    from appo.models.loading import resolve_model_path

    m, r = cfg.model, cfg.rollout
    return VLLMEngine(str(resolve_model_path(m.path)),
                      str(resolve_model_path(m.tokenizer_path)) if m.tokenizer_path else None,
                      policy=model, logprobs_k=r.logprobs_k, gpu_memory_utilization=r.gpu_memory_utilization,
                      # the compute dtype when set (mixed precision); auto: fp32 checkpoints run in fp16
                      dtype=m.compute_dtype or ("auto" if m.dtype == "float32" else m.dtype),
                      seed=cfg.trainer.seed, trust_remote_code=m.trust_remote_code)


def check_vllm(cfg: Any) -> None:
    """vLLM needs CUDA, a training temperature of 1, no LoRA, no Ray workers, ``logprobs_k >= 1`` and
    ``gpu_memory_utilization`` in (0, 1]."""
    import torch

    r = cfg.rollout
    if not torch.cuda.is_available():
        raise ValueError("rollout.name=vllm needs a CUDA GPU, and CUDA is not available on this machine "
                         "(vLLM does not run on CPU); fix: rollout.name=hf")
    if r.temperature != 1.0:
        raise ValueError(f"rollout.name=vllm with rollout.temperature={r.temperature}: vLLM reports log-probs "
                         "and entropies of the temperature-1 distribution, the trainer's are at the rollout "
                         "temperature; fix: rollout.temperature=1.0 or rollout.name=hf")
    if cfg.model.lora_rank > 0:
        raise ValueError(f"rollout.name=vllm with model.lora_rank={cfg.model.lora_rank}: weights are pushed to "
                         "vLLM by checkpoint name, which LoRA wrapping changes; fix: model.lora_rank=0 or "
                         "rollout.name=hf")
    if r.workers:
        raise ValueError(f"rollout.workers={r.workers} runs HFEngine workers; with rollout.name=vllm set "
                         "rollout.workers=0")
    if r.logprobs_k < 1:
        raise ValueError(f"rollout.logprobs_k={r.logprobs_k} must be >= 1")
    if not 0 < r.gpu_memory_utilization <= 1:
        raise ValueError(f"rollout.gpu_memory_utilization={r.gpu_memory_utilization} must be in (0, 1]")


ENGINES: dict[str, EngineSpec] = {}
"""Registered engines by name."""


def register_engine(spec: EngineSpec) -> EngineSpec:
    """Add ``spec`` under its name; refuses a taken name. Returns it."""
    return register_unique(ENGINES, spec.name, spec, "engine")


register_engine(EngineSpec("hf", build_hf, ray_workers=True))
register_engine(EngineSpec("vllm", build_vllm, validate=check_vllm))


def get_engine_spec(name: str) -> EngineSpec:
    """The engine called ``name``: a registered name, or a plugin spec (``package.module:NAME`` or
    ``path/to/file.py:NAME``, :mod:`appo.plugins`) naming an :class:`EngineSpec`. Raises
    :class:`appo.plugins.PluginError` (a ``ValueError``) naming the valid choices."""
    if name in ENGINES:
        return ENGINES[name]
    if not is_plugin_spec(name):
        raise UnknownNameError(f"rollout.name={name!r} is not one of {', '.join(sorted(ENGINES))}, nor "
                               "'package.module:NAME' / 'path/to/file.py:NAME' naming an "
                               "appo.engine.registry.EngineSpec")
    return load_plugin(name, EngineSpec, label=f"rollout.name={name!r}", instantiate=False)
