"""``python`` tool: run the model's code in a sandbox and show it what the code printed.

Each call runs in its own process, isolated as described in :mod:`appo.tools.sandbox_process` (new
PID/network/mount namespaces, a read-only minimal root with a size-limited tmpfs as working directory,
a per-call unprivileged uid, resource limits, a scrubbed environment, a wall-clock timeout that kills
everything the call started).

Why a per-call uid rather than ``nobody``: the kernel does not enforce ``RLIMIT_NPROC`` for root, and
counts it per uid across the whole machine, so a shared ``nobody`` would let one call's fork bomb
starve the others (and be limited by unrelated ``nobody`` processes). Each concurrent call leases its
own uid from a pool (``uid_base`` .. ``uid_base + uid_count - 1``, no passwd entry needed), which also
makes "no process of this uid is left" a precise clean-up check. As in a notebook cell, the value of a final
bare expression is printed (its ``repr``, unless it is None).

What the agent sees (``ToolResult.text``): the code's stdout, then its stderr (tracebacks show only the
model's own frames, file ``<code>``), each cut to ``max_output_chars`` with the middle marked as
omitted; ``(no output)`` when there was none; a line ``Error: ...`` when the call failed (timeout,
CPU limit, memory, crash, output flood, non-zero exit). ``ToolResult.error`` names the failure class:
``exception``, ``syntax``, ``memory``, ``timeout``, ``cpu_limit``, ``crash``, ``output_limit``,
``exit_status``, ``bad_arguments``, ``sandbox``.

When no isolating level works (no root and no user namespaces) every call returns an ``ok=False``
result saying so, unless ``allow_unisolated=True`` (then a warning is logged once and the code runs
with resource limits only: no network or filesystem isolation).
"""

from __future__ import annotations

import dataclasses
import logging
import signal as _signal

from appo.tools.base import Tool
from appo.tools.sandbox_config import SandboxConfig, SandboxRun
from appo.tools.sandbox_process import detect_isolation, run_sandboxed
from appo.types import ToolResult

__all__ = ["PythonTool", "SandboxConfig", "format_run"]

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()

MAX_CODE_CHARS = 100_000
"""Longest program accepted; longer ones are refused as bad arguments."""


class PythonTool(Tool):
    """Sandboxed Python interpreter tool (tag ``<python>...</python>``, argument ``code``)."""

    name = "python"
    description = (
        "Run Python 3 code and return what it prints (stdout, then any error). The value of a final bare "
        "expression is printed too. Each call starts fresh (no state is kept between calls); there is no "
        "network access, and files live in a temporary directory that is deleted afterwards."
    )
    parameters = {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The Python program to run."}},
        "required": ["code"],
    }
    tag_argument = "code"

    def __init__(self, config: SandboxConfig | None = None, *, max_workers: int = 4, **overrides) -> None:
        """``config`` (or keyword overrides of :class:`SandboxConfig` fields) sets limits and isolation."""
        base = config or SandboxConfig()
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        self.max_workers = max_workers

    @property
    def isolation(self) -> str | None:
        """The isolation level calls run at (probed on first use); None when none is allowed."""
        return detect_isolation(self.config)[0]

    def isolation_report(self) -> str:
        """One line for logs: the level in use and why better levels were not available."""
        level, notes = detect_isolation(self.config)
        why = f" ({'; '.join(notes)})" if notes else ""
        if level is None:
            return f"python sandbox: unavailable{why}"
        if level == "rlimits":
            return f"python sandbox: level rlimits - NO network or filesystem isolation{why}"
        return f"python sandbox: level {level}{why}"

    def call(self, arguments: dict) -> ToolResult:
        """Run ``arguments['code']``; every failure is an ``ok=False`` result, never an exception."""
        code = arguments.get("code") if isinstance(arguments, dict) else None
        if not isinstance(code, str):
            got = type(code).__name__ if isinstance(arguments, dict) and "code" in arguments else "nothing"
            return ToolResult(f"Error: the python tool needs a string argument 'code' (got {got}).", False,
                              "bad_arguments")
        if len(code) > MAX_CODE_CHARS:
            return ToolResult(f"Error: the program is {len(code)} characters long; the limit is {MAX_CODE_CHARS}.",
                              False, "bad_arguments")
        level, notes = detect_isolation(self.config)
        if level is None:
            return ToolResult(
                "Error: the Python sandbox is unavailable on this machine: no network/filesystem isolation "
                f"could be set up ({'; '.join(notes)}). Set allow_unisolated=True to run code without it.",
                False, "sandbox")
        try:
            run = run_sandboxed(code, self.config, level)
        except Exception as exc:  # noqa: BLE001 - e.g. no free file descriptors in the trainer
            return ToolResult(f"Error: the Python sandbox failed: {type(exc).__name__}: {exc}", False, "sandbox")
        for note in run.warnings:  # set-up notes (no /proc inside, code running as root): once each
            if note not in _WARNED:
                _WARNED.add(note)
                logger.warning("python sandbox (%s): %s", run.isolation, note)
        return format_run(run, self.config)


def format_run(run: SandboxRun, config: SandboxConfig) -> ToolResult:
    """Word a :class:`SandboxRun` for the agent (see the module docstring for the layout)."""
    if run.setup_error:
        return ToolResult(f"Error: the Python sandbox failed to start: {run.setup_error}", False, "sandbox")
    parts = [p.rstrip("\n") for p in (run.stdout, run.stderr) if p.strip()]
    body = "\n".join(parts)
    error, note = None, None
    if run.memory_exceeded is not None:
        error, note = "memory", (f"Error: the code's processes used {run.memory_exceeded >> 20} MiB of memory together "
                                 f"(the limit is {config.total_memory_mb} MiB) and were stopped.")
    elif run.timed_out:
        error = "timeout"
        note = f"Error: TimeoutError: the code ran longer than {config.timeout_s:g} s and was stopped."
    elif run.flooded:
        error, note = "output_limit", (
            f"Error: the code printed more than {config.max_drain_bytes} bytes and was stopped.")
    elif run.signal is not None:
        if run.signal == _signal.SIGXCPU:
            error = "cpu_limit"
            note = f"Error: the code used more than {config.cpu_limit} s of CPU time and was stopped."
        elif run.signal == _signal.SIGKILL:
            error, note = "crash", "Error: the process was killed (SIGKILL), probably for using too much memory."
        else:
            name = _signal.Signals(run.signal).name if run.signal in _signal.valid_signals() else str(run.signal)
            error, note = "crash", f"Error: the Python process crashed ({name})."
    elif run.exit_code:
        tail = run.stderr.rstrip().rsplit("\n", 1)[-1]
        if tail.startswith("MemoryError"):
            error = "memory"
            note = f"(The memory limit is {config.memory_mb} MiB.)"
        elif tail.startswith(("SyntaxError", "IndentationError", "TabError")):
            error = "syntax"
        elif "Traceback (most recent call last)" in run.stderr or tail.split(":", 1)[0].endswith(("Error",
                                                                                                  "Exception")):
            error = "exception"
        else:
            error, note = "exit_status", f"Error: the code exited with status {run.exit_code}."
    text = "\n".join(p for p in (body, note) if p) or "(no output)"
    return ToolResult(text=text, ok=error is None, error=error)
