"""The one plugin loader and the one registry guard every appo registry uses.

A plugin is named in a config or on the command line in one of two forms, everywhere (algorithms,
engines, tools, rewards):

- ``package.module:NAME``: ``NAME`` in a module imported from ``sys.path`` (put its folder on
  ``PYTHONPATH`` or install it);
- ``path/to/file.py:NAME``: ``NAME`` in that file, executed on each load (a relative path starts at the
  working directory). A target that ends in ``.py`` or holds a path separator is a file.

Every failure is a :class:`PluginError` (a ``ValueError``) with one line naming the input and the fix; the
CLI prints that line and exits 2. Its subclasses also derive from the built-in error of the cause
(``FileNotFoundError``, ``ImportError``, ``AttributeError``, ``TypeError``, ``KeyError``) so that code
catching those keeps working. This module imports nothing of appo: any package may use it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, MutableMapping, TypeVar

__all__ = ["PluginError", "UnknownNameError", "is_plugin_spec", "load_plugin", "register_unique", "split_spec"]

T = TypeVar("T")


class PluginError(ValueError):
    """A plugin spec or a registration that cannot be honoured; the message is one line with the fix."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownNameError(PluginError, KeyError):
    """A name that no registry holds and that is no plugin spec."""


class PluginFileNotFoundError(PluginError, FileNotFoundError):
    """The file of a ``path/to/file.py:NAME`` spec does not exist."""


class PluginImportError(PluginError, ImportError):
    """The module or file of a spec cannot be imported (or raised while it ran)."""


class PluginAttributeError(PluginError, AttributeError):
    """The module or file defines no such name."""


class PluginTypeError(PluginError, TypeError):
    """The named object is not of the kind the caller needs."""


def register_unique(registry: MutableMapping[str, T], name: str, obj: T, what: str) -> T:
    """``registry[name] = obj``, refusing an empty or taken name with a :class:`PluginError` that names what
    holds it (``what`` says the kind: ``"algorithm"``, ``"reward"`` ...). Returns ``obj``."""
    if not name:
        raise PluginError(f"{what} {obj!r} has no name; give it one")
    if name in registry:
        held = registry[name]
        holder = f"{held.__module__}.{held.__qualname__}" if isinstance(held, type) or callable(held) and hasattr(
            held, "__qualname__") else repr(held)
        raise PluginError(f"{what} {name!r} is already registered (by {holder}); choose another name")
    registry[name] = obj
    return obj


def is_plugin_spec(text: str) -> bool:
    """Whether ``text`` has the shape ``target:NAME`` (either accepted form)."""
    target, sep, attr = text.rpartition(":")
    return bool(sep and target and attr)


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def split_spec(spec: str, label: str, noun: str = "NAME") -> tuple[str, str]:
    """``"target:NAME"`` -> ``(target, NAME)``; a :class:`PluginError` opening with ``label`` for any other
    shape."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr or "/" in attr or "\\" in attr:
        raise PluginError(
            f"{label} is not 'path/to/file.py:{noun}' or 'package.module:{noun}': it must look like "
            f"one of those (e.g. 'my_plugin.py:{noun}')")
    return target, attr


def _import_file(target: str, label: str, spec: str) -> tuple[Any, str]:
    path = Path(target).expanduser()
    if path.suffix != ".py":
        raise PluginError(f"{label}: {target!r} is not a .py file; point at the Python file")
    if not path.is_file():
        raise PluginFileNotFoundError(
            f"{label}: file {str(path)!r} not found: it does not exist (relative paths start at "
            f"{Path.cwd()}); fix the path")
    path = path.resolve()
    name = "appo_plugin_" + hashlib.sha1(str(path).encode()).hexdigest()[:16]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginImportError(f"{label}: cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up there
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise PluginImportError(
            f"{label}: importing {str(path)!r} failed with {type(exc).__name__}: {exc}; fix the file "
            f"so that `python {path.name}` runs cleanly") from exc
    return module, repr(str(path))


def _import_module(target: str, label: str, spec: str) -> tuple[Any, str]:
    try:
        module = importlib.import_module(target)
    except ImportError as exc:
        raise PluginImportError(f"{label}: cannot import {target!r} ({exc}); put its folder on "
                                "PYTHONPATH or install it") from None
    except Exception as exc:
        raise PluginImportError(f"{label}: importing {target!r} failed with {type(exc).__name__}: "
                                f"{exc}; fix the module") from exc
    return module, f"module {target!r}"


def load_plugin(spec: str, kind: type | Callable[[Any], bool] = callable, *, label: str | None = None,
                noun: str = "NAME", instantiate: bool = True) -> Any:
    """The object named by ``spec`` (``package.module:NAME`` or ``path/to/file.py:NAME``).

    ``kind`` is a class (the object must be an instance; a subclass is instantiated without arguments when
    ``instantiate``) or the predicate ``callable``. ``label`` opens every error line and names the input
    (``"algorithm.name='x:Y'"``, ``"custom reward 'f.py:g'"``; default ``"plugin '<spec>'"``); ``noun`` names
    what ``NAME`` stands for in the syntax error.
    """
    label = label or f"plugin {spec!r}"
    target, attr = split_spec(spec, label, noun)
    module, where = (_import_file if _is_file(target) else _import_module)(target, label, spec)
    if not hasattr(module, attr):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise PluginAttributeError(f"{label}: {where} defines no {attr!r}: there is no attribute "
                                   f"{attr!r}; callables there: {public}")
    obj = getattr(module, attr)
    if isinstance(kind, type):
        if instantiate and isinstance(obj, type) and issubclass(obj, kind):
            obj = obj()
        if not isinstance(obj, kind):
            raise PluginTypeError(f"{label}: {where} has no {kind.__name__} named {attr!r} (it is a "
                                  f"{type(obj).__name__}, not a {kind.__module__}.{kind.__name__})")
    elif not kind(obj):
        raise PluginTypeError(f"{label}: {attr!r} in {where} is not callable")
    return obj
