"""``search`` tool: a query in, the top-k documents of a retrieval backend out, as text for the model.

Backends implement :class:`SearchBackend` (a batch of queries -> ranked :class:`SearchHit` lists) and
raise :class:`SearchBackendError` when they cannot answer; the tool turns that into an ``ok=False``
result. Three are provided: :class:`~appo.tools.search_bm25.BM25Backend` (local BM25 over a JSONL
corpus), :class:`~appo.tools.search_http.HTTPRetrieverBackend` (a Search-R1 style ``/retrieve``
server) and :class:`~appo.tools.search_cache.CachedSearchBackend` (recorded web results, with BM25
over the recorded pages for queries it has not seen).

Result text (what the agent sees), one block per document, best first::

    Doc 1 (Title: Campfire Tales) Campfire Tales is a 1997 American anthology horror film ...
    Doc 2 (Title: ...) ...

A document without a title is written ``Doc 2: text``. Each document's text is cut to
``max_doc_chars`` (at a word boundary, marked ``...``) and the whole result to ``max_total_chars``
(documents that do not fit are dropped and a short note says how many). Control characters are replaced. No
hit gives ``No results found for "<query>".`` (``ok=True``: an empty search is an answer).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from appo.tools.base import Tool
from appo.types import ToolResult

__all__ = ["SearchHit", "SearchBackend", "SearchBackendError", "SearchTool", "format_hits"]

MAX_QUERY_CHARS = 1000
"""Longest query accepted; longer ones are refused as bad arguments."""


@dataclass(frozen=True)
class SearchHit:
    """One retrieved document."""

    text: str
    """Document body (without the title)."""
    title: str = ""
    """Document title; empty when the source has none (recorded web snippets)."""
    score: float | None = None
    """Backend relevance score (higher is better); None when the backend gives none."""
    doc_id: str = ""
    """Backend's document id, for reports."""


class SearchBackendError(RuntimeError):
    """A backend could not answer (down, slow, bad response). The message is shown to the agent."""


class SearchBackend(ABC):
    """Ranked retrieval over some corpus. Implementations must return within a bounded time."""

    @abstractmethod
    def search(self, queries: Sequence[str], top_k: int) -> list[list[SearchHit]]:
        """Top ``top_k`` hits for each query, best first (fewer when fewer match).

        Raises :class:`SearchBackendError` when the backend cannot answer.
        """

    def close(self) -> None:
        """Release resources. Default: nothing."""


_CONTROL = {c: " " for c in range(32) if chr(c) not in "\n\t"}
_CONTROL[0x7F] = " "


def clean_text(text: str) -> str:
    """Replace control characters with spaces and collapse runs of blank space within lines."""
    text = text.translate(_CONTROL)
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> '?'
    return re.sub(r"[ \t]+", " ", text).strip()


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 0)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "..."


def format_hits(query: str, hits: Sequence[SearchHit], max_doc_chars: int, max_total_chars: int) -> str:
    """The result text of one query (layout in the module docstring)."""
    if not hits:
        return f'No results found for "{_cut(clean_text(query), 200)}".'
    blocks: list[str] = []
    used = shown = 0
    for hit in hits:
        title = clean_text(hit.title).replace("\n", " ")
        head = f"Doc {shown + 1} (Title: {_cut(title, 200)}) " if title else f"Doc {shown + 1}: "
        block = head + _cut(clean_text(hit.text).replace("\n", " "), max_doc_chars)
        sep = 1 if blocks else 0
        room = max_total_chars - used - sep
        if len(block) > room:
            if room >= len(head) + 40:  # room for a useful part of it
                blocks.append(_cut(block, room))
                shown += 1
            break
        blocks.append(block)
        used += len(block) + sep
        shown += 1
    dropped = len(hits) - shown
    if dropped:
        blocks.append(f"({dropped} more document{'s' if dropped > 1 else ''} not shown)")
    return "\n".join(blocks)


