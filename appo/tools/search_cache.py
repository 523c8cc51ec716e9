"""Offline search over recorded web results (``data/search/search_cache.json``).

The cache maps a query to the text a web search returned for it: result pages written
``Page 1: <snippet>\\nPage 2: <snippet>...`` (or ``No search results found.``). About 60% of its keys
carry a ``search query: `` prefix, a few hold whole prompts; none has titles.

Lookup, in order:

1. the query exactly as written;
2. the normalised query: Unicode NFKC, lower case, a leading ``search query:`` removed, punctuation
   dropped, whitespace collapsed (so ``"Who wrote X?"`` finds ``search query: who wrote x``);
3. BM25 over every recorded page (deduplicated), for queries the cache has not seen.

Hits from 1 and 2 keep the recorded page order (the web engine's ranking, no score); BM25 hits are
ranked by score. Pages have no title, so results read ``Doc 1: <snippet>``.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Sequence

from appo.tools.search import SearchBackend, SearchBackendError, SearchHit
from appo.tools.search_bm25 import BM25Index

__all__ = ["CachedSearchBackend", "normalize_query", "split_pages", "default_cache_path"]

CACHE_RELATIVE = "search/search_cache.json"
"""Path of the bundled cache inside the data directory."""

_PREFIX = re.compile(r"^\s*search\s+query\s*:\s*", re.IGNORECASE)
_PAGE = re.compile(r"(?m)^Page \d+:\s*")
_NON_WORD = re.compile(r"[^\w\s]+")


def normalize_query(query: str) -> str:
    """Key used for the normalised lookup (step 2 of the module docstring)."""
    q = unicodedata.normalize("NFKC", query).lower()
    q = _PREFIX.sub("", q)
    q = _NON_WORD.sub(" ", q)
    return " ".join(q.split())


def split_pages(text: str) -> list[str]:
    """The snippets of one recorded result (``Page N:`` blocks); [] for "No search results found."."""
    parts = [p.strip() for p in _PAGE.split(text)]
    pages = [p for p in parts if p]
    if len(pages) == 1 and not _PAGE.search(text) and pages[0].lower().startswith("no search results"):
        return []
    return pages


def default_cache_path() -> Path:
    """The bundled cache found through :mod:`appo.paths` (``data/search/search_cache.json``)."""
    from appo.paths import describe_roots, find_data_file

    path = find_data_file(CACHE_RELATIVE)
    if path is None:
        raise FileNotFoundError(f"no {CACHE_RELATIVE}: {describe_roots()}")
    return path


class CachedSearchBackend(SearchBackend):
    """Recorded results for known queries, BM25 over the recorded pages for the others."""

    def __init__(self, path: str | os.PathLike | None = None, *, fallback: bool = True) -> None:
        """``path``: the cache JSON (default: the bundled one). ``fallback``: use BM25 for unseen queries."""
        self.path = Path(path) if path is not None else default_cache_path()
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"search cache {self.path} is not readable JSON: {exc}") from exc
        if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            raise ValueError(f"search cache {self.path} must be a JSON object mapping query strings to result text")
        self.exact: dict[str, list[str]] = {k: split_pages(v) for k, v in raw.items()}
        self.normalized: dict[str, list[str]] = {}
        for k, pages in self.exact.items():
            norm = normalize_query(k)
            # Prefer an entry with results when two keys normalise alike.
            if norm and (norm not in self.normalized or (pages and not self.normalized[norm])):
                self.normalized[norm] = pages
        self.fallback = fallback
        self._index: BM25Index | None = None
        self.stats = {"exact": 0, "normalized": 0, "bm25": 0}
        """How each query was answered (counts), for reports."""

    @property
    def index(self) -> BM25Index:
        """BM25 over the distinct recorded pages (built on first use, ~1 s)."""
        if self._index is None:
            seen: dict[str, None] = {}
            for pages in self.exact.values():
                for p in pages:
                    seen.setdefault(p, None)
            self._index = BM25Index([SearchHit(p, "", None, f"page-{i}") for i, p in enumerate(seen)])
        return self._index

    def lookup(self, query: str) -> tuple[str, list[str]] | None:
        """``(how, pages)`` for a recorded query (``how`` is ``exact`` or ``normalized``), else None."""
        if query in self.exact:
            return "exact", self.exact[query]
        norm = normalize_query(query)
        if norm in self.normalized:
            return "normalized", self.normalized[norm]
        return None

    def search(self, queries: Sequence[str], top_k: int) -> list[list[SearchHit]]:
        """Recorded pages (first ``top_k``) or, for unseen queries, BM25 over all recorded pages."""
        out: list[list[SearchHit] | None] = []
        misses: list[int] = []
        for i, q in enumerate(queries):
            found = self.lookup(q)
            if found is None:
                out.append(None)
                misses.append(i)
            else:
                self.stats[found[0]] += 1
                out.append([SearchHit(p) for p in found[1][:top_k]])
        if misses:
            if self.fallback:
                try:
                    hits = self.index.search([queries[i] for i in misses], top_k)
                except Exception as exc:  # noqa: BLE001
                    raise SearchBackendError(f"BM25 over the cache failed: {type(exc).__name__}: {exc}") from exc
                for i, h in zip(misses, hits):
                    out[i] = h
                self.stats["bm25"] += len(misses)
            else:
                for i in misses:
                    out[i] = []
        return [o or [] for o in out]
