"""The OpenAI-compatible HTTP server: :func:`create_app` builds the ASGI app, :func:`serve` runs it.

Endpoints (FastAPI, served by uvicorn):

- ``GET /v1/models``: the one served model.
- ``POST /v1/chat/completions``: ``messages``, ``tools`` (OpenAI function schemas), ``tool_choice``
  (``auto`` or ``none``), ``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``n``,
  ``stop``, ``seed``, ``logprobs`` + ``top_logprobs``, ``stream`` (+ ``stream_options.include_usage``).
  Messages are rendered in the model's own tool-call protocol and turns parsed back into ``tool_calls``
  (:mod:`appo.serve.chat`).
- ``POST /v1/completions``: raw continuation of ``prompt``: a string, a list of token ids, or a batch of
  either (``["a", "b"]``, ``[[ids], [ids]]``; choice ``i * n + j`` is sample ``j`` of prompt ``i``), with
  ``logprobs`` (an int <= 5: the legacy format with ``tokens``, ``token_logprobs``, ``top_logprobs``,
  ``text_offset``), ``echo`` (the prompt is prepended to the text, and with ``logprobs`` its tokens are
  scored too, the first one ``None``; ``max_tokens=0`` scores the prompt only: what lm-eval's
  loglikelihood tasks send), ``stop``, ``n``, ``seed``, ``stream``.
- ``GET /health``.

Streaming is Server-Sent Events (``data: {chunk}`` lines, then ``data: [DONE]``), produced chunk by chunk
while the engine generates (:meth:`ServedGenerator.stream`). When the request has ``tools`` a chat
stream sends the turn in one content/tool-call delta once it is finished (a call can only be told apart
from text once it is closed). A streamed completion with ``logprobs`` carries them, for every token, in
its last chunk. Left out: ``logit_bias``, ``presence/frequency_penalty`` (refused when nonzero),
``response_format``, ``tool_choice`` ``required`` or a named function, images, streaming with ``n > 1``,
a batch of prompts or ``echo``, and more than one model per server.

Limits: prompt tokens + ``max_tokens`` must fit the model's context (``max_position_embeddings``),
else 400 ``context_length_exceeded``; without ``max_tokens`` a request gets the default cut to what is
left of the context. Bodies over ``max_body_bytes`` get 413 (:mod:`appo.serve.guard`, which also checks
the API key).

Clients that leave: every handler runs its generation on a worker thread and polls
``request.is_disconnected()``; once the client is gone it sets the request's cancel event, and the
generator stops before its next chunk (:mod:`appo.serve.generation`). A stream the client closes is
cancelled the same way. On shutdown ``generator.stopping`` cancels everything in flight (503 for a
request still waiting).

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``): 400 for bad input
(validation included; bodies are typed in :mod:`appo.serve.schema`), 401 without the API key, 404 for
an unknown model, 413 for a body over the cap; any unexpected failure is a JSON 500 without traceback.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from appo.agent.protocols import get_protocol
from appo.engine.base import SamplingParams
from appo.serve.chat import ParsedTurn, parse_turn, render_prompt, request_tools
from appo.serve.generation import Cancelled, Sample, ServedGenerator
from appo.serve.schema import Body, ChatBody, CompletionBody, validation_message


class APIError(Exception):
    """An error returned to the client as an OpenAI error object."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.kind, self.param, self.code = message, status, kind, param, code


@dataclass(frozen=True)
class ServerSettings:
    """What the app serves and its defaults."""

    model_name: str
    """The model id clients send and ``/v1/models`` lists."""
    protocol: str = "tags"
    """The model's tool-call protocol (``tags``, ``hermes`` or another registered one)."""
    max_tokens: int = 512
    """Default ``max_tokens`` when a request gives none (cut to what is left of the context)."""
    max_tokens_limit: int = 8192
    """Largest ``max_tokens`` accepted."""
    max_n: int = 16
    """Largest ``n`` accepted."""
    max_top_logprobs: int = 20
    """Largest ``top_logprobs`` accepted (as OpenAI)."""
    max_context: int | None = None
    """The model's context length (prompt + completion tokens); None: unchecked."""
    max_prompts: int = 64
    """Largest batch of prompts one ``/v1/completions`` request may send."""
    disconnect_poll_s: float = 0.2
    """How often a handler checks whether its client is still connected."""


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _watch(request: Request, cancel: threading.Event, every_s: float) -> None:
    """Set ``cancel`` once the client has disconnected."""
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(every_s)


