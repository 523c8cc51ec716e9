"""The llm_judge reward against a local OpenAI-compatible stub that returns verdicts we choose."""

from __future__ import annotations

import functools
import socket
import threading
import time

import pytest

from appo.rewards import get_reward
from appo.rewards.llm_judge import JUDGE_PROMPT, judge_messages, parse_verdict
from appo.types import Example


def _example(q: str, answers: tuple[str, ...]) -> Example:
    return Example(id=q, question=q, answers=answers, kind="qa", metric="f1", data_source="t")


@pytest.fixture(scope="module")
def judge_url():
    """A FastAPI stub of /v1/chat/completions: the verdict depends on the predicted answer in the prompt."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    app.state.prompts = []
    verdicts = {"Paris": "Correct", "the city of Paris": "**Correct**\n", "Lyon": "Incorrect.",
                "Nice": "It is not correct.", "???": "I cannot tell."}

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        prompt = body["messages"][-1]["content"]
        app.state.prompts.append((body["model"], body.get("temperature"), prompt))
        pred = prompt.split("Predicted Answer: ")[1].split("\n")[0]
        if pred == "boom":
            return {"error": "x"}  # not a chat completion: the client fails to read it
        return {"id": "j", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": verdicts.get(pred, "Incorrect")}}]}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", app
    server.should_exit = True
    th.join(10)


def test_parse_verdict():
    assert parse_verdict("Correct") is True
    assert parse_verdict("**Correct**.") is True
    assert parse_verdict("incorrect") is False
    assert parse_verdict("Incorrect. The answer is Lyon, which is correct for another question.") is False
    assert parse_verdict("That is not correct") is False
    assert parse_verdict("maybe") is None and parse_verdict("") is None and parse_verdict(None) is None


def test_prompt_holds_question_gold_and_prediction():
    (msg,) = judge_messages("Capital of France?", ("Paris", "Paris, France"), " Paris ")
    assert msg["role"] == "user"
    assert "Question: Capital of France?" in msg["content"]
    assert "Labeled Answer: Paris OR Paris, France" in msg["content"]
    assert "Predicted Answer: Paris\n" in msg["content"]
    assert JUDGE_PROMPT.count('"Correct"') == 1


def test_judge_scores_through_the_registry_with_config_kwargs(judge_url):
    url, app = judge_url
    app.state.prompts.clear()
    # how the trainer builds it: reward.name=llm_judge, reward.kwargs={base_url, model}
    reward = functools.partial(get_reward("llm_judge"), base_url=url, model="judge-1")
    ex = _example("Capital of France?", ("Paris",))
    responses = ["<answer>\\boxed{Paris}</answer>", "<answer>\\boxed{the city of Paris}</answer>",
                 "<answer>\\boxed{Lyon}</answer>", "<answer>\\boxed{Nice}</answer>", "<answer>\\boxed{???}</answer>",
                 "no answer at all", "<answer>\\boxed{boom}</answer>"]
    out = reward([ex] * len(responses), responses)
    assert [o.score for o in out] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert [o.metrics["judge_parsed"] for o in out] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert out[5].metrics["answered"] == 0.0
    assert len(app.state.prompts) == 6  # the row without an answer is not sent
    assert {(m, t) for m, t, _ in app.state.prompts} == {("judge-1", 0.0)}


def test_judge_settings_from_the_environment(judge_url, monkeypatch):
    url, _ = judge_url
    monkeypatch.setenv("APPO_JUDGE_BASE_URL", url)
    monkeypatch.setenv("APPO_JUDGE_MODEL", "judge-env")
    (out,) = get_reward("llm_judge")([_example("Q?", ("Paris",))], ["\\boxed{Paris}"])
    assert out.score == 1.0


def test_judge_without_endpoint_or_reachable_server(monkeypatch):
    monkeypatch.delenv("APPO_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("APPO_JUDGE_MODEL", raising=False)
    with pytest.raises(ValueError, match="reward.kwargs.base_url"):
        get_reward("llm_judge")([_example("Q?", ("a",))], ["\\boxed{a}"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    (out,) = get_reward("llm_judge")([_example("Q?", ("a",))], ["\\boxed{a}"], base_url=f"http://127.0.0.1:{dead}/v1",
                                     model="m", max_retries=0, timeout_s=5)
    assert out.score == 0.0 and out.metrics["judge_parsed"] == 0.0
