"""Search tool, result formatting and the three backends (BM25, HTTP retriever, recorded cache)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tools_helpers import RetrieverServer, closed_port

from appo.tools.search import SearchBackend, SearchBackendError, SearchHit, SearchTool, format_hits
from appo.tools.search_bm25 import BM25Backend, BM25Index, load_corpus
from appo.tools.search_cache import CachedSearchBackend, default_cache_path, normalize_query, split_pages
from appo.tools.search_http import HTTPRetrieverBackend, parse_retrieve_response
from appo.types import ToolResult

REPO = Path(__file__).resolve().parents[2]


class FakeBackend(SearchBackend):
    """Returns ``top_k`` numbered hits per query and records every batch it is asked for."""

    def __init__(self, error: Exception | None = None, count_off: bool = False) -> None:
        self.batches: list[tuple[list[str], int]] = []
        self.error, self.count_off = error, count_off

    def search(self, queries, top_k):
        self.batches.append((list(queries), top_k))
        if self.error is not None:
            raise self.error
        out = [[SearchHit(f"text {i} of {q}", f"Title {i}", 1.0) for i in range(top_k)] for q in queries]
        return out[:-1] if self.count_off else out


# ---- formatting -------------------------------------------------------------------------------------


def test_format_layout_titles_and_untitled():
    hits = [SearchHit("Paris is the capital.", "France"), SearchHit("A snippet without title.")]
    assert format_hits("q", hits, 600,
                       3000) == "Doc 1 (Title: France) Paris is the capital.\nDoc 2: A snippet without title."


def test_format_truncates_each_document_and_the_total():
    hits = [SearchHit("word " * 200, f"T{i}") for i in range(10)]
    text = format_hits("q", hits, max_doc_chars=100, max_total_chars=350)
    lines = text.splitlines()
    assert lines[0].startswith("Doc 1 (Title: T0) word word") and lines[0].endswith("...")
    assert all(len(line) <= 100 + len("Doc 10 (Title: T9) ") for line in lines)
    assert len("\n".join(lines[:-1])) <= 350
    assert lines[-1].endswith("more documents not shown)")


def test_format_no_results_and_control_characters():
    assert format_hits("who is\x00 x", [], 100, 1000) == 'No results found for "who is x".'
    text = format_hits("q", [SearchHit("a\x1b[31mb\x00c\ud800", "t\nx")], 100, 1000)
    assert "\x1b" not in text and "\x00" not in text
    text.encode("utf-8")


# ---- the tool ---------------------------------------------------------------------------------------


def test_tool_schema_and_defaults():
    tool = SearchTool(FakeBackend(), top_k=3)
    fn = tool.schema()["function"]
    assert fn["name"] == "search" and fn["parameters"]["required"] == ["query"]
    assert set(fn["parameters"]["properties"]) == {"query", "top_k"}
    r = tool.call({"query": "  capital   of France "})
    assert r.ok and r.text.count("Doc ") == 3 and "text 0 of capital of France" in r.text


def test_tool_top_k_argument():
    backend = FakeBackend()
    tool = SearchTool(backend, top_k=3, max_top_k=5)
    assert tool.call({"query": "q", "top_k": 1}).text.count("Doc ") == 1
    assert tool.call({"query": "q", "top_k": "2"}).text.count("Doc ") == 2
    assert tool.call({"query": "q", "top_k": 4.0}).text.count("Doc ") == 4
    for bad in (0, 6, -1, True, "many", 2.5, [3]):
        r = tool.call({"query": "q", "top_k": bad})
        assert not r.ok and r.error == "bad_arguments", bad


def test_tool_bad_queries():
    tool = SearchTool(FakeBackend())
    for args in ({}, {"query": ""}, {"query": "   "}, {"query": 3}, {"query": None}, {"query": "x" * 5000}, "q", None):
        r = tool.call(args)
        assert isinstance(r, ToolResult) and not r.ok and r.error == "bad_arguments", args


def test_tool_batches_valid_queries_per_top_k():
    backend = FakeBackend()
    tool = SearchTool(backend, top_k=2)
    results = tool.call_batch([{"query": "a"}, {"query": ""}, {"query": "b", "top_k": 4}, {"query": "c"}])
    assert [r.ok for r in results] == [True, False, True, True]
    assert sorted(backend.batches) == [(["a", "c"], 2), (["b"], 4)]


@pytest.mark.parametrize("backend", [
    FakeBackend(error=SearchBackendError("retriever down")),
    FakeBackend(error=RuntimeError("bug in backend")),
    FakeBackend(count_off=True),
])
def test_tool_backend_failures_are_error_results(backend):
    r = SearchTool(backend).call({"query": "q"})
    assert not r.ok and r.error == "backend" and r.text.startswith("Error: search failed")


_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | st.lists(st.integers(),
                                                                                                    max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["query", "top_k", "q", "extra"]) | st.text(max_size=5), _values, max_size=4))
def test_fuzzed_search_arguments_never_raise(arguments):
    r = SearchTool(FakeBackend(), top_k=3).call(arguments)
    assert isinstance(r, ToolResult) and isinstance(r.text, str) and r.text
    r.text.encode("utf-8")


# ---- BM25 -------------------------------------------------------------------------------------------

DOCS = [
    {"id": "d1", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "d2", "title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"id": "d3", "title": "Campfire Tales", "text": "Campfire Tales is a 1997 American anthology horror film."},
    {"id": "d4", "title": "Cats", "text": "The domestic cat is a small carnivorous mammal."},
]


def write_corpus(path: Path, docs) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_bm25_ranks_and_drops_non_matching(tmp_path):
    backend = BM25Backend(write_corpus(tmp_path / "c.jsonl", DOCS))
    hits = backend.search(["capital of France", "horror film 1997", "quantum chromodynamics"], 3)
    assert hits[0][0].doc_id == "d1" and hits[0][0].title == "Paris"
    assert {h.doc_id for h in hits[0]} == {"d1", "d2"}  # d3, d4 share no term
    assert hits[1][0].doc_id == "d3"
    assert hits[2] == []
    assert all(h.score > 0 for h in hits[0])


def test_bm25_index_persists_and_rebuilds_when_the_corpus_changes(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", DOCS)
    first = BM25Backend(corpus, tmp_path / "idx")
    assert first.rebuilt and (tmp_path / "idx" / "meta.json").is_file()
    second = BM25Backend(corpus, tmp_path / "idx")
    assert not second.rebuilt and not second.hashed  # same size and mtime: not even re-read
    corpus.touch()
    touched = BM25Backend(corpus, tmp_path / "idx", mmap=True)
    assert touched.hashed and not touched.rebuilt  # same bytes: hashed, kept
    assert not BM25Backend(corpus, tmp_path / "idx").hashed  # the new mtime was recorded
    assert [h.doc_id for h in second.search(["capital"], 2)[0]] == [h.doc_id for h in first.search(["capital"], 2)[0]]
    write_corpus(corpus, DOCS + [{"id": "d5", "title": "Rome", "text": "Rome is the capital of Italy."}])
    third = BM25Backend(corpus, tmp_path / "idx")
    assert third.rebuilt
    assert BM25Backend(corpus, tmp_path / "idx", k1=1.2).rebuilt  # other parameters: another index
    assert third.search(["Italy"], 1)[0][0].doc_id == "d5"
    assert not list(tmp_path.glob("idx.tmp-*")) and not list(tmp_path.glob("idx.old-*"))


def test_bm25_rebuilds_a_corrupt_index(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", DOCS)
    BM25Backend(corpus)
    (tmp_path / "c.jsonl.bm25" / "meta.json").write_text("{not json")
    again = BM25Backend(corpus)
    assert again.rebuilt and again.search(["Germany"], 1)[0][0].doc_id == "d2"


def test_bm25_tool_end_to_end(tmp_path):
    tool = SearchTool(BM25Backend(write_corpus(tmp_path / "c.jsonl", DOCS)), top_k=2)
    r = tool.call({"query": "What is the capital of France?"})
    assert r.ok and r.text.startswith("Doc 1 (Title: Paris) Paris is the capital")


def test_corpus_formats_and_errors(tmp_path):
    docs = load_corpus(write_corpus(tmp_path / "a.jsonl", [{"id": 7, "contents": '"Some Title"\nbody text'},
                                                         {"text": "no title"}]))
    assert docs[0] == SearchHit("body text", "Some Title", None, "7")
    assert docs[1].title == "" and docs[1].doc_id == "2"
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(ValueError, match=r"b.jsonl:2"):
        load_corpus(bad)
    (tmp_path / "c.jsonl").write_text('{"title": "no body"}\n')
    with pytest.raises(ValueError, match="no string 'text'"):
        load_corpus(tmp_path / "c.jsonl")
    with pytest.raises(FileNotFoundError, match="JSONL"):
        BM25Backend(tmp_path / "missing.jsonl")


def test_bm25_index_save_load_round_trip(tmp_path):
    index = BM25Index([SearchHit(d["text"], d["title"], None, d["id"]) for d in DOCS])
    index.save(tmp_path / "ix")
    loaded = BM25Index.load(tmp_path / "ix")
    q = ["capital city", "small mammal"]
    assert [[h.doc_id for h in hs] for hs in loaded.search(q, 4)] == [[h.doc_id for h in hs] for hs in index.search(q,
                                                                                                                    4)]
    assert BM25Index([]).search(["x"], 3) == [[]]


# ---- recorded cache ---------------------------------------------------------------------------------


@pytest.fixture()
def small_cache(tmp_path):
    cache = {
        "Amy Smart film debut": "Page 1: Amy Smart debuted in 1996.\nPage 2: Her Costly Affair (1996).",
        "search query: Who directed Campfire Tales?": "Page 1: Directed by Matt Cooper, Martin Kunert.",
        "unknown thing": "No search results found.",
        "Cats": "Page 1: The domestic cat is a small mammal.\nPage 2: Amy Smart debuted in 1996.",
    }
    path = tmp_path / "cache.json"
    path.write_text(json.dumps(cache))
    return path


def test_cache_exact_normalized_and_bm25(small_cache):
    backend = CachedSearchBackend(small_cache)
    exact, norm, empty, unseen = backend.search(
        ["Amy Smart film debut", "who directed campfire tales", "unknown thing", "small domestic mammal"], 5)
    assert [h.text for h in exact] == ["Amy Smart debuted in 1996.", "Her Costly Affair (1996)."]
    assert [h.text for h in norm] == ["Directed by Matt Cooper, Martin Kunert."]
    assert empty == []
    assert unseen[0].text == "The domestic cat is a small mammal."
    assert backend.stats == {"exact": 2, "normalized": 1, "bm25": 1}
    assert len(backend.index.docs) == 4  # "Amy Smart debuted in 1996." recorded twice, indexed once
    assert backend.search(["Amy Smart film debut"], 1)[0][0].text == "Amy Smart debuted in 1996."


def test_cache_without_fallback_and_bad_files(small_cache, tmp_path):
    assert CachedSearchBackend(small_cache, fallback=False).search(["never seen"], 3) == [[]]
    (tmp_path / "bad.json").write_text('["not", "a", "map"]')
    with pytest.raises(ValueError, match="mapping query strings"):
        CachedSearchBackend(tmp_path / "bad.json")


def test_normalize_and_split_pages():
    assert normalize_query("search query:  Who WROTE “Dune”? ") == "who wrote dune"
    assert normalize_query("Who wrote Dune") == "who wrote dune"
    assert split_pages("Page 1: a\nb\nPage 2: c") == ["a\nb", "c"]
    assert split_pages("No search results found.") == []


def test_bundled_cache_is_the_repos_copy_and_answers():
    path = default_cache_path()
    assert path.resolve() == (REPO / "data" / "search" / "search_cache.json").resolve()
    backend = CachedSearchBackend()
    assert len(backend.exact) == 1000
    tool = SearchTool(backend, top_k=3)
    r = tool.call({"query": "Amy Smart film debut Campfire Tales"})
    assert r.ok and r.text.startswith("Doc 1: The film is made up of three individual short segments")
    prefixed = tool.call({"query": "What nationality was Yuri Ozerov and John Cromwell?"})
    assert "Yuriy Ozerov was born on 26 January 1921" in prefixed.text
    unseen = tool.call({"query": "anthology horror film directed by Matt Cooper"})
    assert unseen.ok and "Campfire Tales" in unseen.text


# ---- HTTP retriever ---------------------------------------------------------------------------------


@pytest.fixture()
def server(request):
    srv = RetrieverServer(getattr(request, "param", "ok"))
    yield srv
    srv.close()


def test_http_search_r1_format(server):
    backend = HTTPRetrieverBackend(server.url, timeout_s=2)
    hits = backend.search(["capital of France", "cats"], 2)
    assert server.requests == [{"queries": ["capital of France", "cats"], "topk": 2, "return_scores": True}]
    assert hits[0][0] == SearchHit("About capital of France, passage 0.", "Title 0", 1.0, "0")
    tool = SearchTool(backend, top_k=2)
    assert tool.call({"query": "cats"}).text.startswith("Doc 1 (Title: Title 0) About cats, passage 0.")


@pytest.mark.parametrize("server", ["plain"], indirect=True)
def test_http_plain_list_format(server):
    hits = HTTPRetrieverBackend(server.url, timeout_s=2).search(["q"], 2)
    assert hits == [[SearchHit("text 0 for q", "T0", None, "q-0"), SearchHit("text 1 for q", "T1", None, "q-1")]]


@pytest.mark.parametrize("server", ["fail_then_ok"], indirect=True)
def test_http_retries_transient_errors(server):
    hits = HTTPRetrieverBackend(server.url, timeout_s=2, retries=2, backoff_s=0.01).search(["q"], 1)
    assert len(server.requests) == 2 and hits[0][0].title == "Title 0"


@pytest.mark.parametrize("server,attempts", [("500", 3), ("404", 1), ("garbage", 1), ("wrong_count", 1)],
                         indirect=["server"])
def test_http_errors_become_error_results(server, attempts):
    tool = SearchTool(HTTPRetrieverBackend(server.url, timeout_s=2, retries=2, backoff_s=0.01))
    r = tool.call({"query": "q"})
    assert not r.ok and r.error == "backend" and "retriever at http://127.0.0.1" in r.text
    assert len(server.requests) == attempts


@pytest.mark.parametrize("server", ["hang", "trickle"], indirect=True)
def test_http_slow_server_times_out_instead_of_hanging(server):
    tool = SearchTool(HTTPRetrieverBackend(server.url, timeout_s=0.5, retries=1, backoff_s=0.05))
    t0 = time.monotonic()
    r = tool.call({"query": "q"})
    elapsed = time.monotonic() - t0
    assert not r.ok and r.error == "backend" and "0.5 s" in r.text, r.text
    assert elapsed < 3.0, elapsed
    assert len(server.requests) == 2


def test_http_closed_port_is_an_error_quickly():
    tool = SearchTool(HTTPRetrieverBackend(f"http://127.0.0.1:{closed_port()}/retrieve", timeout_s=1, retries=1,
                                           backoff_s=0.01))
    t0 = time.monotonic()
    r = tool.call({"query": "q"})
    assert not r.ok and "cannot reach the server" in r.text
    assert time.monotonic() - t0 < 2


def test_http_url_must_be_http():
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1:8000", ""):
        with pytest.raises(ValueError, match="http"):
            HTTPRetrieverBackend(url)


def test_parse_retrieve_response_variants():
    assert parse_retrieve_response({"result": [["just a string"]]}, 1) == [[SearchHit("just a string")]]
    assert parse_retrieve_response([[{"contents": "only one line"}]], 1) == [[SearchHit("only one line")]]
    for bad in ({"results": []}, {"result": [1]}, {"result": [[{"weird": 1}]]}, "text"):
        with pytest.raises(SearchBackendError):
            parse_retrieve_response(bad, 1)
