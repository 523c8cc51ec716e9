"""QA scoring: exact match and token F1 after SQuAD normalisation, maximised over answer aliases.

Normalisation (SQuAD v1.1's ``normalize_answer``): lower-case, drop punctuation, drop the articles
``a``/``an``/``the``, collapse whitespace. Two extensions, both no-ops on plain English:

- punctuation is ASCII ``string.punctuation`` *and* every Unicode punctuation character (curly quotes,
  ``，。、``), so ``"Alice’s"`` and ``"Alice's"`` normalise alike;
- CJK characters are split into one token each, since Chinese answers (WebWalkerQA, xbench) have no
  spaces and whitespace F1 would otherwise collapse to exact match.

F1 follows HotpotQA's official scorer: if either side normalises to ``yes``, ``no`` or ``noanswer`` and
the two differ, that alias scores 0 (no partial credit for ``no`` vs ``no way``).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Iterable

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = set(string.punctuation)
_SPECIAL = {"yes", "no", "noanswer"}


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= code <= 0x4DBF  # extension A
        or 0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
    )


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower, remove punctuation, remove articles, collapse whitespace."""
    text = "".join(ch for ch in str(text).lower() if not _is_punct(ch))
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    """Tokens of the normalised text: whitespace split, each CJK character its own token."""
    spaced = "".join(f" {ch} " if _is_cjk(ch) else ch for ch in normalize_answer(text))
    return spaced.split()


def _aliases(answers: str | Iterable[str]) -> list[str]:
    return [answers] if isinstance(answers, str) else [str(a) for a in answers]


def exact_match(prediction: str | None, answers: str | Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised alias, else 0.0 (None scores 0)."""
    if prediction is None:
        return 0.0
    pred = answer_tokens(prediction)
    return float(any(pred == answer_tokens(a) for a in _aliases(answers)))


def f1_score(prediction: str | None, answers: str | Iterable[str]) -> float:
    """Token F1 against the best alias: ``F1 = 2 P R / (P + R)`` with ``P = common / |pred|``,
    ``R = common / |gold|`` and ``common`` the multiset intersection of the two token lists."""
    if prediction is None:
        return 0.0
    pred = answer_tokens(prediction)
    best = 0.0
    for alias in _aliases(answers):
        gold = answer_tokens(alias)
        pred_norm, gold_norm = " ".join(pred), " ".join(gold)
        if (pred_norm in _SPECIAL or gold_norm in _SPECIAL) and pred_norm != gold_norm:
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred), common / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
