"""Rows in the forms TRL and verl users have -> :class:`~appo.types.Example`.

One normaliser, :func:`normalise_row`, reads every row shape appo accepts:

- **verl** (``prompt`` messages + ``reward_model.ground_truth``): :func:`~appo.data.verl.verl_row_to_example`.
- **TRL conversational** (``{"prompt": [{"role", "content"}, ...], <answer>, ...}``): the messages are the
  prompt (a system message there is kept, else the protocol's is added); the question is the last user
  message.
- **TRL standard** (``{"prompt": "text", <answer>, ...}``) and **plain** rows: the question is the first
  present of ``question``, ``problem``, ``Question``, ``query``, ``prompt``.

The reference answer is the first present of ``answer``, ``answers``, ``Answer``, ``final_answer``,
``ground_truth``, ``golden_answers``, ``solution``, ``target`` (a string, a number, or a list of aliases);
a ``solution`` holding a ``\\boxed{}`` contributes its last box (MATH's layout). Every other column goes to
``extra_info``, which is how it reaches a reward function: TRL-style functions get each ``extra_info`` key
as a keyword list (as TRL passes a dataset's extra columns), verl-style ones get ``extra_info``.

Task kind (which scoring a row gets: ``math`` = math-verify equivalence, ``qa`` = token F1 / EM over
aliases) is, in order: the caller's ``kind`` (config ``data.task``); a ``ability`` / ``task`` column
containing ``math`` (any other value: ``qa``); ``math`` when the row has ``problem`` or ``solution`` or a
GSM8K ``#### N`` answer, or when every answer is a number or LaTeX (``\\frac``, ``^``, ``\\sqrt``...); else
``qa``. The metric follows the kind (``math_equiv`` / ``f1``) unless given (config ``data.metric``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from appo.data.rows import DataError, EmptyAnswerError, first_field
from appo.data.verl import default_metric, is_verl_row, verl_row_to_example
from appo.rewards.extract import last_boxed
from appo.types import Example, Metric, TaskKind

QUESTION_FIELDS = ("question", "problem", "Question", "query", "prompt")
"""Where a text question is read from, first present wins (a ``prompt`` of chat messages wins over all)."""
ANSWER_FIELDS = ("answer", "answers", "Answer", "final_answer", "ground_truth", "golden_answers", "solution",
                 "target")
"""Where the reference answer is read from, first present wins."""
KIND_FIELDS = ("ability", "task")
"""Columns that name a row's task (verl's ``ability``)."""

_NUMBER_RE = re.compile(r"^\s*[-+]?\$?\s*\d[\d,]*(\.\d+)?\s*%?\s*$")
_LATEX_RE = re.compile(r"\\(frac|dfrac|sqrt|pi|cdot|times|infty|le|ge|pm|boxed)|\^|_\{")


def is_messages(value: Any) -> bool:
    """True for a non-empty list of ``{"role", "content"}`` dicts (a TRL conversational prompt)."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in value)


def _answers(path: str, row_index: int, row: dict) -> tuple[str, tuple[str, ...]]:
    found = first_field(row, ANSWER_FIELDS)
    if found is None:
        expected = " or ".join(repr(n) for n in ANSWER_FIELDS)
        raise DataError(path, row_index, f"missing answer field {expected} (row has {sorted(row)})",
                        "add the reference answer as 'answer'")
    field, value = found
    if isinstance(value, dict) and "target" in value:
        value = value["target"]
    if field == "solution" and isinstance(value, str) and last_boxed(value) is not None:
        value = last_boxed(value)
    if isinstance(value, str) and "####" in value:
        value = value.rsplit("####", 1)[1].replace(",", "")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        answers = (str(value).strip(),)
    elif isinstance(value, (list, tuple)) and value and all(
            isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in value):
        answers = tuple(str(a).strip() for a in value)
    else:
        raise DataError(path, row_index, f"field {field!r} is {value!r:.80}",
                        "use a string, a number or a non-empty list of them")
    if not all(answers):
        raise EmptyAnswerError(path, row_index, f"answer field {field!r} is blank", "give the reference answer")
    return field, answers


def guess_kind(row: dict, answers: tuple[str, ...] = ()) -> TaskKind:
    """``math`` or ``qa`` for a row without an explicit kind (see the module docstring)."""
    for name in KIND_FIELDS:
        if isinstance(row.get(name), str) and row[name]:
            return "math" if "math" in row[name].lower() else "qa"
    answer = row.get("answer")
    if "problem" in row or "solution" in row or (isinstance(answer, str) and "####" in answer):
        return "math"
    if answers and all(_NUMBER_RE.match(a) or _LATEX_RE.search(a) for a in answers):
        return "math"
    return "qa"


def normalise_row(
    row: dict,
    path: str,
    row_index: int,
    source: str,
    kind: TaskKind | None = None,
    metric: Metric | None = None,
) -> Example:
    """One row (verl, TRL conversational, TRL standard or plain) -> an Example with id ``<source>/<index>``.

    ``path`` only names the row's origin in errors (a file, or ``<dataset>`` for an in-memory one).
    Raises :class:`~appo.data.rows.DataError` naming the row and the missing field when it cannot be read,
    :class:`~appo.data.rows.EmptyAnswerError` for a blank answer (loaders skip those).
    """
    if is_verl_row(row):
        example = verl_row_to_example(row, path, row_index, kind=kind, metric=metric)  # keeps its data_source
        return replace(example, id=f"{source}/{row_index}")
    found = ("prompt", row["prompt"]) if is_messages(row.get("prompt")) else first_field(row, QUESTION_FIELDS)
    if found is None:
        expected = " or ".join(repr(n) for n in QUESTION_FIELDS)
        raise DataError(path, row_index, f"missing question field {expected} (row has {sorted(row)})",
                        "give the question as 'prompt' (text or chat messages) or 'question'")
    q_field, value = found
    messages = None
    if is_messages(value):
        messages = tuple({"role": str(m["role"]), "content": m["content"]} for m in value)
        users = [m["content"] for m in messages if m["role"] == "user" and isinstance(m["content"], str)]
        if not users:
            raise DataError(path, row_index, f"{q_field!r} has no user message with text content",
                            "add a {'role': 'user', 'content': '...'} message")
        question = users[-1]
    elif isinstance(value, str) and value.strip():
        question = value
    else:
        raise DataError(path, row_index, f"field {q_field!r} is neither text nor a list of chat messages",
                        "give the question as a string or as [{'role': 'user', 'content': ...}]")
    a_field, answers = _answers(path, row_index, row)
    task_kind = kind or guess_kind(row, answers)
    extra = {k: v for k, v in row.items() if k not in (q_field, a_field)}
    if isinstance(row[a_field], str) and "####" in row[a_field]:
        extra["solution"] = row[a_field]  # GSM8K's worked solution, kept beside the final number
    if isinstance(extra.get("extra_info"), dict):  # verl-style nested extras: flatten, the row's own keys win
        extra = {**extra.pop("extra_info"), **extra}
    row_source = row.get("data_source") if isinstance(row.get("data_source"), str) else None
    return Example(
        id=f"{source}/{row_index}", question=question.strip(), answers=answers, kind=task_kind,
        metric=metric or default_metric(task_kind), data_source=row_source or source, messages=messages,
        extra_info=extra,
    )