async def _run(request: Request, cancel: threading.Event, every_s: float, fn, *args):
    """``fn(*args)`` on a worker thread while watching the client; raises :class:`Cancelled` as ``fn`` does."""
    watcher = asyncio.ensure_future(_watch(request, cancel, every_s))
    try:
        return await run_in_threadpool(fn, *args)
    finally:
        watcher.cancel()


_END = object()


def _next(it):
    try:
        return next(it)
    except (StopIteration, Cancelled):
        return _END


async def _pump(request: Request, cancel: threading.Event, every_s: float, events):
    """An async SSE body over the sync iterator ``events`` (each item computed on a worker thread); the
    client's disconnect, or the response being dropped, cancels the generation."""
    watcher = asyncio.ensure_future(_watch(request, cancel, every_s))
    try:
        while True:
            try:
                item = await run_in_threadpool(_next, events)
            except Exception as exc:  # noqa: BLE001 - the status line is sent: report in the stream, then end it
                kind = "invalid_request_error" if isinstance(exc, ValueError) else "server_error"
                yield _sse({"error": {"message": str(exc) if kind != "server_error" else
                                      f"internal error: {type(exc).__name__}", "type": kind, "param": None,
                                      "code": None}})
                return
            if item is _END:
                return
            yield item
    finally:
        cancel.set()
        watcher.cancel()
        try:
            events.close()
        except ValueError:  # still running on a worker thread: it stops before its next chunk
            pass


