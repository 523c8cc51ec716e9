"""A deterministic engine double whose outcome is decided by one known token, for the analysis tests.

``DecisiveEngine`` writes, in the tags protocol (tokens of the tiny test tokenizer)::

    D f f f <python>print(1)</python>   [tool result]   <answer>\\boxed{D}</answer>

``D`` is ``"1"`` with probability ``p`` else ``"2"``; the ``f`` are filler tokens drawn uniformly from four
letters (high entropy, no effect); everything else is forced (entropy 0) and the answer copies ``D``. So
the reward (1 when the box holds 1) depends only on the token D: re-drawing D changes the outcome,
re-drawing anything after it never does. With ``decide_after_tool`` D is drawn as the first token after
the tool result instead (the fillers stay in the first turn).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

from appo.engine.base import Generation, GenerationRequest, SamplingParams
from appo.rewards.base import RewardOutput
from appo.tools.base import Tool
from appo.types import Example, ToolResult

FILLERS = ("a", "b", "c", "x")
CALL = "<python>print(1)</python>"


class StubPython(Tool):
    """Always prints ``ok``."""

    name = "python"
    description = "Runs Python."
    parameters = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}
    tag_argument = "code"

    def call(self, arguments):
        return ToolResult(text="ok")


def box_reward(examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
    """1.0 when the response boxes 1, else 0.0."""
    return [RewardOutput(1.0 if "\\boxed{1}" in r else 0.0) for r in responses]


def toy_examples(n: int = 1) -> list[Example]:
    return [Example(id=f"toy/{i}", question="Pick one.", answers=("1",), kind="math", metric="math_equiv",
                    data_source="toy") for i in range(n)]


@dataclass
class DecisiveEngine:
    """See the module docstring. Records every request."""

    tokenizer: object
    p: float = 0.7
    decide_after_tool: bool = False
    requests: list[GenerationRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        enc = lambda s: list(self.tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
        self.header = enc("<|im_start|>assistant\n")
        self.start_id = self.header[0]
        self.d_ids = {enc("1")[0]: "1", enc("2")[0]: "2"}
        self.fill_ids = [enc(f)[0] for f in FILLERS]
        self.call_ids = enc(CALL)
        self.result_close = enc("</result>")[0]
        self.eos = self.tokenizer.eos_token_id
        self.enc = enc

    def response_start(self, prefix: Sequence[int]) -> int:
        """Index in ``prefix`` of the first response token (after the last assistant header)."""
        last = max(i for i, t in enumerate(prefix) if t == self.start_id)
        return last + len(self.header)

    def _program(self, phase: int, d: str | None) -> list:
        decide = [("choice", [(i, self.p if v == "1" else 1 - self.p) for i, v in self.d_ids.items()])]
        fillers = [("choice", [(i, 1 / len(self.fill_ids)) for i in self.fill_ids])] * 3
        if phase == 0:
            first = ([] if self.decide_after_tool else decide) + fillers
            return first + [("forced", t) for t in self.call_ids]
        answer = [("forced", t) for t in self.enc(f"<answer>\\boxed{{{d}}}</answer>")] if d is not None else []
        return ([] if not self.decide_after_tool else decide) + answer + [("forced", self.eos)]

    def next_token(self, resp: list[int], rng: random.Random) -> tuple[int, float, float]:
        """(token, logprob, entropy) of the next response token given the response so far."""
        closes = [i for i, t in enumerate(resp) if t == self.result_close]
        phase = 1 if closes else 0
        start = closes[-1] + 2 if closes else 0  # "</result>" then "\n"
        d = None
        if phase == 1:
            d_pos = start if self.decide_after_tool else 0
            d = self.d_ids.get(resp[d_pos]) if d_pos < len(resp) else None
        pos = len(resp) - start
        prog = self._program(phase, d)
        if pos >= len(prog):
            return self.eos, 0.0, 0.0
        kind, what = prog[pos]
        if kind == "forced":
            return what, 0.0, 0.0
        ids, probs = zip(*what)
        tok = rng.choices(ids, weights=probs)[0]
        ent = -sum(q * math.log(q) for q in probs if q > 0)
        return tok, math.log(probs[ids.index(tok)]), ent

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        out = []
        for i, req in enumerate(requests):
            self.requests.append(req)
            rng = random.Random(f"{params.seed}/{i}/{len(req.prefix_ids)}")
            resp = list(req.prefix_ids[self.response_start(req.prefix_ids):])
            budget = params.max_new_tokens if req.max_new_tokens is None else req.max_new_tokens
            ids, lps, ents, finish, stop = [], [], [], "length", None
            while len(ids) < budget:
                tok, lp, ent = self.next_token(resp + ids, rng)
                ids.append(tok)
                lps.append(lp)
                ents.append(ent)
                if tok == self.eos:
                    finish = "eos"
                    break
                text = self.tokenizer.decode(ids, skip_special_tokens=False)
                hit = next((s for s in params.stop if s in text), None)
                if hit:
                    finish, stop = "stop", hit
                    break
            out.append(Generation(tuple(ids), tuple(lps), tuple(ents), finish, stop))
        return out

    def release(self, keys=None) -> None:
        pass
