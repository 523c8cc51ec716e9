"""Test doubles for the agent layer: a deterministic scripted engine and stub tools.

``ScriptedEngine`` honours stop strings (searched in the generated text only, like ``HFEngine``),
EOS ids and max tokens, returns fake but deterministic log-probs/entropies (a function of the
response position and the token, so a fork reproduces its parent's values on the shared prefix),
records every call, and can be told to ignore stop strings (to test the loop's own stop search).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from appo.engine.base import Generation, GenerationRequest, SamplingParams
from appo.tools.base import Tool
from appo.types import ToolResult

ASSISTANT = "<|im_start|>assistant\n"


def default_score(pos: int, tok: int) -> tuple[float, float]:
    """Fake (logprob, entropy) of token ``tok`` at absolute position ``pos``."""
    return -(((tok * 7 + pos * 3) % 10) + 1) / 10.0, (((tok * 13 + pos * 5) % 17) + 1) / 8.0


@dataclass
class ScriptedEngine:
    """Engine double: ``policy(prefix_ids, cache_key, rng) -> ids`` gives what the "model" writes next.

    A policy that runs out before an end (EOS, stop string, max tokens) returns ``finish_reason="length"``.
    """

    tokenizer: object
    policy: Callable[[tuple[int, ...], str | None, random.Random], list[int]]
    score: Callable[[int, int], tuple[float, float]] = default_score
    keyed_score: Callable[[str | None, int, int], tuple[float, float]] | None = None
    eos_ids: frozenset[int] = frozenset()
    honour_stops: bool = True
    calls: list[tuple[list[GenerationRequest], SamplingParams]] = field(default_factory=list)
    released: list[list[str] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.eos_ids:
            self.eos_ids = frozenset({self.tokenizer.eos_token_id})

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        self.calls.append((list(requests), params))
        out = []
        for req in requests:
            rng = random.Random(f"{params.seed}/{req.cache_key}/{len(req.prefix_ids)}")
            cont = list(self.policy(tuple(req.prefix_ids), req.cache_key, rng))
            limit = params.max_new_tokens if req.max_new_tokens is None else req.max_new_tokens
            ids: list[int] = []
            finish, stop = "length", None
            for tok in cont[:limit]:
                ids.append(tok)
                if tok in self.eos_ids:
                    finish = "eos"
                    break
                if self.honour_stops and params.stop:
                    text = self.tokenizer.decode(ids, skip_special_tokens=False)
                    hit = next((s for s in params.stop if s in text), None)
                    if hit:
                        finish, stop = "stop", hit
                        break
            if self.keyed_score is not None:
                scores = [self.keyed_score(req.cache_key, len(req.prefix_ids) + i, t) for i, t in enumerate(ids)]
            else:
                scores = [self.score(len(req.prefix_ids) + i, t) for i, t in enumerate(ids)]
            out.append(Generation(tuple(ids), tuple(s[0] for s in scores), tuple(s[1] for s in scores), finish, stop))
        return out

    def release(self, keys=None) -> None:
        self.released.append(None if keys is None else list(keys))

    def request_keys(self) -> list[str | None]:
        return [r.cache_key for reqs, _ in self.calls for r in reqs]


def response_text(tokenizer, prefix_ids: Sequence[int]) -> str:
    """Decoded text after the first assistant header (the response so far, for tags and hermes)."""
    text = tokenizer.decode(list(prefix_ids), skip_special_tokens=False)
    i = text.find(ASSISTANT)
    return text[i + len(ASSISTANT):] if i >= 0 else ""


RESULT_CLOSERS = ("</result>", "</tool_response>")


def script_policy(tokenizer, scripts: Callable[[str | None], Sequence[str]]):
    """A policy that writes ``scripts(key)[k]`` as turn k (k = results seen so far), continuing a partial turn.

    A turn's text must end with a stop string or the EOS token text. When the response already holds
    part of turn k (a fork), the rest of it is written. Raises when the partial turn does not match.
    """

    def policy(prefix, key, rng):
        resp = response_text(tokenizer, prefix)
        ends = [resp.rfind(c) + len(c) for c in RESULT_CLOSERS if c in resp]
        k = sum(resp.count(c) for c in RESULT_CLOSERS)
        partial = resp[max(ends):] if ends else resp
        for skip in ("\n", ASSISTANT, f"<|im_end|>\n{ASSISTANT}"):
            if partial.startswith(skip) and ends:
                partial = partial[len(skip):]
        partial = partial.lstrip("\n") if ends else partial
        turns = list(scripts(key))
        turn = turns[min(k, len(turns) - 1)]
        if not turn.startswith(partial):
            raise AssertionError(f"partial turn {partial!r} is not a prefix of the script turn {turn!r}")
        return list(tokenizer.encode(turn[len(partial):], add_special_tokens=False))

    return policy


def random_tags_policy(tokenizer, p_call: float = 0.6, max_calls: int = 4):
    """A seeded random 'model' for the tags protocol: some thinking, random python/search calls, an answer."""

    def policy(prefix, key, rng):
        resp = response_text(tokenizer, prefix)
        calls = resp.count("</result>")
        words = ["a", "b", "c", "x", "1", "2", " so", " then", " ok"]
        think = "<think>" + "".join(rng.choice(words) for _ in range(rng.randint(1, 6))) + "</think>"
        if calls < max_calls and rng.random() < p_call:
            tag = rng.choice(["python", "search"])
            body = "".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
            text = f"{think}<{tag}>{body}</{tag}>"
        else:
            text = f"{think}<answer>\\boxed{{{rng.randint(0, 9)}}}</answer>"
        return list(tokenizer.encode(text, add_special_tokens=False))

    return policy


class RecordingTool(Tool):
    """Base of the stub tools: records every call_batch size and argument (thread-safe)."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.seen: list[dict] = []
        self._lock = threading.Lock()

    def call_batch(self, arguments):
        with self._lock:
            self.batches.append(len(arguments))
        return super().call_batch(arguments)

    def _record(self, arguments: dict) -> None:
        with self._lock:
            self.seen.append(dict(arguments))


class StubPython(RecordingTool):
    name = "python"
    description = "Runs Python code and returns what it prints."
    parameters = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}
    tag_argument = "code"

    def call(self, arguments):
        self._record(arguments)
        code = arguments.get("code", "")
        return ToolResult(text=f"out:{len(code)}")


class StubSearch(RecordingTool):
    name = "search"
    description = "Searches a small corpus."
    parameters = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
    tag_argument = "query"

    def call(self, arguments):
        self._record(arguments)
        return ToolResult(text=f"doc about {arguments.get('query', '')}")


class LongTool(RecordingTool):
    """Returns a long text (for truncation tests)."""

    name = "python"
    parameters = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}
    tag_argument = "code"

    def call(self, arguments):
        self._record(arguments)
        return ToolResult(text="9" * 200)


class CrashingTool(RecordingTool):
    """Raises inside call (Tool.safe_call must turn that into an error result)."""

    name = "python"
    parameters = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}
    tag_argument = "code"

    def call(self, arguments):
        raise RuntimeError("boom")
