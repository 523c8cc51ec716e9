"""MCP servers as tools: ``tools: ["mcp:python my_server.py"]`` or ``["mcp:http://127.0.0.1:8000/mcp"]``.

One spec names one Model Context Protocol server; :func:`mcp_tools` connects to it with the official
``mcp`` SDK (``mcp.Client``), lists its tools and returns one :class:`MCPTool` per listed tool. The
spec after ``mcp:`` is either an ``http://`` / ``https://`` URL (streamable HTTP transport) or a shell
command line started as a subprocess that speaks MCP over its stdin/stdout (``shlex``-split; the
server's stderr goes to ``stderr_path``, else to a temporary file deleted when the connection closes).

Start-up failures raise :class:`MCPStartupError` (a ``ConnectionError`` and a ``ValueError``, so the CLI
prints it as one line and exits 2) naming the spec, the innermost cause (not the SDK's task-group
wrapper) and the last lines the server wrote to stderr; a server that does not answer within
``connect_timeout_s`` (default 30 s, a per-tool option) is stopped at once. A missing ``mcp`` package is
an ``ImportError`` naming the extra to install (``pip install 'appo[mcp]'``).

The agent loop is synchronous and may call tools from several threads at once, while the SDK is
async. :class:`MCPConnection` therefore runs one asyncio event loop on a daemon thread; a single
task there holds the ``Client`` context open for the connection's lifetime, and every call is a
coroutine submitted to that loop (:func:`asyncio.run_coroutine_threadsafe`) whose result the calling
thread waits for. Calls of several threads are multiplexed over the one session.

Each listed tool becomes a :class:`~appo.tools.base.Tool` shown to the model like a function tool:
its ``name``, ``description`` and ``inputSchema`` (as ``parameters``) go into the Hermes chat
template's tool list or the tag protocol's system prompt; in the tag protocol the body of
``<name>...</name>`` goes to the first required argument (a JSON object body whose keys are all
argument names is taken as the whole argument object, as for function tools).

Failures never raise into the loop. What the model sees, as an ``ok=False`` result:

- the server reports ``isError`` (the tool raised, or rejected its arguments): ``Error: <its text>``
  (``error="tool_error"``);
- the call runs past ``timeout_s``: ``Error: the <name> tool timed out after N s`` (``error="timeout"``;
  the SDK cancels the request on its side);
- the connection is gone or the SDK raises: ``Error: MCP <name>: <exception>`` (``error="mcp"``).

Result content: text parts joined by newlines; images, audio and resources are named, not inlined
(``[image: image/png]``); an empty result reads ``(no output)``; text is cut to ``max_output_chars``.
Left out: MCP resources, prompts, sampling and elicitation callbacks, OAuth; tools whose
listing changes after the connection was made are not re-listed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from appo.tools.base import Tool
from appo.types import ToolResult

__all__ = ["MCPConnection", "MCPStartupError", "MCPTool", "mcp_tools"]

STDERR_TAIL_CHARS = 400
"""How much of a failed stdio server's stderr the start-up error quotes."""


class MCPStartupError(ConnectionError, ValueError):
    """An MCP server could not be started or connected to (one line: spec, cause, the server's stderr)."""


def require_mcp() -> None:
    """Raise ImportError naming the extra when the ``mcp`` SDK is not installed."""
    try:
        import mcp  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "mcp":
            raise
        raise ImportError("mcp: tools need the mcp package, which is not installed: pip install 'appo[mcp]'") \
            from None


