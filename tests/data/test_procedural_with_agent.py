"""Procedural demonstrations go through the agent's tag protocol (render_demonstration) and score full marks."""

import pytest

agent = pytest.importorskip("appo.agent")

import bm25s  # noqa: E402

from appo.data.procedural import get_task  # noqa: E402
from appo.data.procedural.arith import evaluate  # noqa: E402
from appo.rewards import REWARDS  # noqa: E402
from appo.tools.base import Tool  # noqa: E402
from appo.types import ToolResult  # noqa: E402


class StubPython(Tool):
    """Evaluates ``print(<integer expression>)`` without a sandbox (the demonstrations write nothing else)."""

    name, tag_argument = "python", "code"

    def call(self, arguments):
        code = arguments["code"]
        return ToolResult(text=str(evaluate(code[len("print("):-1])))


class StubSearch(Tool):
    """bm25s over the task corpus, top-2 documents, one per line."""

    name, tag_argument = "search", "query"

    def __init__(self, docs):
        self.docs = docs
        self.bm25 = bm25s.BM25()
        self.bm25.index(bm25s.tokenize([d["text"] for d in docs], show_progress=False), show_progress=False)

    def call(self, arguments):
        ids, _ = self.bm25.retrieve(bm25s.tokenize([arguments["query"]], show_progress=False), k=2, show_progress=False)
        return ToolResult(text="\n".join(self.docs[i]["text"] for i in ids[0]))


@pytest.mark.parametrize("name", ["mix", "chain"])
def test_rendered_demonstrations_score_full_marks(tiny_tokenizer, name):
    task = get_task(name)
    tools = [StubPython()] + ([StubSearch(task.corpus())] if task.corpus() else [])
    examples = task.generate(24, seed=1)
    responses = []
    for example in examples:
        ids, mask = agent.render_demonstration("tags", tiny_tokenizer, tools, example, task.demonstration(example))
        start = mask.index(1)
        responses.append(tiny_tokenizer.decode(ids[start:], skip_special_tokens=True))
    scores = REWARDS["default"](examples, responses)
    for example, response, score in zip(examples, responses, scores):
        expected = 1.1 if example.data_source == "proc_combo" else 1.0
        assert score.score == pytest.approx(expected), response


@pytest.mark.parametrize("doc_titles", [False, True])
def test_real_search_tool_ranks_each_demonstrated_fact_first(tmp_path, doc_titles):
    search = pytest.importorskip("appo.tools.search_bm25")
    from appo.data.procedural import MultihopTask
    from appo.data.procedural.multihop import TEMPLATES, walk

    task = MultihopTask(hops=(2, 3), doc_titles=doc_titles, distractors=2)
    backend = search.BM25Backend(task.write_corpus(tmp_path / "kb.jsonl"), index_dir=tmp_path / "index")
    kb = task.kb()
    hops = [h for kind, anchor in kb.anchors for t in TEMPLATES if t.anchor == kind for h in walk(kb, anchor, t.chain)]
    hits = backend.search([h["query"] for h in hops], top_k=2)
    misses = [(h["query"], found[0].text) for h, found in zip(hops, hits)
              if found[0].doc_id != h["doc_id"] or found[0].score <= found[1].score]
    assert len(hops) > 1000 and not misses, misses[:5]


def test_token_budget_with_the_real_search_tool(tmp_path):
    search = pytest.importorskip("appo.tools.search_bm25")
    from appo.models.tiny import train_tokenizer
    from appo.tools.search import SearchTool

    task = get_task("mix")
    tools = [StubPython(), SearchTool(search.BM25Backend(task.write_corpus(tmp_path / "kb.jsonl")), top_k=2)]
    plain = train_tokenizer(["x"], vocab_size=300)
    rendered = []
    for example in task.generate(200, seed=0):
        ids, mask = agent.render_demonstration("tags", plain, tools, example, task.demonstration(example))
        rendered.append((example.question, plain.decode(ids[mask.index(1):], skip_special_tokens=True)))
    tok = train_tokenizer([q for q, _ in rendered] + [r for _, r in rendered], vocab_size=512)
    question_tokens = max(len(tok(q)["input_ids"]) for q, _ in rendered)
    demo_tokens = max(len(tok(r)["input_ids"]) for _, r in rendered)
    assert question_tokens < 30 and demo_tokens <= 200, (question_tokens, demo_tokens)  # measured: 19, 166
