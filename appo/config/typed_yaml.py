"""Typed YAML for frozen dataclasses: strict building from dicts, dotted overrides, inheritance, reference.

Generic machinery behind :mod:`appo.config` (whose :mod:`~appo.config.schema` holds appo's keys); it knows nothing about
appo's keys. What it implements:

- :func:`build` turns nested dicts into nested dataclasses. Unknown keys raise :class:`ConfigError`
  naming the key and the nearest valid one (``difflib``); values are checked against the annotations
  and converted where that is safe (:func:`coerce`).
- :func:`read_yaml` reads a file with ``defaults:`` inheritance (base files merged first, in order).
- :func:`apply_overrides` sets ``a.b.c=value`` strings (values parsed as YAML) into a raw dict.
- :func:`field_docstrings` / :func:`reference_markdown` read the attribute docstrings (the string literal
  right under a field) with ``ast`` and render a Markdown table per section.

Left out: interpolation (``${...}``), environment variables, and ``+key`` / ``~key`` override syntax.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------- raw dicts
def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping; keys of the files named under ``defaults:`` (relative paths) come first."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing YAML file")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {str(path)!r} inherits from itself through 'defaults'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    bases = data.pop("defaults", None) or []
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merge(merged, read_yaml(path.parent / str(base), (*_seen, path.resolve())))
    return merge(merged, data)


def merge(dst: dict, src: Mapping) -> dict:
    """Deep-merge ``src`` into ``dst`` (mappings merge key by key, anything else replaces); returns dst."""
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = dict(v) if isinstance(v, Mapping) else v
    return dst


def apply_overrides(raw: dict, overrides: Sequence[str], rewrite: Mapping[str, str] | None = None) -> dict:
    """Set each ``key.sub=value`` of ``overrides`` in ``raw``; values are parsed as YAML (text that is
    not valid YAML stays a string; an empty value is null). ``rewrite`` maps key prefixes to others."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. actor.optim.lr=1e-5)")
        for old, new in (rewrite or {}).items():
            if key.startswith(old):
                key = new + key[len(old):]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        parts, node = key.split("."), raw
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node.get(p), dict):
                if node.get(p) is not None:
                    raise ConfigError(f"override {key}: '{'.'.join(parts[: i + 1])}' is not a section")
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return raw


# ------------------------------------------------------------------------------------------- typing
def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of dataclass ``cls``, sections included, in declaration order."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out += all_keys(hints[f.name], prefix + f.name + ".")
    return out


def _unknown_key(cls: type, key: str, root: type, hints: Mapping[str, str]) -> ConfigError:
    """The error for an unknown ``key``, with the best guess: a foreign name's mapping (``hints``; a value
    with a space is an explanation, not a key), a close name in the same section, the same name in another
    section, or a close name anywhere (difflib, ratio >= 0.7 in the section, >= 0.8 elsewhere); without a
    guess, the valid keys of the section. Whole dotted keys are never compared (a shared section prefix
    would make unrelated keys look close)."""
    names = [f.name for f in dataclasses.fields(cls)]
    local = key.rsplit(".", 1)[-1]
    prefix = key[: len(key) - len(local)]
    every = all_keys(root)
    guess = None
    if local in hints:
        if " " in hints[local]:
            return ConfigError(f"unknown config key '{key}'; {hints[local]}")
        guess = hints[local]
    elif close := difflib.get_close_matches(local, names, n=1, cutoff=0.7):
        guess = prefix + close[0]
    elif same := [k for k in every if k.rsplit(".", 1)[-1] == local]:
        guess = same[0]
    else:
        leaves = {k.rsplit(".", 1)[-1]: k for k in reversed(every)}  # first key of each leaf name wins
        near = difflib.get_close_matches(local, list(leaves), n=1, cutoff=0.8)
        guess = leaves[near[0]] if near else None
    hint = f"did you mean '{guess}'?" if guess else f"valid keys here: {', '.join(names)}"
    return ConfigError(f"unknown config key '{key}'; {hint}")


