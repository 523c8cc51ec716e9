"""Optional dependencies: one line naming the extra to install when a command's packages are missing.

``pip install 'appo[serve]'`` brings fastapi + uvicorn (``appo serve``) and openai (``appo eval --endpoint``,
the LLM judge); ``appo[mcp]`` brings the ``mcp`` SDK (``mcp:`` tools, checked in :mod:`appo.tools.mcp`).
"""

from __future__ import annotations

import importlib


def require(modules: tuple[str, ...], extra: str, what: str) -> None:
    """Raise ImportError (``<what> needs <module>, which is not installed: pip install 'appo[<extra>]'``)
    for the first of ``modules`` that cannot be imported; the CLI prints it as one line, exit 2."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise ImportError(f"{what} needs {name}, which is not installed: pip install 'appo[{extra}]'") from None
