"""Build tools from a config: ``build_tools(["python", "search"])`` and friends.

Accepted specs (a single spec, or a list/tuple of them):

- a registered name: ``"python"``, ``"search"`` (the recorded-cache backend by default);
- ``{"name": "search", "backend": "bm25", "corpus": "wiki.jsonl", "top_k": 3}`` (the trainer config's
  form) or the same as ``{"search": {"backend": "bm25", ...}}``; a mapping of several names to their
  options (``{"python": {"timeout_s": 5}, "search": {}}``) is a list of such pairs;
- ``"path/to/file.py:function"`` or ``"package.module:function"``: a user function as a
  :class:`~appo.tools.functions.FunctionTool` (options as above: ``{"name": "file.py:f", "timeout_s": 5}``,
  ``tool_name`` renames it);
- a :class:`~appo.tools.base.Tool` instance (kept) or a plain callable (wrapped as a function tool);
- ``"mcp:<command line>"`` or ``"mcp:http://host:port/mcp"``: every tool an MCP server lists
  (:mod:`appo.tools.mcp`; options ``timeout_s``, ``connect_timeout_s``, ``include``, ``prefix``, ``env``,
  ``cwd``, ``stderr_path``, ``max_output_chars``, ``max_workers``: ``{"name": "mcp:...", "timeout_s": 10}``).

Options of ``python``: :class:`~appo.tools.sandbox_process.SandboxConfig` fields plus ``max_workers``.
Options of ``search``: ``backend`` (``cache`` | ``bm25`` | ``http``) with its arguments (cache:
``path``, ``fallback``; bm25: ``corpus``, ``index_dir``, ``k1``, ``b``, ``stemmer``; http: ``url``,
``timeout_s``, ``retries``, ``backoff_s``, ``return_scores``), and the tool's ``top_k``, ``max_top_k``,
``max_doc_chars``, ``max_total_chars``, ``max_workers``. Unknown options raise an error that lists the
valid ones. New kinds of tool register with :func:`register_tool_builder`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from appo.plugins import load_plugin, register_unique
from appo.tools.base import Tool

__all__ = ["build_tools", "register_tool_builder", "TOOL_BUILDERS", "load_function"]

TOOL_BUILDERS: dict[str, Callable[..., Tool]] = {}
"""Builders by tool kind: ``builder(**options) -> Tool``."""


def register_tool_builder(name: str):
    """Decorator registering ``builder(**options) -> Tool`` under ``name``; refuses duplicates."""

    def deco(fn: Callable[..., Tool]) -> Callable[..., Tool]:
        return register_unique(TOOL_BUILDERS, name, fn, "tool builder")

    return deco


def _split(options: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for {what}; valid options: {', '.join(sorted(allowed))}")


@register_tool_builder("python")
def _build_python(**options) -> Tool:
    """A sandboxed Python interpreter (``<python>code</python>``); options: the SandboxConfig fields."""
    from appo.tools.python_sandbox import PythonTool
    from appo.tools.sandbox_config import SandboxConfig

    fields = {f.name for f in dataclasses.fields(SandboxConfig)}
    _split(options, fields | {"max_workers"}, "the python tool")
    for key in ("preimports", "extra_ro_paths"):
        if key in options:
            options[key] = tuple(options[key])
    if "env" in options and isinstance(options["env"], dict):
        options["env"] = tuple(options["env"].items())
    workers = options.pop("max_workers", 4)
    return PythonTool(SandboxConfig(**options), max_workers=workers)


_BACKEND_OPTIONS = {
    "cache": {"path", "fallback"},
    "bm25": {"corpus", "index_dir", "k1", "b", "stemmer"},
    "http": {"url", "timeout_s", "retries", "backoff_s", "return_scores", "max_response_bytes"},
}
_SEARCH_TOOL_OPTIONS = {"top_k", "max_top_k", "max_doc_chars", "max_total_chars", "max_workers"}


@register_tool_builder("search")
def _build_search(backend: str = "cache", **options) -> Tool:
    """Search (``<search>query</search>``): recorded web cache (default), local BM25 corpus, or an HTTP retriever."""
    from appo.tools.search import SearchTool

    if backend not in _BACKEND_OPTIONS:
        raise ValueError(f"unknown search backend {backend!r}; use one of {', '.join(_BACKEND_OPTIONS)}")
    _split(options, _BACKEND_OPTIONS[backend] | _SEARCH_TOOL_OPTIONS, f"the search tool with backend {backend!r}")
    tool_opts = {k: options.pop(k) for k in list(options) if k in _SEARCH_TOOL_OPTIONS}
    if backend == "cache":
        from appo.tools.search_cache import CachedSearchBackend

        impl = CachedSearchBackend(**options)
    elif backend == "bm25":
        from appo.tools.search_bm25 import BM25Backend

        if "corpus" not in options:
            raise ValueError("the bm25 search backend needs corpus=<path to a JSONL file of {id, title, text}>")
        impl = BM25Backend(**options)
    else:
        from appo.tools.search_http import HTTPRetrieverBackend

        impl = HTTPRetrieverBackend(**options)
    return SearchTool(impl, **tool_opts)


def load_function(ref: str) -> Callable:
    """The function (or :class:`~appo.tools.base.Tool`) named by ``"path/to/file.py:function"`` or
    ``"package.module:function"``: :func:`appo.plugins.load_plugin`, whose errors are one line."""
    return load_plugin(ref, lambda obj: callable(obj) or isinstance(obj, Tool), label=f"tool {ref!r}",
                       noun="function")


def _function_tool(obj: Any, options: dict) -> Tool:
    from appo.tools.functions import FunctionTool

    if isinstance(obj, Tool):
        if options:
            raise ValueError(f"options {sorted(options)} cannot be applied to the ready-made tool {obj.name!r}")
        return obj
    allowed = set(inspect.signature(FunctionTool.__init__).parameters) - {"self", "fn"}
    opts = dict(options)
    if "tool_name" in opts:
        opts["name"] = opts.pop("tool_name")
    _split(opts, allowed, f"the function tool {getattr(obj, '__name__', obj)!r}")
    return FunctionTool(obj, **opts)


def _mcp(target: str, options: dict) -> list[Tool]:
    from appo.tools.mcp import mcp_tools

    allowed = set(inspect.signature(mcp_tools).parameters) - {"target"}
    _split(options, allowed, f"the MCP server mcp:{target}")
    return list(mcp_tools(target, **options))


def _one(spec: Any) -> Tool | list[Tool]:
    if isinstance(spec, Tool):
        return spec
    if callable(spec) and not isinstance(spec, (str, dict)):
        return _function_tool(spec, {})
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, dict):
        if "name" in spec:
            options = {k: v for k, v in spec.items() if k != "name"}
            name = spec["name"]
        elif len(spec) == 1:
            name, options = next(iter(spec.items()))
            if options is None:
                options = {}
            if not isinstance(options, dict):
                raise ValueError(f"tool spec {spec!r}: the options of {name!r} must be a mapping")
        else:
            raise ValueError(f"tool spec {spec!r} needs a 'name' key (or a single {{name: options}} pair)")
        options = dict(options)
    else:
        raise TypeError(f"tool spec {spec!r} must be a name, a dict, a 'file.py:function' string, a Tool or a callable")
    if not isinstance(name, str) or not name:
        raise ValueError(f"tool spec {spec!r} has no name")
    if name in TOOL_BUILDERS:
        return TOOL_BUILDERS[name](**options)
    if name.startswith("mcp:"):
        return _mcp(name[len("mcp:"):], options)
    if ":" in name:
        return _function_tool(load_function(name), options)
    raise ValueError(f"unknown tool {name!r}; registered: {', '.join(sorted(TOOL_BUILDERS))}, "
                     "or give 'path/to/file.py:function'")


def build_tools(specs: Any) -> list[Tool]:
    """Tools from a spec or a list of specs (formats in the module docstring); names must be unique.
    An ``mcp:`` spec adds every tool its server lists; on an error the tools built so far are closed."""
    if specs is None:
        return []
    if isinstance(specs, dict) and "name" not in specs and len(specs) > 1:
        specs = [{k: v} for k, v in specs.items()]  # {"python": {...}, "search": {...}}
    if isinstance(specs, (str, dict, Tool)) or callable(specs) or not isinstance(specs, (list, tuple)):
        specs = [specs]
    tools: list[Tool] = []
    try:
        for s in specs:
            one = _one(s)
            tools.extend(one if isinstance(one, list) else [one])
    except BaseException:
        for t in tools:
            t.close()
        raise
    names = [t.name for t in tools]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        for t in tools:
            t.close()
        raise ValueError(f"two tools are named {dup!r}; give one of them another name (tool_name=...)")
    return tools
