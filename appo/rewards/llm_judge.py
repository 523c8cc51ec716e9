"""``llm_judge``: an LLM decides whether the predicted answer is equivalent to the gold answer(s).

Deep-search benchmarks are scored by F1/EM, a lower bound (a correct answer worded differently scores
low); the reference evaluation offers an LLM judge as well. This reward sends each row's question, gold
answers and extracted final answer (:func:`appo.rewards.extract.extract_answer`: the last ``\\boxed{}``
of the answer block, or of the text) to an OpenAI-compatible chat endpoint with :data:`JUDGE_PROMPT`
(modelled on the reference deep-search evaluation's equivalence prompt), at temperature 0, and reads
the verdict with :func:`parse_verdict`.

Configuration: ``reward.name=llm_judge`` with ``reward.kwargs.base_url`` (``http://host:port/v1``) and
``reward.kwargs.model``; optional ``api_key``, ``timeout_s``, ``max_retries``, ``workers`` (requests at
once), ``max_tokens``. Unset keys fall back to ``$APPO_JUDGE_BASE_URL``, ``$APPO_JUDGE_MODEL``,
``$APPO_JUDGE_API_KEY`` (so ``appo eval --reward llm_judge`` works without a config).

Per row: ``score`` = ``acc`` = 1 when the judge says Correct, else 0; ``answered`` (a final answer was
found; rows without one are not sent and score 0); ``judge_parsed`` (the reply held a verdict; an
unreadable reply or a failed request scores 0 with ``judge_parsed`` 0, it never raises). Left out:
the format gate of ``default`` (combine the two in a custom reward if needed) and caching of verdicts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from appo.rewards.base import RewardOutput
from appo.rewards.extract import extract_answer
from appo.types import Example

JUDGE_PROMPT = """You are an evaluation assistant. Please determine if the predicted answer is equivalent to the \
labeled answer.

Question: {question}

Labeled Answer: {gold}

Predicted Answer: {prediction}

Are these answers equivalent? Please respond with "Correct" if they are equivalent, or "Incorrect" if they are not \
equivalent. Do not include any other text."""
"""The judge's prompt; ``{gold}`` lists every accepted answer, joined with `` OR ``."""

_VERDICT_RE = re.compile(r"\b(not\s+correct|incorrect|correct)\b", re.IGNORECASE)


def parse_verdict(reply: str | None) -> bool | None:
    """True for Correct, False for Incorrect (or "not correct"), None when the reply holds neither.

    The first verdict word counts (judges that explain themselves usually lead with it); markdown,
    quotes and case do not matter.
    """
    if not reply:
        return None
    m = _VERDICT_RE.search(reply)
    if m is None:
        return None
    return m.group(1).lower() == "correct"


def judge_messages(question: str, gold: Sequence[str], prediction: str) -> list[dict]:
    """The chat messages sent for one row."""
    text = JUDGE_PROMPT.format(question=question.strip(), gold=" OR ".join(g.strip() for g in gold),
                               prediction=prediction.strip())
    return [{"role": "user", "content": text}]


def llm_judge(examples: Sequence[Example], responses: Sequence[str], *, base_url: str | None = None,
              model: str | None = None, api_key: str | None = None, timeout_s: float = 60.0, max_retries: int = 2,
              workers: int = 8, max_tokens: int = 16) -> list[RewardOutput]:
    """Score each response by an LLM judge's Correct/Incorrect verdict (see the module docstring)."""
    if len(examples) != len(responses):
        raise ValueError(f"llm_judge got {len(examples)} examples and {len(responses)} responses; pass one each")
    base_url = base_url or os.environ.get("APPO_JUDGE_BASE_URL")
    model = model or os.environ.get("APPO_JUDGE_MODEL")
    if not base_url or not model:
        raise ValueError("reward llm_judge needs an endpoint and a model: set "
                         "reward.kwargs.base_url=http://host:port/v1 and reward.kwargs.model=NAME "
                         "(or $APPO_JUDGE_BASE_URL and $APPO_JUDGE_MODEL)")
    client = openai_client(base_url, api_key or os.environ.get("APPO_JUDGE_API_KEY"), timeout_s, max_retries)

    def one(pair: tuple[Example, str]) -> RewardOutput:
        ex, response = pair
        pred = extract_answer(response)
        if pred is None or not ex.answers:
            return RewardOutput(0.0, {"acc": 0.0, "answered": float(pred is not None), "judge_parsed": 0.0})
        try:
            reply = client.chat.completions.create(model=model, messages=judge_messages(ex.question, ex.answers, pred),
                                                   temperature=0.0, max_tokens=max_tokens)
            verdict = parse_verdict(reply.choices[0].message.content)
        except Exception:  # noqa: BLE001 - a judge outage must not stop training; the row scores 0
            verdict = None
        acc = float(bool(verdict))
        return RewardOutput(acc, {"acc": acc, "answered": 1.0, "judge_parsed": float(verdict is not None)})

    pairs = list(zip(examples, responses))
    if len(pairs) <= 1:
        return [one(p) for p in pairs]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pairs)))) as pool:
        return list(pool.map(one, pairs))


def openai_client(base_url: str, api_key: str | None = None, timeout_s: float = 120.0, max_retries: int = 2):
    """An ``openai.OpenAI`` client for ``base_url``; the key defaults to ``$OPENAI_API_KEY``, else ``EMPTY``.
    (Here, not in :mod:`appo.serve.client` which uses it too: the rewards sit below the server.)"""
    try:
        from openai import OpenAI
    except ModuleNotFoundError as exc:
        if exc.name != "openai":
            raise
        raise ImportError("talking to an OpenAI-compatible endpoint needs openai, which is not installed: "
                          "pip install 'appo[serve]'") from None

    key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    return OpenAI(base_url=base_url.rstrip("/"), api_key=key, timeout=timeout_s, max_retries=max_retries)