class SearchTool(Tool):
    """Search tool (tag ``<search>...</search>``, arguments ``query`` and optional ``top_k``)."""

    name = "search"
    description = (
        "Search for documents relevant to a query and return the top results as text "
        "(Doc 1 (Title: ...) ..., Doc 2 ...). Use short, specific keyword queries."
    )
    parameters = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "The search query."},
            "top_k": {"type": "integer", "description": "How many documents to return (optional)."},
        },
        "required": ["query"],
    }
    tag_argument = "query"

    def __init__(self, backend: SearchBackend, *, top_k: int = 5, max_top_k: int = 10, max_doc_chars: int = 600,
                 max_total_chars: int = 3000, max_workers: int = 8) -> None:
        """``top_k`` is the default number of documents; a call may ask for 1..``max_top_k``."""
        if not isinstance(backend, SearchBackend):
            raise TypeError(f"SearchTool(backend=...) needs a SearchBackend, got {type(backend).__name__}")
        if not 1 <= top_k <= max_top_k:
            raise ValueError(f"SearchTool top_k={top_k} must lie in [1, max_top_k={max_top_k}]")
        if max_doc_chars < 20 or max_total_chars < max_doc_chars:
            raise ValueError("SearchTool needs max_doc_chars >= 20 and max_total_chars >= max_doc_chars")
        self.backend = backend
        self.top_k, self.max_top_k = top_k, max_top_k
        self.max_doc_chars, self.max_total_chars = max_doc_chars, max_total_chars
        self.max_workers = max_workers

    def _parse(self, arguments) -> tuple[str, int] | ToolResult:
        if not isinstance(arguments, dict):
            return ToolResult("Error: the search tool takes a JSON object of arguments.", False, "bad_arguments")
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            return ToolResult("Error: the search tool needs a non-empty string argument 'query'.", False,
                              "bad_arguments")
        if len(query) > MAX_QUERY_CHARS:
            return ToolResult(f"Error: the query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}.",
                              False, "bad_arguments")
        k = arguments.get("top_k", self.top_k)
        if k is None:
            k = self.top_k
        if isinstance(k, str) and k.strip().isdigit():
            k = int(k.strip())
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_top_k:
            return ToolResult(f"Error: top_k must be an integer from 1 to {self.max_top_k} (got {k!r:.40}).", False,
                              "bad_arguments")
        return " ".join(query.split()), k

    def call(self, arguments: dict) -> ToolResult:
        """Search one query; backend failures become ``ok=False`` results."""
        return self.call_batch([arguments])[0]

    def call_batch(self, arguments: Sequence[dict]) -> list[ToolResult]:
        """Validate every call, then send the valid queries to the backend in one batch per ``top_k``."""
        results: list[ToolResult | None] = [None] * len(arguments)
        groups: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for i, args in enumerate(arguments):
            parsed = self._parse(args)
            if isinstance(parsed, ToolResult):
                results[i] = parsed
            else:
                groups[parsed[1]].append((i, parsed[0]))
        for k, items in groups.items():
            queries = [q for _, q in items]
            try:
                hits = self.backend.search(queries, k)
                if not isinstance(hits, list) or len(hits) != len(queries):
                    got = len(hits) if isinstance(hits, list) else type(hits).__name__
                    raise SearchBackendError(f"the backend returned {got} "
                                             f"result lists for {len(queries)} queries")
            except SearchBackendError as exc:
                for i, _ in items:
                    results[i] = ToolResult(f"Error: search failed: {exc}", False, "backend")
                continue
            except Exception as exc:  # noqa: BLE001 - a backend bug must not stop the rollout
                for i, _ in items:
                    results[i] = ToolResult(f"Error: search failed: {type(exc).__name__}: {exc}", False, "backend")
                continue
            for (i, q), h in zip(items, hits):
                results[i] = ToolResult(format_hits(q, list(h)[:k], self.max_doc_chars, self.max_total_chars))
        return [r if r is not None else ToolResult("Error: internal", False, "exception") for r in results]

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()
