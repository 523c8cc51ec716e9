"""The OpenAI-compatible HTTP server: :func:`create_app` builds the ASGI app, :func:`serve` runs it.

Endpoints (FastAPI, served by uvicorn):

- ``GET /v1/models``: the one served model.
- ``POST /v1/chat/completions``: ``messages``, ``tools`` (OpenAI function schemas), ``tool_choice``
  (``auto`` or ``none``), ``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``n``,
  ``stop``, ``seed``, ``logprobs`` + ``top_logprobs``, ``stream`` (+ ``stream_options.include_usage``).
  Messages are rendered in the model's own tool-call protocol and turns parsed back into ``tool_calls``
  (:mod:`appo.serve.chat`).
- ``POST /v1/completions``: raw continuation of ``prompt`` (a string, or a list of token ids), with
  ``logprobs`` (an int: the legacy format with ``tokens``, ``token_logprobs``, ``top_logprobs``,
  ``text_offset``), ``stop``, ``n``, ``seed``, ``stream``.
- ``GET /health``.

Streaming is Server-Sent Events (``data: {chunk}`` lines, then ``data: [DONE]``), produced chunk by chunk
while the engine generates (:meth:`ServedGenerator.stream`). When the request has ``tools`` a chat
stream sends the turn in one content/tool-call delta once it is finished (a call can only be told apart
from text once it is closed). Left out: ``echo``, ``logit_bias``, ``presence/frequency_penalty``
(refused when nonzero), ``response_format``, ``tool_choice`` ``required`` or a named function, images,
streaming with ``n > 1``, and more than one model per server.

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``): 400 for bad input
(validation included), 404 for an unknown model.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from appo.agent.protocols import get_protocol
from appo.engine.base import SamplingParams
from appo.serve.chat import ParsedTurn, parse_turn, render_prompt, request_tools
from appo.serve.generation import Sample, ServedGenerator


class APIError(Exception):
    """An error returned to the client as an OpenAI error object."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.message, self.status, self.kind, self.param = message, status, kind, param


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class ChatBody(_Body):
    """The request body of ``/v1/chat/completions`` (unknown fields are ignored)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


class CompletionBody(_Body):
    """The request body of ``/v1/completions``."""

    prompt: str | list[str] | list[int]
    logprobs: int | None = None
    echo: bool = False


@dataclass(frozen=True)
class ServerSettings:
    """What the app serves and its defaults."""

    model_name: str
    """The model id clients send and ``/v1/models`` lists."""
    protocol: str = "tags"
    """The model's tool-call protocol (``tags``, ``hermes`` or another registered one)."""
    max_tokens: int = 512
    """Default ``max_tokens`` when a request gives none."""
    max_tokens_limit: int = 8192
    """Largest ``max_tokens`` accepted."""
    max_n: int = 16
    """Largest ``n`` accepted."""
    max_top_logprobs: int = 20
    """Largest ``top_logprobs`` accepted (as OpenAI)."""


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status_code=status)


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(generator: ServedGenerator, settings: ServerSettings) -> FastAPI:
    """The FastAPI app serving ``generator`` under ``settings`` (endpoints in the module docstring)."""
    app = FastAPI(title="appo serve", version="1")
    proto = get_protocol(settings.protocol)
    proto.bind(generator.tokenizer)

    @app.exception_handler(APIError)
    async def _api_error(_req: Request, exc: APIError):
        return _error(exc.status, exc.message, exc.kind, exc.param)

    @app.exception_handler(ValueError)
    async def _value_error(_req: Request, exc: ValueError):  # the engine's checks of a request (ids, lengths)
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"invalid request: {where}: {first.get('msg', 'bad value')}", param=where or None)

    def check_common(body: _Body) -> None:
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

    def sampling(body: _Body, max_tokens: int | None) -> SamplingParams:
        mt = settings.max_tokens if max_tokens is None else max_tokens
        if not 1 <= mt <= settings.max_tokens_limit:
            raise APIError(f"max_tokens must be in [1, {settings.max_tokens_limit}]", param="max_tokens")
        return SamplingParams(temperature=1.0 if body.temperature is None else body.temperature,
                              top_p=1.0 if body.top_p is None else body.top_p, max_new_tokens=mt,
                              seed=None if body.seed is None else body.seed % 2**31)

    def user_stops(body: _Body) -> tuple[str, ...]:
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise APIError("stop takes at most 4 non-empty strings", param="stop")
        return tuple(stops)

    def usage(prompt: int, completion: int) -> dict:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

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

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatBody):
        check_common(body)
        if body.top_logprobs is not None and not 0 <= body.top_logprobs <= settings.max_top_logprobs:
            raise APIError(f"top_logprobs must be in [0, {settings.max_top_logprobs}]", param="top_logprobs")
        choice = body.tool_choice if body.tool_choice is not None else "auto"
        if choice not in ("auto", "none"):
            raise APIError("tool_choice supports 'auto' and 'none' only", param="tool_choice")
        try:
            tools = request_tools(body.tools)
            prompt_ids = render_prompt(generator.tokenizer, proto, body.messages, tools)
        except ValueError as exc:
            raise APIError(str(exc), param="messages") from None
        parse_tools = tools if choice == "auto" else {}
        params = sampling(body, body.max_completion_tokens or body.max_tokens)
        pstops = proto.stop_strings(parse_tools) if parse_tools else ()
        ustops = user_stops(body)
        rid, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())

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
                for delta, done in generator.stream(prompt_ids, params, pstops, ustops):
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
                if (body.stream_options or {}).get("include_usage"):
                    yield _sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                                "model": settings.model_name, "choices": [],
                                "usage": usage(len(prompt_ids), len(final.token_ids))})
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        samples = generator.generate(prompt_ids, params, body.n, pstops, ustops)
        choices = []
        for i, s in enumerate(samples):
            turn = parse_turn(proto, s.text, s.finish, parse_tools)
            choices.append({"index": i, "message": chat_message(turn),
                            "logprobs": chat_logprobs(prompt_ids, s, body, params),
                            "finish_reason": finish_reason(s, turn)})
        return {"id": rid, "object": "chat.completion", "created": created, "model": settings.model_name,
                "choices": choices, "usage": usage(len(prompt_ids), sum(len(s.token_ids) for s in samples))}

    # -- completions ----------------------------------------------------------------------------------------------
    def completion_logprobs(prompt_ids, sample: Sample, k: int | None, params: SamplingParams) -> dict | None:
        if k is None:
            return None
        if not 0 <= k <= 5:
            raise APIError("logprobs must be in [0, 5]", param="logprobs")
        lps = generator.token_logprobs(prompt_ids, sample.token_ids, params.temperature, k)
        offsets, pos = [], 0
        for lp in lps:
            offsets.append(pos)
            pos += len(lp.token)
        return {"tokens": [lp.token for lp in lps], "token_logprobs": [lp.logprob for lp in lps],
                "top_logprobs": [dict(lp.top) for lp in lps] if k else None, "text_offset": offsets}

    @app.post("/v1/completions")
    def completions(body: CompletionBody):
        check_common(body)
        if body.echo:
            raise APIError("echo is not supported", param="echo")
        if isinstance(body.prompt, list) and body.prompt and all(isinstance(t, int) for t in body.prompt):
            prompt_ids = [int(t) for t in body.prompt]
        elif isinstance(body.prompt, str) or (isinstance(body.prompt, list) and len(body.prompt) == 1):
            text = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
            prompt_ids = list(generator.tokenizer.encode(text, add_special_tokens=False))
        else:
            raise APIError("prompt must be one string or a list of token ids", param="prompt")
        if not prompt_ids:
            raise APIError("prompt is empty", param="prompt")
        params = sampling(body, body.max_tokens if body.max_tokens is not None else 16)
        ustops = user_stops(body)
        rid, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())

        def reason(s: Sample) -> str:
            return "length" if s.finish == "length" else "stop"

        if body.stream:
            def events():
                def chunk(text: str, finish: str | None = None, logprobs: dict | None = None) -> str:
                    return _sse({"id": rid, "object": "text_completion", "created": created,
                                 "model": settings.model_name,
                                 "choices": [{"index": 0, "text": text, "logprobs": logprobs,
                                              "finish_reason": finish}]})

                final = None
                for delta, done in generator.stream(prompt_ids, params, (), ustops):
                    if done is not None:
                        final = done
                    elif delta:
                        yield chunk(delta)
                yield chunk("", reason(final), completion_logprobs(prompt_ids, final, body.logprobs, params))
                if (body.stream_options or {}).get("include_usage"):
                    yield _sse({"id": rid, "object": "text_completion", "created": created,
                                "model": settings.model_name, "choices": [],
                                "usage": usage(len(prompt_ids), len(final.token_ids))})
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        samples = generator.generate(prompt_ids, params, body.n, (), ustops)
        choices = [{"index": i, "text": s.text, "logprobs": completion_logprobs(prompt_ids, s, body.logprobs, params),
                    "finish_reason": reason(s)} for i, s in enumerate(samples)]
        return {"id": rid, "object": "text_completion", "created": created, "model": settings.model_name,
                "choices": choices, "usage": usage(len(prompt_ids), sum(len(s.token_ids) for s in samples))}

    return app
