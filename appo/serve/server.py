"""Build and run ``appo serve``: load a model (or a run's checkpoint) and serve it over HTTP with uvicorn.

Shutdown (SIGTERM, SIGINT): the server stops accepting connections and sets ``generator.stopping``, so
every generation in flight ends before its next chunk (a waiting request gets 503, a stream ends); uvicorn
then waits at most ``graceful_s`` seconds for open connections before it exits.
"""

from __future__ import annotations

import os
from typing import Any

from appo.serve.app import ServerSettings, create_app
from appo.serve.generation import ServedGenerator
from appo.serve.model import detect_protocol, load_served, resolve_source


def build_app(model: str, *, name: str | None = None, protocol: str = "auto", device: str = "auto",
              dtype: str = "float32", max_tokens: int = 512, max_batch_size: int = 16,
              num_threads: int | None = None, api_key: str | None = None,
              max_body_bytes: int = 4 * 2**20) -> Any:
    """The ASGI app serving ``model``: a model folder / hub id / gguf / alias, a run directory (its latest
    checkpoint), ``RUN/checkpoints/step_N`` or ``RUN/checkpoints/latest``.

    ``name``: the model id clients use (default: ``RUN/step_N`` for a checkpoint, the folder name for a
    model). ``protocol``: ``auto`` takes a run's ``rollout.protocol``, else ``hermes`` when the chat
    template writes ``<tool_call>``, else ``tags``. ``api_key``: when set, every endpoint but ``/health``
    asks for ``Authorization: Bearer <api_key>`` (default ``$APPO_API_KEY``; None or empty: open).
    ``max_body_bytes``: larger request bodies get 413. Returns the ASGI app (:class:`appo.serve.guard.Guard`
    around the FastAPI app); ``app.state.generator`` and ``app.state.settings`` hold what it serves.
    """
    from appo.agent.protocols import PROTOCOLS, end_of_turn_ids
    from appo.engine.hf import HFEngine
    from appo.serve.guard import Guard

    source = resolve_source(model)
    lm, tokenizer = load_served(source, dtype=dtype, device=device)
    if protocol == "auto":
        protocol = source.protocol or detect_protocol(tokenizer)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)} or auto")
    eos = set(end_of_turn_ids(tokenizer))
    gen_eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    eos |= set(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos] if gen_eos is not None else [])
    engine = HFEngine(lm, tokenizer, max_batch_size=max_batch_size, eos_token_ids=sorted(eos), num_threads=num_threads)
    generator = ServedGenerator(engine, tokenizer, lm, end_ids=eos)
    settings = ServerSettings(model_name=name or source.default_name, protocol=protocol, max_tokens=max_tokens,
                              max_context=context_length(lm))
    app = create_app(generator, settings)
    app.state.generator, app.state.settings, app.state.source = generator, settings, source
    key = os.environ.get("APPO_API_KEY") if api_key is None else api_key
    guarded = Guard(app, api_key=key or None, max_body_bytes=max_body_bytes)
    guarded.state = app.state
    return guarded


def context_length(model) -> int | None:
    """The model's context length from its config (``max_position_embeddings`` or the older names), or None."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          graceful_s: float = 5.0, **options) -> None:
    """Serve ``model`` (see :func:`build_app` for ``options``) until SIGTERM/SIGINT (module docstring); blocks."""
    import uvicorn

    app = build_app(model, **options)
    s, generator = app.state.settings, app.state.generator

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            generator.stopping.set()  # in-flight generations end before their next chunk
            super().handle_exit(sig, frame)

    guard = "API key required" if app.api_key else "no API key: anyone who can reach the port may use it"
    print(f"appo serve: {s.model_name!r} ({s.protocol} protocol, context {s.max_context}) on "
          f"http://{host}:{port}/v1 ({guard})", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_s)
    _Server(config).run()
