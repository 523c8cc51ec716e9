"""The Engine protocol: sample continuations of token-id prefixes, with per-token log-probs and entropy.

An engine is token-in/token-out: it never sees text except to detect stop strings, so the ids a
trainer trains on are exactly the ids the engine sampled.

Prefix reuse (forks, multi-turn): a request may name a ``cache_key``. The engine then keeps the KV
cache of that sequence (prefix + generated tokens) after the call, and any later request whose prefix
*starts with* a kept sequence's tokens reuses the KV of the common part instead of re-running it. A
fork of rollout r at response position t is therefore just a request with prefix
``prompt + response[: t + 1]``; a second turn after a tool result is a request with prefix
``prompt + turn1 + result``. Engines without a cache (or when memory is short) may ignore keys: the
results are the same, only slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence, runtime_checkable

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. Defaults follow the paper's rollouts (temperature 1.0, no truncation)."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off)."""
    max_new_tokens: int = 256
    """Upper bound of generated tokens per request (a request may ask for fewer)."""
    stop: tuple[str, ...] = ()
    """Generation of a row stops after the token that completes any of these strings."""
    seed: int | None = None
    """Seed of the call's random generator; the same seed and requests give the same output."""


@dataclass(frozen=True)
class GenerationRequest:
    """One sequence to continue."""

    prefix_ids: tuple[int, ...]
    """Token ids to continue from (prompt, earlier turns, tool results, or a fork prefix)."""
    max_new_tokens: int | None = None
    """Per-request cap (e.g. the remaining response budget); None uses ``SamplingParams.max_new_tokens``."""
    cache_key: str | None = None
    """Keep this sequence's KV under this key after the call, for later requests that extend it."""
    seed: int | None = None
    """This row's own sampling seed: its draws then depend only on (seed, prefix, weights), not on the
    other requests of the call nor on ``SamplingParams.seed`` (engines without per-row streams may
    ignore it). None draws from the call's generator (``SamplingParams.seed``)."""


@dataclass(frozen=True)
class Generation:
    """What an engine returns per request. The three token-level tuples have equal length."""

    token_ids: tuple[int, ...]
    """Sampled token ids (including the token that completed a stop string, and EOS if emitted)."""
    logprobs: tuple[float, ...]
    """Log-prob of each sampled token under the sampling distribution's base policy
    (softmax of logits / temperature, before top-p/top-k truncation)."""
    entropies: tuple[float, ...]
    """Entropy of the next-token distribution at each step (exact from logits, or top-k approximation)."""
    finish_reason: FinishReason
    """``stop`` (a stop string), ``eos`` (an end token), or ``length`` (max tokens)."""
    stop_string: str | None = None
    """The stop string that ended generation, if any."""


@runtime_checkable
class Engine(Protocol):
    """Samples continuations of token prefixes. See the module docstring for prefix reuse."""

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        """Continue every request; results are in request order."""
        ...

    def release(self, keys: Sequence[str] | None = None) -> None:
        """Drop kept KV caches (all of them when ``keys`` is None)."""
        ...
