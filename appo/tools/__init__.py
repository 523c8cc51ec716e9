"""Tools the agent calls: the ``python`` sandbox, ``search`` over three backends, user functions.

Names are imported lazily, so ``import appo.tools.base`` (what the agent loop needs) does not pull in
transformers or bm25s.

- :class:`~appo.tools.python_sandbox.PythonTool`, :class:`~appo.tools.sandbox_config.SandboxConfig`
- :class:`~appo.tools.search.SearchTool` with :class:`~appo.tools.search_bm25.BM25Backend`,
  :class:`~appo.tools.search_http.HTTPRetrieverBackend`, :class:`~appo.tools.search_cache.CachedSearchBackend`
- :class:`~appo.tools.functions.FunctionTool` and the :func:`~appo.tools.functions.tool` decorator
- :func:`~appo.tools.registry.build_tools`: tools from config specs

May import: :mod:`appo.paths` (the search cache's file), :mod:`appo.plugins`, :mod:`appo.types`. Not the data, the
agent or the trainer.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Tool": "appo.tools.base",
    "PythonTool": "appo.tools.python_sandbox",
    "SandboxConfig": "appo.tools.sandbox_config",
    "SearchTool": "appo.tools.search",
    "SearchBackend": "appo.tools.search",
    "SearchBackendError": "appo.tools.search",
    "SearchHit": "appo.tools.search",
    "BM25Backend": "appo.tools.search_bm25",
    "HTTPRetrieverBackend": "appo.tools.search_http",
    "CachedSearchBackend": "appo.tools.search_cache",
    "FunctionTool": "appo.tools.functions",
    "tool": "appo.tools.functions",
    "build_tools": "appo.tools.registry",
    "register_tool_builder": "appo.tools.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'appo.tools' has no attribute {name!r}")
