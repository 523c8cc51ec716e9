"""Request bodies of the OpenAI-compatible server, validated before any work (pydantic models).

Every field a handler reads has a declared type, so a malformed body (a ``tool_calls`` that is not a list
of ``{"type": "function", "function": {"name", "arguments"}}``, a tool whose ``parameters.required`` is
not a list of strings, a string holding a lone UTF-16 surrogate, JSON that does not parse) is a
:class:`fastapi.exceptions.RequestValidationError`, which the app answers with a 400 OpenAI error
(:func:`validation_message` writes its one line). Unknown fields are ignored, as OpenAI does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _lone_surrogate(obj: Any, where: str = "body") -> str | None:
    """Where in ``obj`` (a parsed JSON value) a string holds a lone surrogate (not encodable as UTF-8)."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        bad = _lone_surrogate(k, where) if isinstance(k, str) else None
        bad = bad or _lone_surrogate(v, f"{where}.{k}")
        if bad:
            return bad
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Strict):
    include_usage: bool = False


class Body(_Strict):
    """The fields shared by chat and completions requests."""

    model: str
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_is_unicode(cls, data: Any) -> Any:
        where = _lone_surrogate(data, "")
        if where is not None:
            raise ValueError(f"the string at {where.lstrip('.') or 'the top level'} is not valid Unicode "
                             "(a lone UTF-16 surrogate); send UTF-8 text")
        return data


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"


class ToolCallItem(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    """One chat message (roles are checked by :func:`appo.serve.chat.render_prompt`)."""

    role: str
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCallItem] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class Parameters(_Strict):
    """A function's JSON-schema ``parameters`` (an object schema)."""

    type: Literal["object"] = "object"
    properties: dict[str, dict[str, Any]] | None = None
    required: list[str] | None = None


class FunctionSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: Parameters | None = None


class ToolSpec(_Strict):
    type: Literal["function"] = "function"
    function: FunctionSpec


class ChatBody(Body):
    """The request body of ``/v1/chat/completions`` (unknown fields are ignored)."""

    messages: list[Message]
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None

    def message_dicts(self) -> list[dict[str, Any]]:
        """``messages`` as plain dicts (what :func:`appo.serve.chat.render_prompt` reads)."""
        return [m.model_dump(exclude_none=True) for m in self.messages]

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        return None if self.tools is None else [t.model_dump(exclude_none=True) for t in self.tools]


class CompletionBody(Body):
    """The request body of ``/v1/completions``: ``prompt`` is a string, a list of strings (a batch), a list
    of token ids, or a list of such lists (a batch of token-id prompts)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """(one-line message, ``param``) for pydantic errors of a request body."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        pos = first.get("loc", ("body", None))[-1]
        why = (first.get("ctx") or {}).get("error", "")
        return f"the request body is not valid JSON ({why} at character {pos})", None
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = str(first.get("msg", "bad value")).removeprefix("Value error, ")
    if not where:
        return f"invalid request: {msg}", None
    return f"invalid request: {where}: {msg}", where
