"""``combo`` (search then compute) and ``mix`` (arith + multihop + combo in set proportions).

``combo`` question: ``What is the founding year of <Company> times 7?``. Demonstration:

    <think>Find the founding year.</think>
    <search>founding year of <Company></search>
    --- result: "The founding year of <Company> is 1873." ---
    <think>Now compute it.</think>
    <python>print(1873 * 7)</python>
    --- result: 13111 ---
    <think>I have the result.</think>
    <answer>\\boxed{13111}</answer>

It is the one procedural shape that uses both tools, so the reference reward's +0.1 bonus is reachable.
Combo questions read the multihop KB (same ``kb_seed`` and size knobs, same corpus) and hold out the
same anchors, so a company held out of multihop training is held out of combo training too.

``mix`` draws each example from one component with probabilities ``weights``; each component runs its own
stream for the seed, so a mix is reproducible and its splits are as disjoint as its components'.
Examples keep their component's ``data_source`` (``proc_arith``, ``proc_multihop``, ``proc_combo``) so
per-source metrics stay separable; ids are the mix's own.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Callable, Iterator

from appo.data.procedural.arith import ArithTask, evaluate
from appo.data.procedural.base import SPLITS, Split, Task, answer, register_task, think
from appo.data.procedural.multihop import MultihopTask, search_demonstration
from appo.types import Example

_OPS = {"times": "*", "plus": "+", "minus": "-"}


@register_task
class ComboTask(Task):
    """Look a number up with search, then compute with Python."""

    name = "combo"
    tools = ("search", "python")

    def __init__(self, kb_size: int = 200, distractors: int = 1, shared_surname_p: float = 0.3,
                 kb_seed: int = 0, doc_titles: bool = False, digits: tuple[int, int] = (1, 2),
                 held_out: float = 0.1):
        """KB knobs as :class:`MultihopTask`; ``digits``: (min, max) digits of the second operand."""
        super().__init__(held_out)
        self.world = MultihopTask(hops=(2,), kb_size=kb_size, distractors=distractors,
                                  shared_surname_p=shared_surname_p, kb_seed=kb_seed, doc_titles=doc_titles,
                                  held_out=held_out)
        self.digits = digits

    def corpus(self, seed: int | None = None) -> list[dict]:
        """The multihop KB's documents (the founding-year facts live there)."""
        return self.world.corpus(seed)

    def _draw(self, rng: random.Random) -> tuple[str, Callable[[str], Example]]:
        kb = self.world.kb()
        company = rng.choice(kb.companies)
        fact = kb.fact("founding year", company)
        word = rng.choice(tuple(_OPS))
        d = rng.randint(*self.digits)
        k = rng.randint(2 if d == 1 else 10 ** (d - 1), 10**d - 1)
        expression = f"{fact.value} {_OPS[word]} {k}"
        value = evaluate(expression)
        hop = {"relation": "founding year", "subject": company, "query": f"founding year of {company}",
               "doc_id": fact.doc_id, "value": fact.value}

        def build(example_id: str) -> Example:
            return Example(
                id=example_id,
                question=f"What is the founding year of {company} {word} {k}?",
                answers=(str(value),),
                kind="math",
                metric="math_equiv",
                data_source="proc_combo",
                extra_info={"task": self.name, "anchor": company, "kb_seed": self.world.kb_seed,
                            "hops": [hop], "expression": expression, "value": value},
            )

        return company, build

    def demonstration(self, example: Example) -> list[str]:
        """Search the founding year, compute with Python, answer."""
        hop = example.extra_info["hops"][0]
        search_turn = search_demonstration([hop])[0]
        return [
            search_turn,
            think("Now compute it.") + f"<python>print({example.extra_info['expression']})</python>",
            think("I have the result.") + answer(str(evaluate(example.extra_info["expression"]))),
        ]


@register_task
class MixTask(Task):
    """A weighted mixture of arith, multihop and combo."""

    name = "mix"
    tools = ("python", "search")

    def __init__(self, weights: tuple[float, float, float] = (0.4, 0.4, 0.2), arith: dict | None = None,
                 multihop: dict | None = None, held_out: float = 0.1):
        """``weights``: probabilities of (arith, multihop, combo); ``arith`` / ``multihop``: knobs for
        those components (combo shares multihop's KB knobs)."""
        super().__init__(held_out)
        if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"mix: weights={weights} must be three non-negative numbers, not all zero")
        self.weights = tuple(float(w) for w in weights)
        mh = dict(multihop or {})
        self.components: dict[str, Task] = {
            "arith": ArithTask(held_out=held_out, **(arith or {})),
            "multihop": MultihopTask(held_out=held_out, **mh),
            "combo": ComboTask(held_out=held_out, **{k: v for k, v in mh.items() if k != "hops"}),
        }

    def _draw(self, rng):  # pragma: no cover - mix overrides iterate instead
        raise NotImplementedError

    def iterate(self, seed: int, split: Split = "train") -> Iterator[Example]:
        """Pick a component per example (seeded), take its next example of ``split``, re-id it."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = random.Random(f"{self.name}:{seed}")
        streams = {name: task.iterate(seed, split) for name, task in self.components.items()}
        names = list(self.components)
        prefix = self.name if split == "train" else f"{self.name}-{split}"
        index = 0
        while True:
            name = rng.choices(names, weights=self.weights)[0]
            example = next(streams[name])
            yield replace(example, id=f"{prefix}/{seed}/{index}")
            index += 1

    def corpus(self, seed: int | None = None) -> list[dict]:
        """The multihop KB's documents."""
        return self.components["multihop"].corpus(seed)

    def demonstration(self, example: Example) -> list[str]:
        """The demonstration of the component that made ``example``."""
        return self.components[example.extra_info["task"]].demonstration(example)
