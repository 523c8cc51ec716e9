"""Build and run ``appo serve``: load a model (or a run's checkpoint) and serve it over HTTP with uvicorn."""

from __future__ import annotations

from typing import Any

from appo.serve.app import ServerSettings, create_app
from appo.serve.generation import ServedGenerator
from appo.serve.model import detect_protocol, load_served, resolve_source


def build_app(model: str, *, name: str | None = None, protocol: str = "auto", device: str = "auto",
              dtype: str = "float32", max_tokens: int = 512, max_batch_size: int = 16,
              num_threads: int | None = None) -> Any:
    """The ASGI app serving ``model``: a model folder / hub id / gguf / alias, a run directory (its latest
    checkpoint), ``RUN/checkpoints/step_N`` or ``RUN/checkpoints/latest``.

    ``name``: the model id clients use (default: ``RUN/step_N`` for a checkpoint, the folder name for a
    model). ``protocol``: ``auto`` takes a run's ``rollout.protocol``, else ``hermes`` when the chat
    template writes ``<tool_call>``, else ``tags``. The app's ``state.generator`` and
    ``state.settings`` hold what it serves.
    """
    from appo.agent.protocols import PROTOCOLS, end_of_turn_ids
    from appo.engine.hf import HFEngine

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
    settings = ServerSettings(model_name=name or source.default_name, protocol=protocol, max_tokens=max_tokens)
    app = create_app(generator, settings)
    app.state.generator, app.state.settings, app.state.source = generator, settings, source
    return app


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **options) -> None:
    """Serve ``model`` (see :func:`build_app` for ``options``) until interrupted; blocks."""
    import uvicorn

    app = build_app(model, **options)
    s = app.state.settings
    print(f"appo serve: {s.model_name!r} ({s.protocol} protocol) on http://{host}:{port}/v1", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
