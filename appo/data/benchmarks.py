"""Evaluation benchmarks by name: a registry of file + normaliser, and :func:`load_benchmark`.

Each bundled file has its own field names (``problem`` / ``question`` / ``Question``; answers as a
string, an int, a list of aliases, or GSM8K's ``"... #### N"``); a normaliser turns one row into an
:class:`~appo.types.Example`. Fields not used for the question or answer go to ``extra_info``.

Metrics chosen per benchmark: math sets use ``math_equiv``; multi-hop QA (HotpotQA, 2Wiki, MuSiQue,
Bamboogle) and the Chinese deep-search sets (WebWalkerQA, xbench) use token ``f1`` as the reference
reward does; GAIA and HLE use ``em`` (GAIA's official scorer is an exact match; HLE answers are short
letters, numbers or expressions). The reference work grades the deep-search sets with an LLM judge,
which appo does not ship; treat their F1/EM as a lower bound.

Not bundled: the full MATH test set (``math``) and HLE's full test file (``hle_full``); drop the file
in ``<data dir>/benchmarks/`` (see :mod:`appo.paths`) and they load like the others.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Callable

from appo.data.rows import DataError, EmptyAnswerError, collect, require_field
from appo.data.verl import is_verl_row, verl_row_to_example
from appo.paths import describe_roots, find_data_file
from appo.plugins import register_unique
from appo.rewards.extract import last_boxed
from appo.types import Example, Metric, TaskKind

QUESTION_FIELDS = ("question", "problem", "Question", "query", "prompt")
ANSWER_FIELDS = ("answer", "answers", "Answer", "final_answer", "ground_truth", "golden_answers")


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to find and read one benchmark."""

    name: str
    """Registry name, also the ``data_source`` and id prefix of its examples."""
    files: tuple[str, ...]
    """Candidate paths relative to a data directory; the first that exists is read."""
    kind: TaskKind
    """``math`` or ``qa``."""
    metric: Metric
    """Headline metric of every example."""
    normaliser: Callable[[dict, str, int, BenchmarkSpec], Example | None]
    """Row -> Example (None skips the row, e.g. an HLE question that needs an image)."""
    bundled: bool = True
    """False for files the user must supply (the error then says where to put them)."""
    description: str = ""
    """One line: what the benchmark is and where to get it when not bundled."""


BENCHMARKS: dict[str, BenchmarkSpec] = {}
"""Benchmark name -> spec."""


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add ``spec`` to :data:`BENCHMARKS`; refuses a name already taken."""
    return register_unique(BENCHMARKS, spec.name, spec, "benchmark")


def answers_from_value(path: str, row_index: int, field: str, value) -> tuple[str, ...]:
    """A string, number or list of them -> a tuple of non-empty answer strings (DataError otherwise)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        answers = (str(value).strip(),)
    elif isinstance(value, list) and value and all(isinstance(a, (str, int, float)) for a in value):
        answers = tuple(str(a).strip() for a in value)
    else:
        raise DataError(path, row_index, f"field {field!r} is {value!r:.80}",
                        "use a string, a number or a non-empty list of them")
    if not all(answers):
        raise EmptyAnswerError(path, row_index, f"field {field!r} holds a blank answer", "give the reference answer")
    return answers


def row_to_example(
    row: dict,
    path: str,
    row_index: int,
    source: str,
    kind: TaskKind,
    metric: Metric,
    answers: tuple[str, ...] | None = None,
    used: tuple[str, ...] = (),
) -> Example:
    """Generic row -> Example: question from :data:`QUESTION_FIELDS`, answers from
    :data:`ANSWER_FIELDS` unless given; every other field (minus ``used``) goes to ``extra_info``."""
    q_field, question = require_field(path, row_index, row, QUESTION_FIELDS, "question")
    if not isinstance(question, str) or not question.strip():
        raise DataError(path, row_index, f"field {q_field!r} is not a non-empty string", "give the question text")
    taken = {q_field, *used}
    if answers is None:
        a_field, value = require_field(path, row_index, row, ANSWER_FIELDS, "answer")
        answers = answers_from_value(path, row_index, a_field, value)
        taken.add(a_field)
    extra = {k: v for k, v in row.items() if k not in taken and k not in QUESTION_FIELDS}
    return Example(
        id=f"{source}/{row_index}", question=question.strip(), answers=answers, kind=kind,
        metric=metric, data_source=source, extra_info=extra,
    )


def normalise_plain(row: dict, path: str, row_index: int, spec: BenchmarkSpec) -> Example:
    """Rows with a question field and an answer field (string, number or alias list); verl rows too."""
    if is_verl_row(row):
        return verl_row_to_example(row, path, row_index, source=spec.name, kind=spec.kind, metric=spec.metric)
    return row_to_example(row, path, row_index, spec.name, spec.kind, spec.metric)


def normalise_gsm8k(row: dict, path: str, row_index: int, spec: BenchmarkSpec) -> Example:
    """GSM8K: ``answer`` is the worked solution ending in ``#### N``; N (commas dropped) is the answer."""
    _, text = require_field(path, row_index, row, ("answer",), "answer")
    if not isinstance(text, str) or "####" not in text:
        raise DataError(path, row_index, "GSM8K field 'answer' has no '#### <number>' line",
                        "give the final answer after ####")
    final = text.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise EmptyAnswerError(path, row_index, "GSM8K answer is blank after '####'",
                               "give the final answer after ####")
    example = row_to_example(row, path, row_index, spec.name, spec.kind, spec.metric,
                             answers=(final,), used=("answer",))
    return replace(example, extra_info={**example.extra_info, "solution": text})


