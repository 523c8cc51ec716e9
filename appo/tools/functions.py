"""User functions as tools: a typed Python function with a Google-style docstring becomes a :class:`Tool`.

    @tool
    def lookup_population(city: str, year: int = 2020) -> str:
        '''Population of a city.

        Args:
            city: City name, e.g. "Paris".
            year: Census year.
        '''
        ...

The OpenAI-style schema comes from :func:`transformers.utils.get_json_schema` (every argument needs a
type hint and an ``Args:`` entry; ``Literal`` gives an ``enum``, ``X | None`` a ``nullable``). The tool
works with both protocols:

- **Hermes JSON** (``{"name": "lookup_population", "arguments": {"city": "Paris"}}``): the arguments
  object is validated against the schema as is: required arguments present, no unknown ones, types
  matching (an integral float such as ``3.0`` counts as an integer; a bool is not a number).
- **Tags** (``<lookup_population>Paris</lookup_population>``): the tag name is the function name and
  the body arrives as the ``tag_argument`` (by default the first required argument, else the first
  one). If the body is a JSON object whose keys are all argument names, it is taken as the whole
  argument object (``<f>{"city": "Paris", "year": 1990}</f>``); otherwise it is the value of the tag
  argument, parsed as JSON first when that argument is not a string (``<square>12</square>``).

The function runs in a daemon thread with a wall-clock limit (``timeout_s``); a call that passes it
returns an error result at once, but Python cannot stop the thread, which runs on in the background
(use the ``python`` sandbox for untrusted code). Exceptions become ``ok=False`` results naming the
exception. Return values become text: ``str`` as is, ``None`` as ``(no output)``, ``bytes`` decoded,
dicts/lists as JSON, anything else with ``str()``; a returned :class:`~appo.types.ToolResult` is passed
through. Text is cut to ``max_output_chars`` (head and tail kept). ``async def`` functions are run
with :func:`asyncio.run`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import threading
from typing import Any, Callable

from transformers.utils import get_json_schema

from appo.tools.base import Tool
from appo.types import ToolResult

__all__ = ["FunctionTool", "tool", "validate_arguments"]

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, (list, tuple)),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _check(value: Any, schema: dict, where: str) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` fits ``schema`` (integral floats made ints), else ``(value, why)``."""
    if value is None and schema.get("nullable"):
        return None, None
    if "enum" in schema and value not in schema["enum"]:
        return value, f"{where} must be one of {schema['enum']} (got {value!r:.60})"
    types = schema.get("type")
    if types is None:
        return value, None
    types = [types] if isinstance(types, str) else list(types)
    if "integer" in types and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    matched = next((t for t in types if t in _TYPES and _TYPES[t](value)), None)
    if matched is None:
        return value, f"{where} must be {' or '.join(types)} (got {type(value).__name__} {value!r:.60})"
    if matched == "array":
        out = list(value)
        prefix = schema.get("prefixItems")
        if prefix is not None:
            if len(out) != len(prefix):
                return value, f"{where} must have {len(prefix)} items (got {len(out)})"
            pairs = list(zip(range(len(out)), prefix))
        elif "items" in schema:
            pairs = [(i, schema["items"]) for i in range(len(out))]
        else:
            pairs = []
        for i, sub in pairs:
            out[i], why = _check(out[i], sub, f"{where}[{i}]")
            if why:
                return value, why
        return out, None
    if matched == "object" and isinstance(schema.get("additionalProperties"), dict):
        out = {}
        for k, v in value.items():
            out[k], why = _check(v, schema["additionalProperties"], f"{where}[{k!r}]")
            if why:
                return value, why
        return out, None
    return value, None


def validate_arguments(arguments: Any, parameters: dict) -> tuple[dict, str | None]:
    """Check ``arguments`` against an object schema: ``(cleaned, None)`` or ``(arguments, error text)``."""
    if not isinstance(arguments, dict):
        return arguments, f"arguments must be a JSON object, got {type(arguments).__name__}"
    props = parameters.get("properties") or {}
    unknown = [k for k in arguments if k not in props]
    if unknown:
        return arguments, f"unexpected argument {unknown[0]!r}; the arguments are: {', '.join(props) or 'none'}"
    missing = [k for k in parameters.get("required") or [] if k not in arguments]
    if missing:
        return arguments, f"missing required argument {missing[0]!r}"
    cleaned = {}
    for k, v in arguments.items():
        cleaned[k], why = _check(v, props[k], f"argument {k!r}")
        if why:
            return arguments, why
    return cleaned, None


def _to_text(value: Any) -> str:
    if value is None:
        return "(no output)"
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


_CONTROL = {c: "\ufffd" for c in range(32) if chr(c) not in "\n\t\r"}


def _cut(text: str, limit: int) -> str:
    text = text.translate(_CONTROL).encode("utf-8", "replace").decode("utf-8")
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n... [{len(text) - head - tail} characters omitted] ...\n{text[len(text) - tail:]}"


