"""Settings and outcome records of the Python sandbox, and the capped output buffer it reads into.

See :mod:`appo.tools.sandbox_process` for how a call runs and :mod:`appo.tools._sandbox_runner` for
the isolation itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

__all__ = ["IsolationLevel", "SandboxConfig", "SandboxRun", "CappedBuffer", "WORKDIR", "clean_output"]

IsolationLevel = Literal["namespaces", "userns", "rlimits"]
WORKDIR = "/workdir"
"""Working directory (and HOME) of the code inside the namespace levels' new root."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and options of the Python sandbox. Defaults suit math/QA agent code on a laptop."""

    timeout_s: float = 10.0
    """Wall-clock limit of one call, seconds; past it everything the call started is killed."""
    cpu_seconds: int | None = None
    """CPU-time limit per process (``RLIMIT_CPU``); None means ``ceil(timeout_s)``."""
    memory_mb: int = 1024
    """Address-space limit per process (``RLIMIT_AS``), MiB. ``import numpy`` needs ~300."""
    file_mb: int = 16
    """Largest file the code may write (``RLIMIT_FSIZE``), MiB."""
    disk_mb: int = 64
    """Size of the tmpfs holding the working directory and /tmp (namespace levels), MiB: the quota."""
    total_memory_mb: int = 2048
    """Resident memory of all the call's processes together, MiB, checked every 50 ms by the namespace's
    init (namespace levels); past it the whole call is killed. Bounds a fork bomb of processes that each
    stay under ``memory_mb``."""
    processes: int = 32
    """Processes and threads the call may hold at once (``RLIMIT_NPROC`` on its own uid)."""
    open_files: int = 256
    """Open file descriptors per process (``RLIMIT_NOFILE``)."""
    max_output_chars: int = 4000
    """Characters of output the agent sees per call (stdout, then stderr); the middle is cut."""
    max_drain_bytes: int = 16 << 20
    """Bytes of output read (and discarded past the cap) before the call is stopped as a flood."""
    isolation: Literal["auto", "namespaces", "userns", "rlimits"] = "auto"
    """Isolation level; ``auto`` probes ``namespaces`` (root only), then ``userns``."""
    allow_unisolated: bool = False
    """Permit the ``rlimits`` level (no network or filesystem isolation) when nothing better works."""
    python: str = sys.executable
    """Interpreter that runs the code (its installation is made visible read-only)."""
    site_packages: bool = True
    """Put this interpreter's site-packages on the code's ``sys.path`` (``.pth`` files are not run)."""
    preimports: tuple[str, ...] = ()
    """Modules imported before the code runs (their cost is paid by every call)."""
    extra_ro_paths: tuple[str, ...] = ()
    """More host paths to show read-only inside the sandbox (namespace levels)."""
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment variables for the code (on top of the scrubbed base)."""
    uid_base: int = 1_990_000_000
    """First uid of the pool leased to calls when root (one uid per concurrent call; no passwd entry)."""
    uid_count: int = 256
    """Size of the uid pool, i.e. the most calls that can run at once."""
    nice: int = 5
    """Niceness added to the code's processes, so a busy sandbox yields the CPU to the trainer."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "total_memory_mb", "file_mb", "disk_mb", "processes", "open_files",
                     "max_output_chars", "max_drain_bytes", "uid_count"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.isolation not in ("auto", "namespaces", "userns", "rlimits"):
            raise ValueError(f"SandboxConfig.isolation={self.isolation!r}; use auto, namespaces, userns or rlimits")

    @property
    def cpu_limit(self) -> int:
        """The effective ``RLIMIT_CPU`` in seconds."""
        return int(self.cpu_seconds if self.cpu_seconds is not None else max(1, -(-self.timeout_s // 1)))


@dataclass(frozen=True)
class SandboxRun:
    """What one sandboxed run produced, before it is worded for the agent."""

    stdout: str
    """Decoded stdout, head and tail kept when long (undecodable bytes replaced)."""
    stderr: str
    """Decoded stderr, likewise."""
    exit_code: int | None
    """Exit status of the code's process; None when it was killed or never ran."""
    signal: int | None
    """Signal that killed the code's process (SIGXCPU: CPU limit, SIGSEGV: crash); None otherwise."""
    timed_out: bool
    """The wall-clock limit was hit and the call was killed."""
    flooded: bool
    """The output passed ``max_drain_bytes`` and the call was stopped."""
    setup_error: str | None
    """Why the sandbox could not be built; None when it was."""
    isolation: str
    """Isolation level that ran the code."""
    wall_s: float
    """Seconds from start to cleanup."""
    stdout_bytes: int = 0
    """Bytes the code wrote to stdout (all of them, including those dropped)."""
    stderr_bytes: int = 0
    """Bytes the code wrote to stderr."""
    memory_exceeded: int | None = None
    """Resident bytes of the call's processes when the total-memory watchdog killed them; None if it did not."""
    warnings: tuple[str, ...] = ()
    """Non-fatal set-up notes (e.g. no /proc inside)."""


class CappedBuffer:
    """Keeps the first ``cap`` and the last ``cap`` bytes of a stream and counts the rest: O(cap) memory."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        """Add one chunk."""
        self.total += len(data)
        room = self.cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data[-self.cap:]
            if len(self.tail) > self.cap:
                del self.tail[: len(self.tail) - self.cap]

    def text(self, max_chars: int) -> str:
        """Decoded text of at most about ``max_chars`` characters: head and tail, the middle cut and marked."""
        dropped = self.total - len(self.head) - len(self.tail)
        keep_head = max_chars * 2 // 3
        keep_tail = max_chars - keep_head
        if dropped == 0:
            full = clean_output((self.head + self.tail).decode("utf-8", errors="replace"))
            if len(full) <= max_chars:
                return full
            omitted = len(full) - keep_head - keep_tail
            return f"{full[:keep_head]}\n... [{omitted} characters omitted] ...\n{full[len(full) - keep_tail:]}"
        head = clean_output(self.head.decode("utf-8", errors="replace"))[:keep_head]
        tail = clean_output(self.tail.decode("utf-8", errors="replace"))
        tail = tail[len(tail) - keep_tail:] if keep_tail else ""
        omitted = self.total - len(head.encode()) - len(tail.encode())
        return f"{head}\n... [about {max(omitted, 0)} bytes of output omitted] ...\n{tail}"


_CONTROL = {c: "\ufffd" for c in range(32) if chr(c) not in "\n\t\r"}
_CONTROL[0x7F] = "\ufffd"


def clean_output(text: str) -> str:
    """Replace control characters (NUL, escape sequences) that tokenizers and terminals mishandle."""
    return text.translate(_CONTROL)
