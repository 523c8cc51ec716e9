"""Local BM25 retrieval with ``bm25s``: an in-memory index over documents, and a backend over a JSONL
corpus whose index is persisted to a directory and rebuilt when the corpus changes.

Scoring is bm25s' Lucene variant of BM25 (k1 = 1.5, b = 0.75 by default) over lower-cased word
tokens with English stop words removed; stemming is off unless ``stemmer="english"`` is given (it
needs the optional ``PyStemmer`` package). Documents with score 0 (no query term) are not returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import bm25s

from appo.tools.search import SearchBackend, SearchBackendError, SearchHit

__all__ = ["BM25Index", "BM25Backend", "load_corpus"]

INDEX_FORMAT = 1
"""Version of the on-disk layout written by :meth:`BM25Index.save`; a different one forces a rebuild."""


def _stemmer(name: str | None):
    if name is None:
        return None
    try:
        import Stemmer  # PyStemmer
    except ImportError as exc:
        raise ImportError(f"stemmer={name!r} needs PyStemmer: pip install PyStemmer (or pass stemmer=None)") from exc
    return Stemmer.Stemmer(name).stemWord


class BM25Index:
    """BM25 over a list of :class:`SearchHit` documents (title and text are both indexed)."""

    def __init__(self, docs: Sequence[SearchHit], *, k1: float = 1.5, b: float = 0.75,
                 stemmer: str | None = None, _retriever: bm25s.BM25 | None = None) -> None:
        """Build the index (or adopt a loaded ``_retriever``)."""
        self.docs = list(docs)
        self.params = {"k1": k1, "b": b, "stemmer": stemmer}
        self._stem = _stemmer(stemmer)
        self._lock = threading.Lock()
        if _retriever is not None:
            self.retriever = _retriever
        elif self.docs:
            tokens = bm25s.tokenize([f"{d.title}\n{d.text}" for d in self.docs], stopwords="en",
                                    stemmer=self._stem, show_progress=False)
            self.retriever = bm25s.BM25(k1=k1, b=b)
            self.retriever.index(tokens, show_progress=False)
        else:
            self.retriever = None

    def search(self, queries: Sequence[str], top_k: int) -> list[list[SearchHit]]:
        """Top ``top_k`` documents with a positive score for each query."""
        if not queries:
            return []
        if self.retriever is None:
            return [[] for _ in queries]
        k = min(top_k, len(self.docs))
        tokens = bm25s.tokenize(list(queries), stopwords="en", stemmer=self._stem, return_ids=False,
                                show_progress=False)
        with self._lock:
            idx_QK, score_QK = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        out = []
        for idx_K, score_K in zip(idx_QK, score_QK):
            hits = []
            for i, s in zip(idx_K, score_K):
                if s > 0:
                    d = self.docs[int(i)]
                    hits.append(SearchHit(d.text, d.title, float(s), d.doc_id))
            out.append(hits)
        return out

    def save(self, directory: str | os.PathLike, meta: dict | None = None) -> None:
        """Write the index, the documents and ``meta`` (plus the format and parameters) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.retriever is not None:
            self.retriever.save(str(directory / "bm25s"), show_progress=False)
        with open(directory / "docs.jsonl", "w", encoding="utf-8") as f:
            for d in self.docs:
                f.write(json.dumps({"id": d.doc_id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")
        info = {"format": INDEX_FORMAT, "params": self.params, "n_docs": len(self.docs), **(meta or {})}
        (directory / "meta.json").write_text(json.dumps(info, indent=1))

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = False) -> BM25Index:
        """Read an index written by :meth:`save` (``mmap``: map the score matrix instead of reading it)."""
        directory = Path(directory)
        info = json.loads((directory / "meta.json").read_text())
        docs = []
        with open(directory / "docs.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                docs.append(SearchHit(r["text"], r["title"], None, r["id"]))
        retriever = None
        if docs:
            retriever = bm25s.BM25.load(str(directory / "bm25s"), mmap=mmap, show_progress=False)
        p = info["params"]
        return cls(docs, k1=p["k1"], b=p["b"], stemmer=p["stemmer"], _retriever=retriever)


def _split_contents(contents: str) -> tuple[str, str]:
    """Search-R1 / FlashRAG ``contents``: first line the (often quoted) title, the rest the text."""
    title, _, text = contents.partition("\n")
    return title.strip().strip('"').strip(), text.strip()


def load_corpus(path: str | os.PathLike) -> list[SearchHit]:
    """Read a JSONL corpus of ``{"id", "title", "text"}`` objects (``contents`` = "title\\ntext" also works)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BM25 corpus {path} does not exist; pass a JSONL file of "
                                '{"id": ..., "title": ..., "text": ...} lines')
    docs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc}); each line must be one "
                                 '{"id", "title", "text"} object') from exc
            if not isinstance(r, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object with a 'text' field, got {type(r).__name__}")
            if isinstance(r.get("text"), str):
                title, text = str(r.get("title") or ""), r["text"]
            elif isinstance(r.get("contents"), str):
                title, text = _split_contents(r["contents"])
                title = str(r.get("title") or title)
            else:
                raise ValueError(f"{path}:{lineno}: no string 'text' (or 'contents') field; keys are {sorted(r)[:10]}")
            docs.append(SearchHit(text, title, None, str(r.get("id", lineno))))
    return docs


def _corpus_hash(path: Path, params: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": INDEX_FORMAT, "params": params, "bm25s": bm25s.__version__},
                        sort_keys=True).encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class BM25Backend(SearchBackend):
    """BM25 over a JSONL corpus; the index lives in ``index_dir`` and is rebuilt when the corpus changes.

    Staleness is decided by a SHA-256 of the corpus bytes, the BM25 parameters, the index format and the
    bm25s version, stored in ``meta.json``. The hash is only recomputed when the corpus's size or
    modification time differ from those recorded (so a large corpus is not re-read at every start, and a
    file touched but unchanged is not re-indexed). A rebuild is written to a temporary sibling directory
    and moved into place, so a reader never sees half an index. Documents are kept in memory (a copy
    sits in ``index_dir/docs.jsonl``): meant for corpora up to about a million passages; serve larger
    ones (wiki-18) with a retrieval server and :class:`~appo.tools.search_http.HTTPRetrieverBackend`.
    """

    def __init__(self, corpus: str | os.PathLike, index_dir: str | os.PathLike | None = None, *,
                 k1: float = 1.5, b: float = 0.75, stemmer: str | None = None, mmap: bool = False) -> None:
        """``index_dir`` defaults to ``<corpus>.bm25/`` beside the corpus; ``mmap`` maps the saved matrix."""
        self.corpus = Path(corpus)
        if not self.corpus.is_file():
            raise FileNotFoundError(f"BM25 corpus {self.corpus} does not exist; pass a JSONL file of "
                                    '{"id": ..., "title": ..., "text": ...} lines')
        self.index_dir = Path(index_dir) if index_dir is not None else self.corpus.with_name(self.corpus.name + ".bm25")
        params = {"k1": k1, "b": b, "stemmer": stemmer}
        self.rebuilt = False
        """True when this instance had to (re)build the index rather than load it."""
        self.hashed = False
        """True when this instance read the whole corpus to hash it."""
        self.index = self._load_or_build(params, mmap)

    def _digest(self, params: dict) -> str:
        self.hashed = True
        return _corpus_hash(self.corpus, params)

    def _load_or_build(self, params: dict, mmap: bool) -> BM25Index:
        meta_path = self.index_dir / "meta.json"
        digest = None
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                same_file = meta.get("corpus_fingerprint") == _fingerprint(self.corpus)
                if same_file and meta.get("params") == params and meta.get("format") == INDEX_FORMAT \
                        and meta.get("bm25s") == bm25s.__version__:
                    return BM25Index.load(self.index_dir, mmap=mmap)
                digest = self._digest(params)
                if meta.get("corpus_sha256") == digest:
                    index = BM25Index.load(self.index_dir, mmap=mmap)
                    meta["corpus_fingerprint"] = _fingerprint(self.corpus)  # touched, not changed
                    meta_path.write_text(json.dumps(meta, indent=1))
                    return index
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable or partial: rebuild
        digest = digest or self._digest(params)
        fingerprint = _fingerprint(self.corpus)
        index = BM25Index(load_corpus(self.corpus), **params)
        self.index_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=self.index_dir.name + ".tmp-", dir=self.index_dir.parent))
        try:
            index.save(tmp, meta={"corpus_sha256": digest, "corpus_fingerprint": fingerprint,
                                  "corpus": str(self.corpus), "bm25s": bm25s.__version__})
            old = None
            if self.index_dir.exists():
                old = self.index_dir.with_name(self.index_dir.name + f".old-{os.getpid()}")
                os.replace(self.index_dir, old)
            os.replace(tmp, self.index_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.rebuilt = True
        return index

    def search(self, queries: Sequence[str], top_k: int) -> list[list[SearchHit]]:
        """BM25 top-k per query."""
        try:
            return self.index.search(queries, top_k)
        except Exception as exc:  # noqa: BLE001
            raise SearchBackendError(f"BM25 retrieval failed: {type(exc).__name__}: {exc}") from exc