def normalise_math(row: dict, path: str, row_index: int, spec: BenchmarkSpec) -> Example:
    """MATH-style rows: ``problem``/``question`` and ``answer``; without ``answer``, the last ``\\boxed{}``
    of ``solution`` (the original Hendrycks MATH release has no separate answer field)."""
    if is_verl_row(row):
        return verl_row_to_example(row, path, row_index, source=spec.name, kind=spec.kind, metric=spec.metric)
    if row.get("answer") is None and isinstance(row.get("solution"), str):
        boxed = last_boxed(row["solution"])
        if boxed is None:
            raise DataError(path, row_index, "no 'answer' field and no \\boxed{} in 'solution'",
                            "add an 'answer' field")
        return row_to_example(row, path, row_index, spec.name, spec.kind, spec.metric, answers=(boxed.strip(),))
    return row_to_example(row, path, row_index, spec.name, spec.kind, spec.metric)


def normalise_hle(row: dict, path: str, row_index: int, spec: BenchmarkSpec) -> Example | None:
    """HLE (``cais/hle`` layout or verl rows); questions that come with an image are skipped."""
    if is_verl_row(row):
        return verl_row_to_example(row, path, row_index, source=spec.name, kind=spec.kind, metric=spec.metric)
    if row.get("image"):
        return None
    return row_to_example(row, path, row_index, spec.name, spec.kind, spec.metric, used=("image",))


def _register_bundled() -> None:
    plain = [
        ("math500", "math500.jsonl", "math", "math_equiv", normalise_math, "MATH-500 subset of MATH"),
        ("aime24", "aime24.jsonl", "math", "math_equiv", normalise_math, "AIME 2024"),
        ("aime25", "aime25.jsonl", "math", "math_equiv", normalise_math, "AIME 2025"),
        ("gsm8k", "gsm8k.jsonl", "math", "math_equiv", normalise_gsm8k, "GSM8K test"),
        ("hotpotqa", "hotpotqa.jsonl", "qa", "f1", normalise_plain, "HotpotQA dev sample"),
        ("2wiki", "2wiki.jsonl", "qa", "f1", normalise_plain, "2WikiMultihopQA sample"),
        ("musique", "musique.jsonl", "qa", "f1", normalise_plain, "MuSiQue sample"),
        ("bamboogle", "bamboogle.jsonl", "qa", "f1", normalise_plain, "Bamboogle"),
        ("webwalker", "webwalker.jsonl", "qa", "f1", normalise_plain, "WebWalkerQA sample (Chinese)"),
        ("xbench", "xbench.jsonl", "qa", "f1", normalise_plain, "xbench-DeepSearch (Chinese)"),
        ("gaia", "gaia.jsonl", "qa", "em", normalise_plain, "GAIA text-only validation"),
        ("gaia_test", "gaia_test.parquet", "qa", "em", normalise_plain, "GAIA as verl parquet"),
        ("hle", "hle_test.parquet", "qa", "em", normalise_hle, "Humanity's Last Exam, 100-question text subset"),
    ]
    for name, file, kind, metric, fn, desc in plain:
        register_benchmark(BenchmarkSpec(name, (f"benchmarks/{file}",), kind, metric, fn, True, desc))
    register_benchmark(BenchmarkSpec(
        "math", ("benchmarks/math.jsonl", "benchmarks/math.parquet"), "math", "math_equiv", normalise_math, False,
        "full MATH test set (5,000 problems; Hendrycks et al.): rows with problem + answer, or problem + solution",
    ))
    register_benchmark(BenchmarkSpec(
        "hle_full", ("benchmarks/hle_full.jsonl", "benchmarks/hle_full.parquet"), "qa", "em", normalise_hle, False,
        "Humanity's Last Exam full test file (cais/hle on the Hugging Face hub; rows with images are skipped)",
    ))


_register_bundled()


def read_examples(
    path: str | os.PathLike, spec: BenchmarkSpec, limit: int | None = None
) -> list[Example]:
    """Read ``path`` with ``spec``'s normaliser; ``limit`` caps the number of examples returned.
    Rows with a blank answer are skipped with a warning (see :func:`~appo.data.rows.collect`)."""
    return collect(path, lambda row, i: spec.normaliser(row, str(path), i, spec), limit)


def load_benchmark(name: str, limit: int | None = None, data_dir: str | os.PathLike | None = None) -> list[Example]:
    """Load benchmark ``name`` (a key of :data:`BENCHMARKS`) as Examples, the first ``limit`` when given.

    The file is looked up in ``data_dir``, then ``$APPO_DATA_DIR``, then the bundled ``data/``.
    """
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)} (or pass a file path to load_dataset)")
    spec = BENCHMARKS[name]
    for relative in spec.files:
        path = find_data_file(relative, data_dir)
        if path is not None:
            return read_examples(path, spec, limit)
    if not spec.bundled:
        raise FileNotFoundError(
            f"benchmark {name!r} is not bundled with appo: {spec.description}. Save it as "
            f"{' or '.join(spec.files)} under a data directory ({describe_roots(data_dir)}), "
            "or pass the file's path to load_dataset"
        )
    raise FileNotFoundError(f"benchmark {name!r}: {spec.files[0]} not found; {describe_roots(data_dir)}")


_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def source_name(path: str | os.PathLike) -> str:
    """A data-source name for a user file: its stem, with odd characters replaced."""
    return _SAFE_NAME_RE.sub("_", os.path.splitext(os.path.basename(str(path)))[0]) or "data"
