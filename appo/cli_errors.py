"""The one place that turns an exception into what the ``appo`` command prints: one line and an exit code.

:func:`describe_error` maps an exception raised by a command to a :class:`CliError` (message, exit code),
or None for an exception that is a bug in appo (those keep their traceback). The mapping:

- appo's input errors (``ConfigError``, ``ConfigNotFoundError``, ``DataError``, and the ``ValueError`` /
  ``KeyError`` / ``FileNotFoundError`` / ``NotADirectoryError`` / ``ImportError`` / ``TypeError`` that
  loaders raise with a message naming the input): the message, exit code 2;
- an exception raised in the user's own code (a reward or tool module, a custom data file's code):
  the innermost frame outside appo and the Python installation (``file:line in function``), the
  source line, and a one-line summary, exit code 2; a ``SyntaxError`` in such a file names its line;
- ``OSError`` with a file name (read-only folder, full disk, permissions): the path, the reason, and the
  fix, exit code 2;
- ``KeyboardInterrupt``: ``interrupted``, exit code 130 (the trainer's own safe stop is
  :class:`appo.train.trainer.TrainingInterrupted`, which says where the checkpoint is).

Set ``APPO_TRACEBACK=1`` to get Python's full traceback instead (the CLI re-raises). Left out: mapping
errors raised inside Ray workers (they arrive as ``RayTaskError`` and keep their traceback).
"""

from __future__ import annotations

import errno
import linecache
import os
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path

USAGE = 2
"""Exit code of a usage or input error (argparse's own)."""
INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""

_APPO_DIR = Path(__file__).resolve().parent
_SYSTEM_DIRS = tuple({Path(p).resolve() for p in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                                  sysconfig.get_paths()["platlib"], sys.prefix, sys.base_prefix)})
_INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
"""Raised by appo's loaders and validators with a message naming the input (as the CLI always caught)."""
_RAISED_ERRORS = (ImportError, TypeError, AttributeError, LookupError)
"""Input errors only when appo raised them on purpose (a ``raise`` statement); elsewhere they are bugs."""


@dataclass(frozen=True)
class CliError:
    """What the CLI prints for an exception (after ``appo <command>: error: ``) and the exit code."""

    message: str
    """One line naming the input and the fix."""
    code: int
    """Process exit code: 2 (usage / input) or 130 (interrupted)."""


def one_line(text: str) -> str:
    """``text`` with its lines joined by ``; `` (messages must stay on one line)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _exc_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # str(KeyError) adds quotes around the message
    return str(exc) or type(exc).__name__


def _is_user_file(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return False
    try:
        path = Path(filename).resolve()
    except OSError:
        return False
    if path.is_relative_to(_APPO_DIR):
        return False
    if any(path.is_relative_to(d) for d in _SYSTEM_DIRS):
        return False
    return "site-packages" not in path.parts and "dist-packages" not in path.parts


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return out


def user_frame(exc: BaseException) -> tuple[BaseException, traceback.FrameSummary] | None:
    """The innermost frame in the user's own code among ``exc`` and its causes, with the exception whose
    traceback holds it; None when every frame is appo's or the Python installation's."""
    for e in reversed(_chain(exc)):  # the root cause first
        frames = [f for f in traceback.extract_tb(e.__traceback__) if _is_user_file(f.filename)]
        if frames:
            return e, frames[-1]
    return None


def _syntax_error(exc: BaseException) -> SyntaxError | None:
    for e in _chain(exc):
        if isinstance(e, SyntaxError) and e.filename and _is_user_file(e.filename):
            return e
    return None


def _os_error(exc: OSError) -> str:
    path = exc.filename or "a file"
    reason = exc.strerror or _exc_text(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a folder you can write to (trainer.default_local_dir=..., --out ...) or fix its permissions"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space or choose an output folder on another disk (trainer.default_local_dir=..., --out ...)"
    elif exc.errno == errno.ENOENT:
        fix = "check the path"
    else:
        fix = "check the path and the disk"
    target = f"{path!s}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    return f"{target}: {reason} (errno {exc.errno}); {fix}"


def describe_error(exc: BaseException) -> CliError | None:
    """The line and exit code for ``exc`` (module docstring), or None to let its traceback show."""
    if isinstance(exc, KeyboardInterrupt):
        return CliError("interrupted (Ctrl-C)", INTERRUPTED)
    syntax = _syntax_error(exc)
    if syntax is not None:
        return CliError(one_line(f"{syntax.filename}:{syntax.lineno}: SyntaxError: {syntax.msg}; "
                                 f"fix the file so that `python {Path(syntax.filename).name}` runs"), USAGE)
    if isinstance(exc, OSError) and exc.filename is not None and not isinstance(exc, FileNotFoundError):
        return CliError(one_line(_os_error(exc)), USAGE)  # the disk or permissions, wherever it was raised
    found = user_frame(exc)
    if found is not None:
        inner, frame = found
        source = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
        outer = one_line(_exc_text(exc)) if exc is not inner else ""
        summary = f"{type(inner).__name__}: {one_line(_exc_text(inner))}"
        where = f"{frame.filename}:{frame.lineno} in {frame.name}" + (f": `{source}`" if source else "")
        context = f"{outer}; " if outer and summary not in outer else ""
        return CliError(f"{context}{summary} at {where}; fix your code there "
                        "(APPO_TRACEBACK=1 prints the full traceback)", USAGE)
    if isinstance(exc, _INPUT_ERRORS) or isinstance(exc, OSError) and exc.filename is not None:
        return CliError(one_line(_exc_text(exc)), USAGE)
    if isinstance(exc, _RAISED_ERRORS) and _raised_on_purpose(exc):
        return CliError(one_line(_exc_text(exc)), USAGE)
    return None


def _raised_on_purpose(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is an appo ``raise`` statement (a deliberate message)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    line = (last.line or linecache.getline(last.filename, last.lineno)).strip()
    return Path(last.filename).resolve().is_relative_to(_APPO_DIR) and line.startswith("raise ")


def full_traceback_wanted() -> bool:
    """True when ``APPO_TRACEBACK`` is set to a true value (the CLI then re-raises)."""
    return os.environ.get("APPO_TRACEBACK", "").lower() not in ("", "0", "false", "no")