def create_app(generator: ServedGenerator, settings: ServerSettings) -> FastAPI:
    """The FastAPI app serving ``generator`` under ``settings`` (endpoints in the module docstring)."""
    app = FastAPI(title="appo serve", version="1")
    proto = get_protocol(settings.protocol)
    proto.bind(generator.tokenizer)
    poll = settings.disconnect_poll_s

    @app.exception_handler(APIError)
    async def _api_error(_req: Request, exc: APIError):
        return _error(exc.status, exc.message, exc.kind, exc.param, exc.code)

    @app.exception_handler(ValueError)
    async def _value_error(_req: Request, exc: ValueError):  # the engine's checks of a request (ids, lengths)
        return _error(400, str(exc))

    @app.exception_handler(Cancelled)
    async def _cancelled(_req: Request, _exc: Cancelled):
        return _error(503, "the request was cancelled (the client left or the server is shutting down)",
                      "server_error", code="cancelled")

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        message, param = validation_message(list(exc.errors()))
        return _error(400, message, param=param)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception):  # a bug of ours: JSON, not a plain-text traceback
        return _error(500, f"internal error: {type(exc).__name__}", "server_error")

    def check_common(body: Body) -> None:
        if body.model != settings.model_name:
            raise APIError(f"model {body.model!r} is not served here; this server serves {settings.model_name!r}",
                           404, "not_found_error", "model")
        if not 1 <= body.n <= settings.max_n:
            raise APIError(f"n must be in [1, {settings.max_n}]", param="n")
        if body.stream and body.n != 1:
            raise APIError("streaming supports n=1 only", param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise APIError(f"{name} is not supported; leave it at 0", param=name)
        if body.temperature is not None and not 0 <= body.temperature <= 2:
            raise APIError("temperature must be in [0, 2]", param="temperature")
        if body.top_p is not None and not 0 < body.top_p <= 1:
            raise APIError("top_p must be in (0, 1]", param="top_p")

    def budget(prompt_len: int, requested: int | None, default: int, what: str, allow_zero: bool = False) -> int:
        """max_tokens of a request: checked against the limit and the context (module docstring)."""
        ctx = settings.max_context
        lo = 0 if allow_zero else 1
        if requested is not None and not lo <= requested <= settings.max_tokens_limit:
            raise APIError(f"max_tokens must be in [{lo}, {settings.max_tokens_limit}]", param="max_tokens")
        mt = requested if requested is not None else default
        if ctx is not None and requested is None:
            mt = max(lo, min(mt, ctx - prompt_len))
        if ctx is not None and prompt_len + mt > ctx:
            raise APIError(f"This model's maximum context length is {ctx} tokens. However, you requested "
                           f"{prompt_len + mt} tokens ({prompt_len} in the {what}, {mt} in the completion). "
                           f"Please reduce the length of the {what} or completion.",
                           param=what, code="context_length_exceeded")
        return mt

    def sampling(body: Body, max_new: int) -> SamplingParams:
        return SamplingParams(temperature=1.0 if body.temperature is None else body.temperature,
                              top_p=1.0 if body.top_p is None else body.top_p, max_new_tokens=max_new,
                              seed=None if body.seed is None else body.seed % 2**31)

    def user_stops(body: Body) -> tuple[str, ...]:
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise APIError("stop takes at most 4 non-empty strings", param="stop")
        return tuple(stops)

    def usage(prompt: int, completion: int) -> dict:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def include_usage(body: Body) -> bool:
        return bool(body.stream_options and body.stream_options.include_usage)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                             "owned_by": "appo"}]}

    # -- chat -----------------------------------------------------------------------------------------------------
    def chat_message(turn: ParsedTurn) -> dict:
        msg: dict[str, Any] = {"role": "assistant", "content": turn.content}
        if turn.tool_calls:
            msg["tool_calls"] = [
                {"id": f"call_{secrets.token_hex(8)}", "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                for c in turn.tool_calls]
        return msg

    def chat_logprobs(prompt_ids, sample: Sample, body: ChatBody, params: SamplingParams) -> dict | None:
        if not body.logprobs:
            return None
        k = body.top_logprobs or 0
        lps = generator.token_logprobs(prompt_ids, sample.token_ids, params.temperature, k)
        return {"content": [{"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
                             "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in lp.top]}
                            for lp in lps]}

    def prepare_chat(body: ChatBody):
        """Checks and the rendered prompt (runs on a worker thread: a long prompt takes a while to tokenize)."""
        check_common(body)
        if body.top_logprobs is not None and not 0 <= body.top_logprobs <= settings.max_top_logprobs:
            raise APIError(f"top_logprobs must be in [0, {settings.max_top_logprobs}]", param="top_logprobs")
        choice = body.tool_choice if body.tool_choice is not None else "auto"
        if choice not in ("auto", "none"):
            raise APIError("tool_choice supports 'auto' and 'none' only", param="tool_choice")
        try:
            tools = request_tools(body.tool_dicts())
            prompt_ids = render_prompt(generator.tokenizer, proto, body.message_dicts(), tools)
        except ValueError as exc:
            raise APIError(str(exc), param="messages") from None
        parse_tools = tools if choice == "auto" else {}
        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        params = sampling(body, budget(len(prompt_ids), requested, settings.max_tokens, "messages"))
        return prompt_ids, parse_tools, params, user_stops(body)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody, request: Request):
        prompt_ids, parse_tools, params, ustops = await run_in_threadpool(prepare_chat, body)
        pstops = proto.stop_strings(parse_tools) if parse_tools else ()
        rid, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
        cancel = threading.Event()

        def finish_reason(sample: Sample, turn: ParsedTurn) -> str:
            return "tool_calls" if turn.tool_calls else ("length" if sample.finish == "length" else "stop")

        if body.stream:
            def events():
                def chunk(delta: dict, finish: str | None = None, logprobs: dict | None = None) -> str:
                    return _sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                                 "model": settings.model_name,
                                 "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                              "finish_reason": finish}]})

                yield chunk({"role": "assistant", "content": ""})
                final: Sample | None = None
                for delta, done in generator.stream(prompt_ids, params, pstops, ustops, cancel):
                    if done is not None:
                        final = done
                    elif delta and not parse_tools:
                        yield chunk({"content": delta})
                turn = parse_turn(proto, final.text, final.finish, parse_tools)
                lp = chat_logprobs(prompt_ids, final, body, params)
                if parse_tools:
                    msg = chat_message(turn)
                    delta = {"content": msg["content"]} if msg["content"] else {}
                    if "tool_calls" in msg:
                        delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(msg["tool_calls"])]
                    if delta:
                        yield chunk(delta, logprobs=lp)
                        lp = None
                yield chunk({}, finish_reason(final, turn), lp)
                if include_usage(body):
                    yield _sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                                "model": settings.model_name, "choices": [],
                                "usage": usage(len(prompt_ids), len(final.token_ids))})
                yield "data: [DONE]\n\n"

            return StreamingResponse(_pump(request, cancel, poll, events()), media_type="text/event-stream")

        def whole():
            samples = generator.generate(prompt_ids, params, body.n, pstops, ustops, cancel)
            choices = []
            for i, s in enumerate(samples):
                turn = parse_turn(proto, s.text, s.finish, parse_tools)
                choices.append({"index": i, "message": chat_message(turn),
                                "logprobs": chat_logprobs(prompt_ids, s, body, params),
                                "finish_reason": finish_reason(s, turn)})
            return {"id": rid, "object": "chat.completion", "created": created, "model": settings.model_name,
                    "choices": choices, "usage": usage(len(prompt_ids), sum(len(s.token_ids) for s in samples))}

        return await _run(request, cancel, poll, whole)

    # -- completions ----------------------------------------------------------------------------------------------
    def completion_logprobs(prompt_ids, sample: Sample, k: int | None, params: SamplingParams,
                            echo: bool) -> dict | None:
        """The legacy ``logprobs`` object; with ``echo`` the prompt's tokens first (the very first ``None``)."""
        if k is None:
            return None
        if echo:
            lps = generator.token_logprobs(prompt_ids[:1], list(prompt_ids[1:]) + list(sample.token_ids),
                                           params.temperature, k)
            first = generator.decode(prompt_ids[:1])
            tokens = [first] + [lp.token for lp in lps]
            values = [None] + [lp.logprob for lp in lps]
            tops = [None] + [dict(lp.top) for lp in lps]
        else:
            lps = generator.token_logprobs(prompt_ids, sample.token_ids, params.temperature, k)
            tokens, values, tops = [lp.token for lp in lps], [lp.logprob for lp in lps], [dict(lp.top) for lp in lps]
        offsets, pos = [], 0
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops if k else None,
                "text_offset": offsets}

    def prompt_batch(prompt) -> list[list[int]]:
        """The request's prompts as token ids (module docstring lists the accepted shapes)."""
        if isinstance(prompt, str):
            prompt = [prompt]
        if not prompt:
            raise APIError("prompt is empty", param="prompt")
        if all(isinstance(t, int) for t in prompt):
            batch = [[int(t) for t in prompt]]
        elif all(isinstance(p, str) for p in prompt):
            batch = [list(generator.tokenizer.encode(p, add_special_tokens=False)) for p in prompt]
        else:
            batch = [[int(t) for t in p] for p in prompt]
        if len(batch) > settings.max_prompts:
            raise APIError(f"at most {settings.max_prompts} prompts per request", param="prompt")
        if any(not ids for ids in batch):
            raise APIError("prompt is empty (a prompt has no tokens)", param="prompt")
        return batch

    def prepare_completion(body: CompletionBody):
        check_common(body)
        if body.logprobs is not None and not 0 <= body.logprobs <= 5:
            raise APIError("logprobs must be in [0, 5]", param="logprobs")
        batch = prompt_batch(body.prompt)
        if body.stream and (len(batch) > 1 or body.echo):
            raise APIError("streaming supports one prompt without echo", param="stream")
        requested = body.max_tokens if body.max_tokens is not None else None
        max_new = [budget(len(ids), requested, 16, "prompt", allow_zero=body.echo) for ids in batch]
        return batch, [sampling(body, m) for m in max_new], user_stops(body)

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        batch, params_each, ustops = await run_in_threadpool(prepare_completion, body)
        rid, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
        cancel = threading.Event()

        def reason(s: Sample) -> str:
            return "length" if s.finish == "length" else "stop"

        if body.stream:
            prompt_ids, params = batch[0], params_each[0]

            def events():
                def chunk(text: str, finish: str | None = None, logprobs: dict | None = None) -> str:
                    return _sse({"id": rid, "object": "text_completion", "created": created,
                                 "model": settings.model_name,
                                 "choices": [{"index": 0, "text": text, "logprobs": logprobs,
                                              "finish_reason": finish}]})

                final = None
                for delta, done in generator.stream(prompt_ids, params, (), ustops, cancel):
                    if done is not None:
                        final = done
                    elif delta:
                        yield chunk(delta)
                yield chunk("", reason(final), completion_logprobs(prompt_ids, final, body.logprobs, params, False))
                if include_usage(body):
                    yield _sse({"id": rid, "object": "text_completion", "created": created,
                                "model": settings.model_name, "choices": [],
                                "usage": usage(len(prompt_ids), len(final.token_ids))})
                yield "data: [DONE]\n\n"

            return StreamingResponse(_pump(request, cancel, poll, events()), media_type="text/event-stream")

        def whole():
            choices, n_prompt, n_completion = [], 0, 0
            for prompt_ids, params in zip(batch, params_each):
                if params.max_new_tokens == 0:
                    samples = [Sample((), "", "length")] * body.n
                else:
                    samples = generator.generate(prompt_ids, params, body.n, (), ustops, cancel)
                prefix = generator.decode(prompt_ids) if body.echo else ""
                for s in samples:
                    choices.append({"index": len(choices), "text": prefix + s.text,
                                    "logprobs": completion_logprobs(prompt_ids, s, body.logprobs, params, body.echo),
                                    "finish_reason": reason(s)})
                n_prompt += len(prompt_ids)
                n_completion += sum(len(s.token_ids) for s in samples)
            return {"id": rid, "object": "text_completion", "created": created, "model": settings.model_name,
                    "choices": choices, "usage": usage(n_prompt, n_completion)}

        return await _run(request, cancel, poll, whole)

    return app
