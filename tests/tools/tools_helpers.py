"""Helpers of the tools tests (imported as ``tools_helpers``; pytest puts this folder on sys.path): loopback
servers the tests start themselves (127.0.0.1 only) and helpers to look at the processes a sandbox left behind."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from appo.tools.sandbox_config import SandboxConfig
from appo.tools.sandbox_process import detect_isolation

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


class RetrieverServer:
    """A Search-R1 style ``/retrieve`` server on 127.0.0.1 whose behaviour a test sets with ``mode``.

    Modes: ``ok`` (wiki-18 ``contents`` documents with scores), ``plain`` (bare list of title/text
    documents, no scores), ``fail_then_ok`` (HTTP 500 for the first ``failures`` requests), ``500``,
    ``404``, ``hang`` (never answers), ``trickle`` (one byte of body every 0.2 s), ``garbage`` (not JSON),
    ``wrong_count`` (one list too few).
    """

    def __init__(self, mode: str = "ok", failures: int = 1) -> None:
        import http.server
        import json

        self.mode, self.failures = mode, failures
        self.requests: list[dict] = []
        self._release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(req)
                mode = server.mode
                if mode == "fail_then_ok":
                    mode = "500" if len(server.requests) <= server.failures else "ok"
                if mode == "hang":
                    server._release.wait(30)
                    return
                if mode in ("500", "404"):
                    return self._send(int(mode), b'{"error": "nope"}')
                if mode == "garbage":
                    return self._send(200, b"<html>not json</html>")
                queries, k = req["queries"], req["topk"]
                if mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    for _ in range(1000):
                        if server._release.wait(0.2):
                            return
                        self.wfile.write(b" ")
                        self.wfile.flush()
                    return
                if mode == "plain":
                    result = [[{"id": f"{q}-{i}", "title": f"T{i}", "text": f"text {i} for {q}"} for i in range(k)]
                              for q in queries]
                    return self._send(200, json.dumps(result).encode())
                result = [[{"document": {"id": str(i), "contents": f'"Title {i}"\nAbout {q}, passage {i}.'},
                            "score": 1.0 / (i + 1)} for i in range(k)] for q in queries]
                if mode == "wrong_count":
                    result = result[:-1]
                return self._send(200, json.dumps({"result": result}).encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/retrieve"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=2)


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
