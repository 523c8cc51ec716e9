"""Helpers of the tools tests (imported as ``tools_helpers``; pytest puts this folder on sys.path): loopback servers the tests start themselves (127.0.0.1 only) and
helpers to look at the processes a sandbox left behind."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from appo.tools.sandbox_process import SandboxConfig, detect_isolation

ISOLATED = detect_isolation(SandboxConfig())[0] in ("namespaces", "userns")
needs_isolation = pytest.mark.skipif(
    not ISOLATED, reason="no namespace isolation on this machine (needs root or user namespaces)"
)
needs_root = pytest.mark.skipif(
    detect_isolation(SandboxConfig())[0] != "namespaces", reason="needs root (the 'namespaces' level)"
)


class LoopbackTCPServer:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class LoopbackUDPServer:
    """A UDP socket on 127.0.0.1 that counts the datagrams it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.setblocking(False)

    def received(self) -> int:
        n = 0
        while True:
            try:
                self.sock.recv(65536)
                n += 1
            except BlockingIOError:
                return n

    def close(self) -> None:
        self.sock.close()


def processes_with_uid_in(lo: int, hi: int) -> list[int]:
    """Pids of processes whose real uid lies in ``[lo, hi)``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        if lo <= int(line.split()[1]) < hi:
                            found.append(int(name))
                        break
        except (OSError, ValueError):
            continue
    return found


def describe(pids: list[int]) -> list[str]:
    """``pid state cmdline`` of each pid, for assertion messages."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid} {stat.rsplit(')', 1)[1].split()[0]} ppid={stat.rsplit(')', 1)[1].split()[1]} {cmd}")
        except OSError:
            out.append(f"{pid} gone")
    return out


def processes_with_cmdline(marker: bytes) -> list[int]:
    """Pids of processes whose command line contains ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker in f.read():
                    found.append(int(name))
        except OSError:
            continue
    return found
