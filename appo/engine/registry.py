"""Rollout engines by name (``rollout.name``): how each is built from the run config, and its config rules.

``hf`` (:class:`~appo.engine.hf.HFEngine`, transformers in-process) and ``vllm``
(:class:`~appo.engine.vllm.VLLMEngine`, vLLM 0.32, CUDA or CPU build) are built in. Another engine is one
file anywhere: an
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
    """:class:`~appo.engine.vllm.VLLMEngine` loading ``model.path`` (CUDA, or vLLM's CPU build), with ``model``
    as its policy (its weights, LoRA merged, are pushed to vLLM whenever they changed)."""
    import torch

    from appo.engine.vllm import VLLMEngine
    from appo.models.loading import resolve_model_path

    m, r = cfg.model, cfg.rollout
    return VLLMEngine(str(resolve_model_path(m.path)),
                      str(resolve_model_path(m.tokenizer_path)) if m.tokenizer_path else None,
                      policy=model, logprobs_k=r.logprobs_k, gpu_memory_utilization=r.gpu_memory_utilization,
                      # the compute dtype when set (mixed precision); fp32 checkpoints stay fp32 (the trainer's)
                      dtype=m.compute_dtype or m.dtype,
                      seed=cfg.trainer.seed, trust_remote_code=m.trust_remote_code,
                      max_model_len=max_sequence_length(cfg, model),
                      **({} if torch.cuda.is_available() else CPU_LLM_KWARGS))


def max_sequence_length(cfg: Any, model: Any = None) -> int:
    """The longest sequence a run builds: ``data.max_prompt_length + data.max_response_length`` (the response
    counts model and tool tokens over all turns), capped at the model's ``max_position_embeddings`` when it
    has one. Given to vLLM as ``max_model_len``, so that its KV cache is sized for what the run can reach, not
    for the model's whole context (SmolLM2's 8,192 tokens needed 0.35 GiB that a 0.07 share did not leave)."""
    longest = int(cfg.data.max_prompt_length) + int(cfg.data.max_response_length)
    cap = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(longest, int(cap)) if isinstance(cap, int) and cap > 0 else longest


CPU_LLM_KWARGS = {"block_size": 32, "enable_chunked_prefill": False}
"""``vllm.LLM`` settings on vLLM's CPU build (0.32): 32-token KV blocks (its default is 128; forks share whole
blocks only), and no chunked prefill: a seeded request whose prefill is split across steps makes the CPU
worker rewind its generator (``gen.set_offset``), which CPU generators refuse (``RuntimeError: CPU Generator does
not use offset``, engine dead; hit by 128 seeded rows of ~48 tokens in the bench)."""


def vllm_importable() -> bool:
    """Whether this Python can import vLLM (without importing it: that takes seconds)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def check_vllm(cfg: Any) -> None:
    """vLLM importable (the CPU build's venv or the CUDA extra), a training temperature of 1, no Ray workers,
    ``logprobs_k >= 1`` and ``gpu_memory_utilization`` in (0, 1] (without CUDA: a fraction of host RAM, which
    must fit in what is free)."""
    from appo.engine.vllm import INSTALL_HINT

    r = cfg.rollout
    if not vllm_importable():
        raise ValueError(f"rollout.name=vllm needs vLLM, which this Python cannot import; fix: {INSTALL_HINT}, "
                         "or rollout.name=hf")
    if r.temperature != 1.0:
        raise ValueError(f"rollout.name=vllm with rollout.temperature={r.temperature}: vLLM reports log-probs "
                         "and entropies of the temperature-1 distribution, the trainer's are at the rollout "
                         "temperature; fix: rollout.temperature=1.0 or rollout.name=hf")
    if r.workers:
        raise ValueError(f"rollout.workers={r.workers} runs HFEngine workers; with rollout.name=vllm set "
                         "rollout.workers=0")
    if r.logprobs_k < 1:
        raise ValueError(f"rollout.logprobs_k={r.logprobs_k} must be >= 1")
    check_memory_share(r.gpu_memory_utilization, "rollout.gpu_memory_utilization={}")


def check_memory_share(share: float, setting: str, fix: float = 0.05, against_free: bool = True) -> None:
    """vLLM's ``gpu_memory_utilization`` in (0, 1] and, without CUDA (vLLM's CPU build reserves that share of
    host RAM for its KV cache), at most the share of host RAM free now. ``setting`` is how the user spells it,
    with ``{}`` for the value (``"rollout.gpu_memory_utilization={}"``, ``"--gpu-memory-utilization {}"``);
    ``fix`` the share the message suggests; ``against_free=False`` checks the range alone (a KV cache given in
    bytes replaces the share). Raises ValueError naming the setting and the fix. Checks only the
    free share at this moment, not what the model's weights and context need."""
    said = setting.format(share)
    if not 0 < share <= 1:
        raise ValueError(f"{said} must be in (0, 1]; fix: {setting.format(fix)} on a shared CPU machine")
    free = host_memory_fraction_free() if against_free else None
    if free is not None and share > free:
        raise ValueError(f"{said}: on vLLM's CPU build that is the share of host RAM reserved for its KV cache, "
                         f"and only {free:.2f} of it is free; fix: {setting.format(fix)}")


def host_memory_fraction_free() -> float | None:
    """Without CUDA: ``MemAvailable / MemTotal`` from ``/proc/meminfo`` (None with CUDA or when unreadable)."""
    import torch

    if torch.cuda.is_available():
        return None
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines() if ":" in line)
        return int(info["MemAvailable"].split()[0]) / int(info["MemTotal"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


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