class _Timeout(Exception):
    """The function passed ``timeout_s`` (distinct from a TimeoutError the function raises itself)."""


class FunctionTool(Tool):
    """A Python function as a tool (see the module docstring for schema, arguments and results)."""

    def __init__(self, fn: Callable, *, name: str | None = None, description: str | None = None,
                 tag_argument: str | None = None, timeout_s: float | None = 60.0, max_output_chars: int = 4000,
                 max_workers: int = 4) -> None:
        """Wrap ``fn``; ``name``/``description`` override the function's own, ``timeout_s=None`` runs inline."""
        if not callable(fn):
            raise TypeError(f"FunctionTool needs a callable, got {type(fn).__name__}")
        try:
            schema = get_json_schema(fn)["function"]
        except Exception as exc:  # transformers' DocstringParsingException / TypeHintParsingException
            raise ValueError(
                f"cannot make a tool of {getattr(fn, '__qualname__', fn)!r}: {exc}. Give every argument a type "
                "hint and a Google-style docstring with a summary line and an 'Args:' entry per argument"
            ) from exc
        self.fn = fn
        self.name = name or schema["name"]
        self.description = description if description is not None else schema.get("description", "")
        self.parameters = schema.get("parameters") or {"type": "object", "properties": {}, "required": []}
        props = list((self.parameters.get("properties") or {}).keys())
        required = list(self.parameters.get("required") or [])
        if tag_argument is not None and tag_argument not in props:
            raise ValueError(f"tag_argument={tag_argument!r} is not an argument of {self.name}; choose from {props}")
        self.tag_argument = tag_argument or (required or props or [""])[0]
        self.timeout_s, self.max_output_chars, self.max_workers = timeout_s, max_output_chars, max_workers

    @classmethod
    def from_function(cls, fn: Callable, **kwargs) -> FunctionTool:
        """Same as ``FunctionTool(fn, **kwargs)``."""
        return cls(fn, **kwargs)

    def __call__(self, *args, **kwargs):
        """Call the wrapped function directly (so a ``@tool``-decorated function stays usable as one)."""
        return self.fn(*args, **kwargs)

    def _from_tag_body(self, arguments: dict) -> dict:
        """Tag-protocol conveniences: a JSON-object body, or a JSON-typed body for a non-string argument."""
        if set(arguments) != {self.tag_argument} or not isinstance(arguments[self.tag_argument], str):
            return arguments
        body = arguments[self.tag_argument]
        props = self.parameters.get("properties") or {}
        stripped = body.strip()
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and obj and all(k in props for k in obj):
                return obj
        types = props.get(self.tag_argument, {}).get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if types and "string" not in types:
            try:
                return {self.tag_argument: json.loads(stripped)}
            except ValueError:
                pass
        return arguments

    def call(self, arguments: dict) -> ToolResult:
        """Validate, run with the time limit, and convert the result; never raises."""
        if isinstance(arguments, dict):
            arguments = self._from_tag_body(arguments)
        cleaned, why = validate_arguments(arguments, self.parameters)
        if why:
            return ToolResult(f"Error: bad arguments for {self.name}: {why}.", False, "bad_arguments")
        try:
            value = self._run(cleaned)
        except _Timeout:
            return ToolResult(f"Error: {self.name} did not finish within {self.timeout_s:g} s.", False, "timeout")
        except Exception as exc:  # noqa: BLE001 - the function's failure is the result
            return ToolResult(_cut(f"Error: {type(exc).__name__}: {exc}", self.max_output_chars), False, "exception")
        if isinstance(value, ToolResult):
            return ToolResult(_cut(value.text, self.max_output_chars), value.ok, value.error)
        try:
            text = _to_text(value)
        except Exception as exc:  # noqa: BLE001 - a __str__ that raises
            return ToolResult(f"Error: cannot convert the result to text: {type(exc).__name__}: {exc}", False,
                              "exception")
        return ToolResult(_cut(text, self.max_output_chars))

    def _invoke(self, arguments: dict) -> Any:
        out = self.fn(**arguments)
        if inspect.isawaitable(out):
            async def wait():
                return await out

            out = asyncio.run(wait())
        return out

    def _run(self, arguments: dict) -> Any:
        if self.timeout_s is None:
            return self._invoke(arguments)
        box: dict = {}

        def target() -> None:
            try:
                box["value"] = self._invoke(arguments)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"tool-{self.name}", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            raise _Timeout
        if "error" in box:
            err = box["error"]
            if not isinstance(err, Exception):  # SystemExit / KeyboardInterrupt from the function
                raise RuntimeError(f"the function raised {type(err).__name__}: {err}")
            raise err
        return box.get("value")


def tool(fn: Callable | None = None, **kwargs):
    """Decorator: ``@tool`` or ``@tool(name=..., timeout_s=...)`` turns a function into a :class:`FunctionTool`."""
    if fn is None:
        return lambda f: FunctionTool(f, **kwargs)
    return FunctionTool(fn, **kwargs)
