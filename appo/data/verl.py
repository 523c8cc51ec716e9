"""verl-format parquet rows -> :class:`~appo.types.Example`.

A verl row has ``data_source``, ``prompt`` (chat messages: system prompt + user question), ``ability``,
``reward_model`` (``{ground_truth, style}``) and ``extra_info`` (``{index, question, split, ...}``).
Mapping:

- ``id``: ``<file stem>/<row index>``; ``data_source``: the row's, unless the caller names the source
  (benchmarks do: ``gaia_test``, ``hle``), in which case the row's value is kept as ``extra_info["verl_data_source"]``;
- ``question``: ``extra_info["question"]`` when present, else the last user message;
- ``answers``: ``ground_truth`` as a 1-tuple for a string or number, a tuple for a list, and the
  ``target`` list of Search-R1 style ``{"target": [...]}`` dicts;
- ``kind``: from ``ability`` (anything containing ``math`` -> ``math``, other values -> ``qa``); when
  ``ability`` is null (the GAIA, HLE and hard-search files), the caller's hint, else ``math`` if the
  data source name mentions math/gsm/aime/amc, else ``qa``;
- ``metric``: ``math_equiv`` for math, ``f1`` for QA (the reference reward's QA score);
- ``messages``: the prompt messages as given (so the row's own system prompt is used).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from appo.data.rows import DataError, EmptyAnswerError, collect
from appo.types import Example, Metric, TaskKind

_MATH_SOURCE_RE = re.compile(r"math|gsm|aime|amc", re.IGNORECASE)


def is_verl_row(row: dict) -> bool:
    """True when ``row`` has verl's ``prompt`` message list and ``reward_model`` dict."""
    return isinstance(row.get("prompt"), list) and isinstance(row.get("reward_model"), dict)


def looks_like_verl(row: dict) -> bool:
    """True when ``row`` has a ``reward_model`` field, or verl's chat-message ``prompt`` together with a
    verl column (``data_source``, ``ability``, ``extra_info``): a verl row, possibly one missing or
    mangling ``reward_model`` (the verl reader then names it). Callers that also accept TRL rows check
    that the row has no answer column first."""
    prompt = row.get("prompt")
    chat = isinstance(prompt, list) and bool(prompt) and all(isinstance(m, dict) and "role" in m for m in prompt)
    return "reward_model" in row or (chat and any(k in row for k in ("data_source", "ability", "extra_info")))


def _answers(path, row_index: int, ground_truth) -> tuple[str, ...]:
    if isinstance(ground_truth, dict) and "target" in ground_truth:
        ground_truth = ground_truth["target"]
    if isinstance(ground_truth, (str, int, float)) and not isinstance(ground_truth, bool):
        answers = (str(ground_truth),)
    elif isinstance(ground_truth, list) and all(isinstance(a, (str, int, float)) for a in ground_truth):
        answers = tuple(str(a) for a in ground_truth)
    else:
        raise DataError(
            path, row_index, f"reward_model.ground_truth has unsupported type {type(ground_truth).__name__}",
            "use a string, a number, a list of strings or {'target': [...]}",
        )
    if not answers or not all(a.strip() for a in answers):
        raise EmptyAnswerError(path, row_index, "reward_model.ground_truth is blank", "give the reference answer")
    return answers


def infer_kind(ability, data_source: str, hint: TaskKind | None = None) -> TaskKind:
    """``math`` or ``qa`` from a verl ``ability`` value, else ``hint``, else the data source name."""
    if isinstance(ability, str) and ability:
        return "math" if "math" in ability.lower() else "qa"
    if hint is not None:
        return hint
    return "math" if _MATH_SOURCE_RE.search(data_source or "") else "qa"


def default_metric(kind: TaskKind) -> Metric:
    """The headline metric of a kind: math equivalence for math, token F1 for QA."""
    return "math_equiv" if kind == "math" else "f1"


def verl_row_to_example(
    row: dict,
    path: str | os.PathLike,
    row_index: int,
    source: str | None = None,
    kind: TaskKind | None = None,
    metric: Metric | None = None,
) -> Example:
    """Normalise one verl row (see the module docstring); ``source`` overrides ``data_source`` and the id
    prefix, ``kind`` is used when ``ability`` is null, ``metric`` overrides the kind's default."""
    fixes = {"prompt": "give the chat messages [{role, content}, ...] under 'prompt'",
             "reward_model": "give the reference answer as reward_model: {ground_truth: ..., style: rule}"}
    for name in ("prompt", "reward_model"):
        if name not in row or row[name] is None:
            raise DataError(path, row_index, f"missing verl field {name!r} (row has {sorted(row)})", fixes[name])
    if not isinstance(row["reward_model"], dict):
        raise DataError(path, row_index, f"reward_model is a {type(row['reward_model']).__name__}, not a mapping",
                        fixes["reward_model"])
    messages = row["prompt"]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise DataError(path, row_index, "prompt is not a list of {role, content} messages", "fix the prompt column")
    reward_model = row["reward_model"]
    if "ground_truth" not in reward_model or reward_model["ground_truth"] is None:
        raise DataError(path, row_index, "missing field 'reward_model.ground_truth'", "give the reference answer")
    answers = _answers(path, row_index, reward_model["ground_truth"])
    extra = dict(row.get("extra_info") or {})
    question = extra.get("question")
    if not isinstance(question, str) or not question.strip():
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise DataError(path, row_index, "no extra_info.question and no user message in prompt", "add the question")
        question = users[-1]
    row_source = row.get("data_source") or Path(path).stem
    if source is not None and source != row_source:
        extra["verl_data_source"] = row_source
    task_kind = infer_kind(row.get("ability"), row_source, kind)
    return Example(
        id=f"{source or Path(path).stem}/{row_index}",
        question=question.strip(),
        answers=answers,
        kind=task_kind,
        metric=metric or default_metric(task_kind),
        data_source=source or row_source,
        messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
        extra_info=extra,
    )


def load_verl_parquet(
    path: str | os.PathLike,
    limit: int | None = None,
    source: str | None = None,
    kind: TaskKind | None = None,
    metric: Metric | None = None,
) -> list[Example]:
    """Read a verl-format parquet (or JSONL) file into Examples, the first ``limit`` when given.

    Rows with a blank ground truth are skipped with a warning (``train_10k.parquet`` has one: row 5274,
    a ruler-and-compass construction); any other unreadable row raises :class:`DataError`.
    """
    return collect(path, lambda row, i: verl_row_to_example(row, path, i, source, kind, metric), limit)
