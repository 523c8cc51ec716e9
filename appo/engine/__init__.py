"""Rollout engines: the :class:`~appo.engine.base.Engine` protocol, :class:`~appo.engine.hf.HFEngine`
(transformers, direct decode loop, prefix-KV reuse for forks), :class:`~appo.engine.vllm.VLLMEngine` (CUDA),
teacher-forced scoring, and :mod:`appo.engine.registry` (engines by ``rollout.name``).

May import: :mod:`appo.core` (entropy), :mod:`appo.models` (model paths, lazily, for vLLM), :mod:`appo.plugins`. Not
the agent, the config or the trainer.
"""
