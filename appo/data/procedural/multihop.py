"""``multihop``: questions over a generated knowledge base of fictional films, companies and people.

The knowledge base (KB) is a list of facts ``(relation, subject, value)``, each stored as its own short
search document ``{"id", "title", "text": "The <relation> of <subject> is <value>."}``:

- every film has a ``director``, every company a ``founder`` and a ``founding year``;
- every director and founder has a ``mother`` and a ``birthplace``; every mother a ``birthplace``;
- ``distractors`` (0-3) decoy facts per film / company (``producer``, ``editor``, ``composer`` /
  ``chairman``, ``treasurer``, ``architect``) name other people, so that search results carry
  near-misses the model must read past;
- people may share surnames (``shared_surname_p``), another near-miss; a mother never shares her
  child's surname (her "mother of" document would then outrank the child's birthplace document).

A question walks a chain of relations from an anchor film or company, e.g. "Where was the director of
<Film> born?" = director -> birthplace (2 hops) or "Where was the mother of the director of <Film> born?"
(3 hops). The demonstration searches ``"<relation> of <subject>"`` once per hop: the query's words are
the fact document's own words, so BM25 ranks that document first whatever its tokenizer's stemming
(tests check rank 1 for every question). Directors and founders are never anyone's mother, so
"mother of X" has a single matching document.

Token budget, measured through the agent's tag protocol with the real ``SearchTool`` (results
``Doc i: <text>``, one line each) and a 512-token BPE trained on the rendered text: a 2-hop demonstration
with its results is at most ~145 tokens at ``top_k=1``, ~200 at 2, ~255 at 3; a 3-hop one ~190 at 1,
~280 at 2; questions are at most ~20 tokens (the protocol's system prompt comes on top). Hence the
default ``hops=(2,)``, and a search ``top_k`` of 1-2 for a ~200-token context.

The KB is fixed by ``kb_seed`` and the size knobs; questions are drawn from it with the stream seed.
Splits hold out whole anchors (all questions about one film are in one split); the corpus always holds
every fact, as a search engine would.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Callable

from appo.data.procedural.base import Task, answer, register_task, think
from appo.data.procedural.names import WordMaker
from appo.types import Example

FILM_NOUNS = ("Nights", "Tide", "Garden", "Road", "Mirror", "Harbor", "Winter", "Signal", "Crown", "River")
COMPANY_SUFFIXES = ("Works", "Labs", "Foods", "Motors", "Press", "Systems", "Mills", "Records")
FILM_DECOYS = ("producer", "editor", "composer")
COMPANY_DECOYS = ("chairman", "treasurer", "architect")


@dataclass(frozen=True)
class Fact:
    """One KB fact, stored as one search document."""

    doc_id: str
    """Document id in the corpus."""
    relation: str
    """Relation word(s): ``director``, ``mother``, ``birthplace``, ``founder``, ``founding year``, decoys."""
    subject: str
    """Entity the fact is about (the document title, when titles are on)."""
    value: str
    """The related entity or value."""

    @property
    def text(self) -> str:
        """The document text."""
        return f"The {self.relation} of {self.subject} is {self.value}."

    def doc(self, title: bool = False) -> dict:
        """The corpus row ``{"id", "title", "text"}``; the title is the subject, or empty."""
        return {"id": self.doc_id, "title": self.subject if title else "", "text": self.text}


@dataclass(frozen=True)
class KnowledgeBase:
    """All facts of one generated world."""

    facts: tuple[Fact, ...]
    """Every fact, in generation order."""
    films: tuple[str, ...]
    """Film titles (anchors of director questions)."""
    companies: tuple[str, ...]
    """Company names (anchors of founder questions)."""

    @functools.cached_property
    def _index(self) -> dict[tuple[str, str], Fact]:
        return {(f.relation, f.subject): f for f in self.facts}

    def fact(self, relation: str, subject: str) -> Fact:
        """The fact ``relation`` of ``subject`` (KeyError naming both when absent)."""
        try:
            return self._index[(relation, subject)]
        except KeyError:
            raise KeyError(f"the KB has no {relation!r} of {subject!r}") from None

    @functools.cached_property
    def anchors(self) -> tuple[tuple[str, str], ...]:
        """``(kind, name)`` of every film and company, the starting points of questions."""
        return tuple([("film", f) for f in self.films] + [("company", c) for c in self.companies])

    def docs(self, titles: bool = False) -> list[dict]:
        """The corpus: one document per fact (titles: see :class:`MultihopTask`'s ``doc_titles``)."""
        return [f.doc(titles) for f in self.facts]


@functools.lru_cache(maxsize=16)
def build_kb(seed: int, kb_size: int = 200, distractors: int = 1, shared_surname_p: float = 0.3) -> KnowledgeBase:
    """Generate the KB for ``seed``: ``kb_size`` anchors (half films, half companies), with the people,
    cities and decoy facts described in the module docstring. Deterministic in its arguments."""
    if kb_size < 2:
        raise ValueError(f"kb_size={kb_size} must be at least 2 (one film and one company)")
    if not 0 <= distractors <= 3:
        raise ValueError(f"distractors={distractors} must be between 0 and 3 decoy facts per anchor")
    rng = random.Random(f"kb:{seed}")
    words = WordMaker(rng)
    cities = [words.word() for _ in range(max(8, kb_size // 5))]
    surnames: list[str] = []
    facts: list[Fact] = []

    def person(avoid: str = "") -> str:
        """A new full name; the surname is shared with p = shared_surname_p, never equal to ``avoid``."""
        pool = [name for name in surnames if name != avoid]
        if pool and rng.random() < shared_surname_p:
            last = rng.choice(pool)
        else:
            last = words.word()
            surnames.append(last)
        return f"{words.word()} {last}"

    def add(relation: str, subject: str, value: str) -> None:
        facts.append(Fact(f"kb{seed}-{len(facts):05d}", relation, subject, value))

    def born(who: str) -> None:
        add("birthplace", who, rng.choice(cities))

    def creator(anchor: str, relation: str, decoys: tuple[str, ...]) -> None:
        head = person()
        mother = person(avoid=head.split()[-1])  # one name per fact: a shared surname would outweigh the relation
        add(relation, anchor, head)
        add("mother", head, mother)
        born(head)
        born(mother)
        for decoy in rng.sample(decoys, distractors):
            other = person()
            add(decoy, anchor, other)
            born(other)

    n_films = (kb_size + 1) // 2
    films = tuple(f"{words.word()} {rng.choice(FILM_NOUNS)}" for _ in range(n_films))
    companies = tuple(f"{words.word()} {rng.choice(COMPANY_SUFFIXES)}" for _ in range(kb_size - n_films))
    for film in films:
        creator(film, "director", FILM_DECOYS)
    for company in companies:
        creator(company, "founder", COMPANY_DECOYS)
        add("founding year", company, str(rng.randint(1820, 2015)))
    return KnowledgeBase(tuple(facts), films, companies)


@dataclass(frozen=True)
class Template:
    """A question shape: a relation chain from an anchor."""

    name: str
    """Template id, stored in ``extra_info["template"]``."""
    anchor: str
    """``film`` or ``company``."""
    chain: tuple[str, ...]
    """Relations followed from the anchor, one search each."""
    question: str
    """Question text with ``{a}`` for the anchor."""


TEMPLATES = (
    Template("director_birthplace", "film", ("director", "birthplace"), "Where was the director of {a} born?"),
    Template("director_mother", "film", ("director", "mother"), "Who is the mother of the director of {a}?"),
    Template("founder_birthplace", "company", ("founder", "birthplace"), "Where was the founder of {a} born?"),
    Template("founder_mother", "company", ("founder", "mother"), "Who is the mother of the founder of {a}?"),
    Template("director_mother_birthplace", "film", ("director", "mother", "birthplace"),
             "Where was the mother of the director of {a} born?"),
    Template("founder_mother_birthplace", "company", ("founder", "mother", "birthplace"),
             "Where was the mother of the founder of {a} born?"),
)


def walk(kb: KnowledgeBase, anchor: str, chain: tuple[str, ...]) -> list[dict]:
    """The hops of ``chain`` from ``anchor``: per hop its relation, subject, query, document id and value."""
    hops, subject = [], anchor
    for relation in chain:
        fact = kb.fact(relation, subject)
        hops.append({"relation": relation, "subject": subject, "query": f"{relation} of {subject}",
                     "doc_id": fact.doc_id, "value": fact.value})
        subject = fact.value
    return hops


def search_demonstration(hops: list[dict]) -> list[str]:
    """One search turn per hop, then the answer turn. Thinking stays short and never restates a found
    name: the next query already carries it, and every token counts in the tiny model's context."""
    turns = []
    for k, hop in enumerate(hops):
        note = f"Find the {hop['relation']}." if k == 0 else f"Now the {hop['relation']}."
        turns.append(think(note) + f"<search>{hop['query']}</search>")
    turns.append(think("I have the answer.") + answer(hops[-1]["value"]))
    return turns


@register_task
class MultihopTask(Task):
    """Two- and three-hop questions over a generated KB, answered with the search tool."""

    name = "multihop"
    tools = ("search",)

    def __init__(
        self,
        hops: tuple[int, ...] = (2,),
        kb_size: int = 200,
        distractors: int = 1,
        shared_surname_p: float = 0.3,
        kb_seed: int = 0,
        doc_titles: bool = False,
        held_out: float = 0.1,
    ):
        """``hops``: allowed chain lengths, (2,), (3,) or (2, 3); ``kb_size``: number of films + companies;
        ``distractors``: decoy facts per anchor (0-3); ``shared_surname_p``: chance a new person reuses a
        surname; ``kb_seed``: which world (the corpus and the questions must use the same one);
        ``doc_titles``: give documents their subject as title. Off by default: the text already names the
        subject, and the search tool prints titles (``Doc 1 (Title: ...)``), ~10 tokens per document."""
        super().__init__(held_out)
        if not hops or any(h not in (2, 3) for h in hops):
            raise ValueError(f"multihop: hops={hops} must be a non-empty subset of (2, 3)")
        self.hops = tuple(sorted(set(hops)))
        self.kb_size, self.distractors, self.shared_surname_p = kb_size, distractors, shared_surname_p
        self.kb_seed, self.doc_titles = kb_seed, doc_titles
        self.templates = tuple(t for t in TEMPLATES if len(t.chain) in self.hops)

    def kb(self, seed: int | None = None) -> KnowledgeBase:
        """The knowledge base of ``seed`` (default: this task's ``kb_seed``)."""
        return build_kb(self.kb_seed if seed is None else seed, self.kb_size, self.distractors, self.shared_surname_p)

    def corpus(self, seed: int | None = None) -> list[dict]:
        """Search documents of the KB (default: this task's ``kb_seed``, the one its questions use)."""
        return self.kb(seed).docs(self.doc_titles)

    def _draw(self, rng: random.Random) -> tuple[str, Callable[[str], Example]]:
        kb = self.kb()
        kind, anchor = rng.choice(kb.anchors)
        template = rng.choice([t for t in self.templates if t.anchor == kind])
        hops = walk(kb, anchor, template.chain)

        def build(example_id: str) -> Example:
            return Example(
                id=example_id,
                question=template.question.format(a=anchor),
                answers=(hops[-1]["value"],),
                kind="qa",
                metric="f1",
                data_source="proc_multihop",
                extra_info={"task": self.name, "template": template.name, "anchor": anchor,
                            "kb_seed": self.kb_seed, "hops": hops},
            )

        return anchor, build

    def demonstration(self, example: Example) -> list[str]:
        """Search ``<relation> of <subject>`` per hop, then answer with the last value."""
        return search_demonstration(example.extra_info["hops"])
