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


def test_rendered_demonstrations_score_full_marks(tiny_tokenizer):
    task = get_task("mix")
    tools = [StubPython(), StubSearch(task.corpus())]
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