def build(cls: type, raw: Any, prefix: str = "", *, root: type | None = None,
          hints: Mapping[str, str] | None = None) -> Any:
    """Instantiate dataclass ``cls`` from a (nested) dict, strictly. ``hints`` maps foreign key names
    (e.g. TRL's ``learning_rate``) to the dotted key to suggest when someone uses them."""
    root = root or cls
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping of keys to values, got {raw!r}")
    types_ = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        if k not in names:
            raise _unknown_key(cls, prefix + str(k), root, hints or {})
        kwargs[k] = coerce(v, types_[k], prefix + k, root=root, hints=hints)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a section's own rule (its __post_init__), already one line naming the key
        raise ConfigError(str(exc)) from None


def type_name(tp: Any) -> str:
    """Readable name of an annotation, for error messages and the reference."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} values ({', '.join(type_name(a) for a in args)})"
        return f"a list of {type_name(args[0])}" if args else "a list"
    if dataclasses.is_dataclass(tp):
        return "a section (mapping)"
    return getattr(tp, "__name__", str(tp))


def _number(value: Any) -> float | None:
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def coerce(value: Any, tp: Any, key: str, *, root: type | None = None, hints: Mapping[str, str] | None = None) -> Any:
    """Check ``value`` against annotation ``tp``; convert where safe: int -> float, numeric text such as
    ``1e-5`` (YAML 1.1 reads it as a string) -> float/int, whole floats -> int, numbers -> str, a list ->
    tuple, a scalar -> one-element list/tuple. Bools are never numbers. Raises :class:`ConfigError`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{key}={value!r}: expected {type_name(tp)}, got {type(value).__name__}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".", root=root, hints=hints)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return coerce(value, a, key, root=root, hints=hints)
                except ConfigError:
                    pass
        raise bad
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}={value!r}: expected {type_name(tp)}{hint}")
    if origin in (tuple, list):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise bad
            return tuple(coerce(v, a, f"{key}[{i}]", root=root, hints=hints)
                         for i, (v, a) in enumerate(zip(items, args)))
        out = [coerce(v, args[0], f"{key}[{i}]", root=root, hints=hints) if args else v for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if tp is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise bad
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int:
        if isinstance(value, int) and is_num:
            return value
        number = value if is_num else _number(value)
        if number is not None and float(number).is_integer():
            return int(number)
    if tp is float:
        number = value if is_num else _number(value)
        if number is not None:
            return float(number)
    if tp is str and (isinstance(value, str) or is_num):
        return str(value)
    raise bad


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-ready data (dicts, lists, scalars) for a dataclass tree."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------- reference
def field_docstrings(source: str | Path) -> dict[str, dict[str, str]]:
    """``{class name: {field name: docstring}}`` for the classes of a Python source file, read with
    ``ast``: a field's docstring is the string literal statement right after its annotated assignment."""
    tree = ast.parse(Path(source).read_text())
    out: dict[str, dict[str, str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        for stmt, nxt in zip(node.body, node.body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
        out[node.name] = docs
    return out


def reference_markdown(root: type, title: str, intro: str = "") -> str:
    """Markdown reference of every key under dataclass ``root``: one table (key, type, default, meaning)
    per section, sections in declaration order; docstrings come from each section class's own source
    file via ``ast``."""
    docs: dict[str, dict[str, str]] = {}
    lines = [f"# {title}", "", *([intro, ""] if intro else [])]

    def section(cls: type, prefix: str) -> None:
        docs.update(field_docstrings(inspect.getsourcefile(cls)))
        hints, defaults = typing.get_type_hints(cls), cls()
        rows, subs = [], []
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                subs.append((tp, prefix + f.name + "."))
                continue
            default = yaml.safe_dump(to_dict(getattr(defaults, f.name)), default_flow_style=True, width=10**6)
            default = default.strip().removesuffix("...").strip()
            doc = " ".join(docs.get(cls.__name__, {}).get(f.name, "").split()).replace("|", "\\|")
            rows.append(f"| `{prefix}{f.name}` | {type_name(tp).replace('|', '/')} | `{default}` | {doc} |")
        if rows:
            lines.extend([f"## `{prefix.rstrip('.') or '(top level)'}`", "", (inspect.getdoc(cls) or "").split("\n")[0],
                          "", "| key | type | default | meaning |", "| --- | --- | --- | --- |", *rows, ""])
        for tp, sub in subs:
            section(tp, sub)

    section(root, "")
    return "\n".join(lines)