def _root_cause(exc: BaseException) -> BaseException:
    """The first leaf of nested exception groups (the SDK wraps failures in ``TaskGroup`` groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class MCPConnection:
    """One open MCP client session on a background event-loop thread (see the module docstring).

    Args:
        target: an ``http(s)://`` URL (streamable HTTP) or a command line (stdio subprocess).
        connect_timeout_s: how long :meth:`open` waits for the connection and the tool listing.
        env: extra environment variables for a stdio server (added to the SDK's safe defaults).
        cwd: working directory of a stdio server.
        stderr_path: file that receives a stdio server's stderr (default: discarded).
    """

    def __init__(self, target: str, *, connect_timeout_s: float = 30.0, env: dict | None = None,
                 cwd: str | None = None, stderr_path: str | None = None) -> None:
        target = target.strip()
        if not target:
            raise ValueError("mcp tool spec is empty; write mcp:<command line> or mcp:http://host:port/mcp")
        self.target = target
        self.is_http = target.startswith(("http://", "https://"))
        self.connect_timeout_s = connect_timeout_s
        self._env = {str(k): str(v) for k, v in (env or {}).items()}
        self._cwd = cwd
        self._stderr_path = stderr_path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self.tools_listed: list[Any] = []
        """The server's tool descriptions (``mcp_types.Tool``) as listed when the connection opened."""

    def _server(self):
        """What ``mcp.Client`` connects to: the URL, or a stdio transport for the command."""
        if self.is_http:
            return self.target
        from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client

        argv = shlex.split(self.target)
        params = StdioServerParameters(command=argv[0], args=argv[1:], env={**get_default_environment(), **self._env},
                                       cwd=self._cwd)
        if self._stderr_path:
            errlog = open(self._stderr_path, "a+")  # noqa: SIM115 - closed with the connection
        else:
            errlog = tempfile.TemporaryFile("w+", prefix="appo-mcp-stderr-")  # noqa: SIM115 - as above
        self._errlog = errlog
        return stdio_client(params, errlog=errlog)

    async def _main(self) -> None:
        from mcp import Client

        self._stop = asyncio.Event()
        try:
            async with Client(self._server()) as client:
                listed, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    listed.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self.tools_listed = listed
                self._client = client
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to the opening thread
            self._error = exc
        finally:
            self._client = None
            self._ready.set()

    def open(self) -> MCPConnection:
        """Start the loop thread, connect and list the tools; raises :class:`MCPStartupError` (module docstring)."""
        if self._thread is not None:
            return self
        require_mcp()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=f"mcp:{self.target[:40]}", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.connect_timeout_s) or self._client is None:
            err = self._error
            stderr = self._stderr_tail()
            self.close()
            if err is not None:
                root = _root_cause(err)
                why = f"{type(root).__name__}: {root}"
            else:
                why = f"no answer in {self.connect_timeout_s:g} s (connect_timeout_s)"
            kind = "URL" if self.is_http else "command"
            said = f"; the server's stderr ends: {stderr}" if stderr else ""
            raise MCPStartupError(" ".join(f"cannot start the MCP server mcp:{self.target} ({why}){said}; check that "
                                           f"the {kind} is right and the server speaks MCP".split()))
        return self

    def _stderr_tail(self) -> str:
        """The last :data:`STDERR_TAIL_CHARS` characters a stdio server wrote to stderr, on one line."""
        errlog = getattr(self, "_errlog", None)
        if errlog is None:
            return ""
        try:
            errlog.flush()
            errlog.seek(0, os.SEEK_END)
            end = errlog.tell()
            errlog.seek(max(0, end - 4 * STDERR_TAIL_CHARS))
            text = errlog.read()
        except (OSError, ValueError):
            return ""
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-STDERR_TAIL_CHARS:]

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._main_task = self._loop.create_task(self._main())
            self._loop.run_until_complete(self._main_task)
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def call(self, name: str, arguments: dict, timeout_s: float) -> Any:
        """``tools/call`` from any thread; returns the SDK's ``CallToolResult``.

        Raises ``TimeoutError`` past ``timeout_s`` (the request is cancelled) and ``ConnectionError``
        when the session is closed.
        """
        client, loop = self._client, self._loop
        if client is None or loop is None or self._closed:
            raise ConnectionError("the MCP connection is closed")
        fut = asyncio.run_coroutine_threadsafe(client.call_tool(name, arguments, read_timeout_seconds=timeout_s), loop)
        try:
            return fut.result(timeout_s + 5.0)
        except FutureTimeout:
            fut.cancel()
            raise TimeoutError(f"no answer in {timeout_s:g} s") from None

    def close(self) -> None:
        """End the session (a stdio server is shut down) and the loop thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        loop, stop, task = self._loop, self._stop, getattr(self, "_main_task", None)
        if loop is not None and loop.is_running():
            if self._client is not None and stop is not None:
                loop.call_soon_threadsafe(stop.set)
            elif task is not None:  # still starting (or stuck starting): stop it now
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout=15.0)
        errlog = getattr(self, "_errlog", None)
        if errlog is not None:
            errlog.close()


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "timed out" in str(exc).lower()


class MCPTool(Tool):
    """One tool of an MCP server, called through a shared :class:`MCPConnection`."""

    def __init__(self, connection: MCPConnection, listed: Any, *, name: str | None = None, timeout_s: float = 30.0,
                 max_output_chars: int = 4000, max_workers: int = 4) -> None:
        self.connection = connection
        self.remote_name = listed.name
        self.name = name or listed.name
        self.description = (listed.description or "").strip()
        schema = dict(listed.input_schema or {})
        schema.pop("title", None)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self.parameters = schema
        required = list(schema.get("required") or [])
        self.tag_argument = (required or list(schema["properties"]) or [""])[0]
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self.max_workers = max_workers

    def _arguments(self, arguments: dict) -> dict:
        """Tag-protocol bodies that are a JSON object of argument names become the argument object."""
        if set(arguments) == {self.tag_argument} and isinstance(arguments[self.tag_argument], str):
            body = arguments[self.tag_argument].strip()
            props = set(self.parameters.get("properties") or {})
            if body.startswith("{"):
                try:
                    obj = json.loads(body)
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and obj and set(obj) <= props:
                    return obj
            ptype = (self.parameters.get("properties") or {}).get(self.tag_argument, {}).get("type")
            if ptype in ("integer", "number", "boolean", "array", "object"):
                try:
                    return {self.tag_argument: json.loads(body)}
                except ValueError:
                    pass
        return arguments

    def call(self, arguments: dict) -> ToolResult:
        """Call the remote tool; failures become ``ok=False`` results (see the module docstring)."""
        try:
            result = self.connection.call(self.remote_name, self._arguments(arguments), self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - the model sees the failure, the loop goes on
            if _is_timeout(exc):
                return ToolResult(text=f"Error: the {self.name} tool timed out after {self.timeout_s:g} s",
                                  ok=False, error="timeout")
            return ToolResult(text=f"Error: MCP {self.name}: {type(exc).__name__}: {exc}", ok=False, error="mcp")
        text = _content_text(result)
        if len(text) > self.max_output_chars:
            half = self.max_output_chars // 2
            text = text[:half] + "\n...[cut]...\n" + text[-half:]
        if getattr(result, "is_error", False):
            return ToolResult(text=f"Error: {text}", ok=False, error="tool_error")
        return ToolResult(text=text, ok=True)

    def close(self) -> None:
        """Close the shared connection (every tool of the server then fails with ``error="mcp"``)."""
        self.connection.close()


def _content_text(result: Any) -> str:
    """The text of a ``CallToolResult``: text parts joined; other parts named; structured output as JSON."""
    parts = []
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {getattr(item, 'mime_type', '')}]")
        else:
            res = getattr(item, "resource", None)
            parts.append(f"[{kind}: {getattr(res, 'uri', '') or getattr(item, 'uri', '')}]")
    if not parts and getattr(result, "structured_content", None) is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts) if parts else "(no output)"


def mcp_tools(target: str, *, timeout_s: float = 30.0, connect_timeout_s: float = 30.0,
              include: Sequence[str] | None = None, prefix: str = "", env: dict | None = None,
              cwd: str | None = None, stderr_path: str | None = None, max_output_chars: int = 4000,
              max_workers: int = 4) -> list[MCPTool]:
    """Connect to the MCP server ``target`` (URL or command line) and return its tools.

    ``include`` keeps only the named tools (an unknown name is an error listing the server's tools);
    ``prefix`` is put before every tool name (two servers with the same tool names); ``timeout_s``
    bounds each call. The tools share one connection; closing any of them closes it.
    """
    conn = MCPConnection(target, connect_timeout_s=connect_timeout_s, env=env, cwd=cwd,
                         stderr_path=stderr_path).open()
    listed = list(conn.tools_listed)
    if include is not None:
        names = {t.name for t in listed}
        missing = [n for n in include if n not in names]
        if missing:
            conn.close()
            raise ValueError(f"MCP server mcp:{target} has no tool {missing[0]!r}; it lists: "
                             f"{', '.join(sorted(names)) or 'none'}")
        listed = [t for t in listed if t.name in set(include)]
    if not listed:
        conn.close()
        raise ValueError(f"MCP server mcp:{target} lists no tools")
    return [MCPTool(conn, t, name=prefix + t.name, timeout_s=timeout_s, max_output_chars=max_output_chars,
                    max_workers=max_workers) for t in listed]

