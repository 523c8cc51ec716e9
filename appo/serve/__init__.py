"""Serving and calling OpenAI-compatible endpoints.

- :func:`~appo.serve.server.build_app` / :func:`~appo.serve.server.serve`: ``appo serve``, an
  OpenAI-compatible HTTP server (FastAPI + uvicorn) over the HF engine, for a model or a run's checkpoint;
  :func:`~appo.serve.app.create_app` builds the app around any engine.
- :mod:`appo.serve.client`: the OpenAI client side: a chat-level agent loop with our tools and
  rewards (``appo eval --endpoint``), used by the LLM-judge reward too.
- :func:`~appo.serve.vllm_serve.serve_vllm`: ``appo vllm-serve``, vLLM's own OpenAI server with our tool-call
  parser plugin (:mod:`appo.serve.vllm_parser`, imported only by a vLLM server) and, for ``tags``, our chat
  template (:mod:`appo.serve.tags_template`).

Names are imported lazily (FastAPI and openai load only when used).

May import: :mod:`appo.agent`, :mod:`appo.engine`, :mod:`appo.eval`, :mod:`appo.models`, :mod:`appo.prompts`,
:mod:`appo.rewards`, :mod:`appo.tools`, :mod:`appo.train` (checkpoints), :mod:`appo.types`. Nothing below it imports
it.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_app": "appo.serve.server",
    "serve": "appo.serve.server",
    "create_app": "appo.serve.app",
    "ServerSettings": "appo.serve.app",
    "ServedGenerator": "appo.serve.generation",
    "resolve_source": "appo.serve.model",
    "evaluate_endpoint": "appo.serve.client",
    "evaluate_endpoint_benchmarks": "appo.serve.client",
    "ChatAgent": "appo.serve.client",
    "serve_vllm": "appo.serve.vllm_serve",
    "VLLMServeOptions": "appo.serve.vllm_serve",
    "tags_chat_template": "appo.serve.tags_template",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'appo.serve' has no attribute {name!r}")
