"""Client of a Search-R1 style retrieval server (``POST /retrieve``), with timeouts and retries.

Request (JSON)::

    {"queries": ["q1", "q2"], "topk": 3, "return_scores": true}

Accepted responses (JSON), one list of documents per query, in query order:

- ``{"result": [[item, ...], ...]}`` (Search-R1 / verl / FlashRAG), or a bare ``[[item, ...], ...]``;
- an ``item`` is ``{"document": doc, "score": s}`` (with ``return_scores``) or ``doc`` itself;
- a ``doc`` is ``{"contents": "Title\\ntext"}`` (wiki-18: the first line is the title, often quoted),
  ``{"title": ..., "text": ...}`` (``contents`` instead of ``text`` also works), or a plain string
  (no title). An ``id`` field is kept when present.

Failures never hang the caller: each attempt has one deadline for the whole exchange (a watchdog
shuts the socket down when it passes, so a server that trickles bytes cannot hold the call); connection
errors, timeouts and 5xx answers are retried ``retries`` times with a growing pause; 4xx answers and
malformed bodies are not retried. The final failure is a
:class:`~appo.tools.search.SearchBackendError` whose message the agent sees. The client is
``http.client`` (stdlib): only ``http``/``https`` URLs, no environment proxies (a request to 127.0.0.1
stays on 127.0.0.1), responses read up to ``max_response_bytes``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from typing import Any, Sequence

from appo.tools.search import SearchBackend, SearchBackendError, SearchHit

__all__ = ["HTTPRetrieverBackend", "parse_retrieve_response"]


def _doc_to_hit(item: Any, where: str) -> SearchHit:
    score = None
    doc = item
    if isinstance(item, dict) and "document" in item:
        doc = item["document"]
        s = item.get("score")
        score = float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None
    if isinstance(doc, str):
        title, _, text = doc.partition("\n") if "\n" in doc else ("", "", doc)
        return SearchHit(text.strip() if title else doc.strip(), title.strip().strip('"'), score)
    if isinstance(doc, dict):
        doc_id = str(doc.get("id", doc.get("doc_id", "")))
        if isinstance(doc.get("text"), str) or isinstance(doc.get("title"), str):
            text = doc.get("text") if isinstance(doc.get("text"), str) else str(doc.get("contents", ""))
            return SearchHit(text.strip(), str(doc.get("title") or "").strip().strip('"'), score, doc_id)
        if isinstance(doc.get("contents"), str):
            title, _, text = doc["contents"].partition("\n")
            if not text:
                title, text = "", title
            return SearchHit(text.strip(), title.strip().strip('"'), score, doc_id)
    raise SearchBackendError(f"the retriever returned an unreadable document at {where}: {str(item)[:120]!r}")


def parse_retrieve_response(payload: Any, n_queries: int) -> list[list[SearchHit]]:
    """Hits per query from a decoded response body (formats in the module docstring)."""
    result = payload.get("result") if isinstance(payload, dict) else payload
    if isinstance(payload, dict) and "result" not in payload:
        raise SearchBackendError(f"the retriever's answer has no 'result' field (keys: {sorted(payload)[:8]})")
    if not isinstance(result, list) or len(result) != n_queries:
        got = f"{len(result)} lists" if isinstance(result, list) else type(result).__name__
        raise SearchBackendError(f"the retriever returned {got} for {n_queries} queries")
    out = []
    for qi, docs in enumerate(result):
        if not isinstance(docs, list):
            raise SearchBackendError(f"the retriever's result {qi} is a {type(docs).__name__}, not a list")
        out.append([_doc_to_hit(d, f"result[{qi}][{di}]") for di, d in enumerate(docs)])
    return out


class _Transient(Exception):
    """A failure worth retrying (connection refused/reset, timeout, 5xx)."""


class HTTPRetrieverBackend(SearchBackend):
    """``POST {url}`` with a batch of queries; see the module docstring for formats and failure handling."""

    def __init__(self, url: str = "http://127.0.0.1:8000/retrieve", *, timeout_s: float = 10.0, retries: int = 2,
                 backoff_s: float = 0.5, return_scores: bool = True, max_response_bytes: int = 32 << 20) -> None:
        """``timeout_s`` bounds each attempt as a whole (a watchdog closes the socket when it passes), so
        the worst case is about ``(retries + 1) * timeout_s`` plus the pauses between attempts."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"HTTPRetrieverBackend url={url!r} must be an http(s) URL such as "
                             "http://127.0.0.1:8000/retrieve")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("HTTPRetrieverBackend needs timeout_s > 0, retries >= 0 and backoff_s >= 0")
        self.url, self.timeout_s, self.retries, self.backoff_s = url, timeout_s, retries, backoff_s
        self.return_scores, self.max_response_bytes = return_scores, max_response_bytes
        self._https = parsed.scheme == "https"
        self._host, self._port = parsed.hostname, parsed.port
        self._path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")

    def _attempt(self, body: bytes) -> Any:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout_s)
        expired = threading.Event()
        held: list[socket.socket] = []  # the connection drops its reference once the response owns it

        def watchdog() -> None:  # a server that trickles bytes would reset every per-recv timeout
            expired.set()
            for sock in held:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(self.timeout_s, watchdog)
        timer.daemon = True
        timer.start()
        try:
            conn.connect()
            held.append(conn.sock)
            if expired.is_set():
                watchdog()
            conn.request("POST", self._path, body=body,
                         headers={"Content-Type": "application/json", "Accept": "application/json"})
            resp = conn.getresponse()
            status, reason = resp.status, resp.reason
            raw = resp.read(self.max_response_bytes + 1)
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set() or isinstance(exc, (TimeoutError, socket.timeout)):
                raise _Transient(f"no answer within {self.timeout_s:g} s") from exc
            raise _Transient(f"cannot reach the server ({type(exc).__name__}: {exc})") from exc
        finally:
            timer.cancel()
            conn.close()
        if expired.is_set():
            raise _Transient(f"no complete answer within {self.timeout_s:g} s")
        if status >= 500:
            raise _Transient(f"HTTP {status} {reason}")
        if status >= 400:
            raise SearchBackendError(f"HTTP {status} {reason}")
        if len(raw) > self.max_response_bytes:
            raise SearchBackendError(f"the retriever's answer is larger than {self.max_response_bytes} bytes")
        try:
            return json.loads(raw.decode("utf-8", "replace"))
        except ValueError as exc:
            raise SearchBackendError(f"the retriever's answer is not JSON ({exc}): {raw[:80]!r}") from exc

    def search(self, queries: Sequence[str], top_k: int) -> list[list[SearchHit]]:
        """One POST for the whole batch (retried on transient failures)."""
        if not queries:
            return []
        body = json.dumps({"queries": list(queries), "topk": int(top_k), "return_scores": self.return_scores}).encode()
        last, attempt = "no attempt", 0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * attempt)
            try:
                return parse_retrieve_response(self._attempt(body), len(queries))
            except _Transient as exc:
                last = str(exc)
            except SearchBackendError as exc:
                raise SearchBackendError(f"retriever at {self.url}: {exc}") from exc
        raise SearchBackendError(f"retriever at {self.url} failed after {attempt + 1} attempt(s): {last}")
