"""Pronounceable fictional words from syllables (``Kalo``, ``Mirvan``, ``Velmora``), unique per generator.

Words are built from onset + vowel (+ optional coda) syllables, capitalised, at least four letters. A
word never repeats within one :class:`WordMaker`, and never equals a reserved word (the relation words
the knowledge base uses, and English stopwords that a BM25 tokenizer would drop), so every entity name
is a distinct, searchable token.
"""

from __future__ import annotations

import random

ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "st", "th")
VOWELS = ("a", "e", "i", "o", "u")
CODAS = ("", "", "", "n", "r", "l", "s", "k")

RESERVED = frozenset(
    """director directed mother birthplace born founder founded founding year producer editor composer
    chairman treasurer architect film company city person what where when who whom which this that these
    those here there have having does doing done were being been into onto from with than then them they
    their theirs ours your yours mine more most other some such only same very just also both each few
    over under again once about above after before below between down during further nor off out own will""".split()
)


def _stopwords() -> frozenset[str]:
    try:
        from bm25s.stopwords import STOPWORDS_EN, STOPWORDS_EN_PLUS

        return frozenset(w.lower() for w in (*STOPWORDS_EN, *STOPWORDS_EN_PLUS))
    except ImportError:  # bm25s is a dependency; this only guards a stripped-down install
        return frozenset()


class WordMaker:
    """Draws fresh capitalised syllable words from ``rng``; remembers every word it made."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()
        self.reserved = RESERVED | _stopwords()

    def word(self, syllables: tuple[int, int] = (2, 2)) -> str:
        """A new word of ``syllables`` = (min, max) syllables, unique within this maker."""
        for _ in range(10_000):
            n = self.rng.randint(*syllables)
            text = "".join(
                self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + (self.rng.choice(CODAS) if i == n - 1 else "")
                for i in range(n)
            )
            if len(text) >= 4 and text not in self.used and text not in self.reserved:
                self.used.add(text)
                return text.capitalize()
        raise RuntimeError("WordMaker ran out of fresh words; use more syllables")
