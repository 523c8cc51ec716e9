"""Text generation for the server over an :class:`~appo.engine.base.Engine`: whole, or streamed in chunks.

:class:`ServedGenerator` owns the engine, the tokenizer and a lock (the HF engine is not thread-safe; the
ASGI server runs requests on worker threads, so calls are serialised per engine call, and requests
interleave chunk by chunk).

- :meth:`ServedGenerator.generate`: ``n`` samples of one prompt, ``whole_chunk_tokens`` (32) tokens of all
  ``n`` rows per engine call. Measured on the bench's tiny model (1 thread, 128 tokens, 3 repeats, a
  shared machine): chunks of 32 were no slower than one whole call (n=1: 119 vs 89 tok/s; n=16: 783
  vs 525; finished rows leave the batch at chunk ends), chunks of 8 cost n=1 about 20% (72 tok/s).
- :meth:`ServedGenerator.stream`: one sample, ``chunk_tokens`` (8) tokens per call, yielded chunk by chunk.

Both continue each row under a ``cache_key`` from one call to the next (the engine reuses the KV of
everything before the last token, so the chunks cost about what one call does), and find stop strings
that straddle two chunks in the decoded text of the whole sample, as the agent loop does. Chunking is
what makes a request cancellable: before each chunk the generator checks the request's ``cancel`` event
(set when the client disconnects) and its own ``stopping`` event (set on SIGTERM) and raises
:class:`Cancelled`; at most one chunk's decode steps (8 streamed, 32 whole) run after a client leaves.

Locking rule: the lock is taken only by plain calls, never by a generator's ``finally`` (a stream that
a client abandons is finalised by the garbage collector, which may run inside a forward pass on the
thread that holds the lock; taking the lock there deadlocks). A finished or abandoned stream queues its
cache key on a lock-free deque and the next engine call releases it.

Stops: generation ends at an end-of-turn/EOS id, at ``max_tokens``, or after the token that completes a
stop string (the protocol's call and answer closers, and the request's ``stop``). The returned text is
cut at the end of a protocol stop string (kept: the parser needs it) or at the start of a request stop
string (dropped, as OpenAI does); trailing end ids are not part of the text.

Log-probs (:meth:`ServedGenerator.token_logprobs`): one teacher-forced forward over prompt + sample;
``log softmax(z / T)`` of each kept token and the ``top_k`` most likely alternatives, ``T`` the sampling
temperature (``T = 0`` scored at 1, as the engine reports greedy rows). vLLM/OpenAI report the model's
raw distribution; the two agree at temperature 1.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from appo.engine.base import GenerationRequest, SamplingParams


@dataclass(frozen=True)
class Sample:
    """One finished (or streamed-so-far) sample."""

    token_ids: tuple[int, ...]
    """Kept tokens (cut after a stop string; trailing end ids removed)."""
    text: str
    """Decoded text (cut as the module docstring says)."""
    finish: str
    """``stop`` (a stop string), ``eos`` (an end id), ``length`` (max tokens)."""
    stop_string: str | None = None
    """The stop string that ended it, if any."""


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-prob and its most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


class Cancelled(Exception):
    """A generation stopped early: its client left (``cancel`` set) or the server is stopping."""


def _row_seed(seed: int, row: int, done: int) -> int:
    """The engine seed of ``row``'s chunk that starts after ``done`` tokens (a stream is row 0, so a
    seeded stream and a seeded ``n=1`` request sample the same tokens)."""
    return ((seed * 1009 + row) * 8191 + done) % 2**62


class ServedGenerator:
    """Engine + tokenizer + lock; see the module docstring."""

    def __init__(self, engine, tokenizer, model, *, end_ids: Sequence[int] = (), chunk_tokens: int = 8,
                 whole_chunk_tokens: int = 32):
        self.engine, self.tokenizer, self.model = engine, tokenizer, model
        self.end_ids = frozenset(int(i) for i in end_ids) | frozenset(getattr(engine, "eos_token_ids", None) or ())
        self.chunk_tokens = chunk_tokens
        """Tokens per engine call of a stream (how often a stream sends text)."""
        self.whole_chunk_tokens = whole_chunk_tokens
        """Tokens per engine call of :meth:`generate` (how soon a left request stops; see the module docstring)."""
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        """Set on shutdown: every generation raises :class:`Cancelled` before its next chunk."""
        self._to_release: deque[str] = deque()  # cache keys of ended streams; append/popleft need no lock

    def _call(self, reqs: list[GenerationRequest], params: SamplingParams, cancel: threading.Event | None):
        """One engine call under the lock, after releasing queued keys; :class:`Cancelled` first if asked."""
        if self.stopping.is_set() or (cancel is not None and cancel.is_set()):
            raise Cancelled
        with self.lock:
            self._drain()
            return self.engine.generate(reqs, params)

    def _drain(self) -> None:
        keys = []
        while self._to_release:
            keys.append(self._to_release.popleft())
        if keys:
            self.engine.release(keys)

    # -- text helpers -----------------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text, special tokens kept (they are part of the protocols)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _finish(self, ids: list[int], finish: str, protocol_stops: Sequence[str], user_stops: Sequence[str],
                final: bool) -> Sample | None:
        """Cut ``ids`` at the first end id or stop string; a Sample when it ended (or ``final``), else None."""
        end_at = next((k for k, t in enumerate(ids) if t in self.end_ids), None)
        body = ids[:end_at] if end_at is not None else ids
        text = self.decode(body)
        hits = sorted((m.start(), m.end(), s) for s in (*protocol_stops, *user_stops)
                      for m in re.finditer(re.escape(s), text))
        if hits:
            start, end, s = hits[0]
            k = next(k for k in range(1, len(body) + 1) if len(self.decode(body[:k])) >= end)
            keep_text = text[:end] if s in protocol_stops else text[:start]
            return Sample(tuple(body[:k]), keep_text, "stop", s)
        if end_at is not None:
            return Sample(tuple(body), text, "eos")
        if final:
            return Sample(tuple(body), text, finish)
        return None

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, prompt_ids: Sequence[int], params: SamplingParams, n: int = 1,
                 protocol_stops: Sequence[str] = (), user_stops: Sequence[str] = (),
                 cancel: threading.Event | None = None) -> list[Sample]:
        """``n`` samples of ``prompt_ids``, all rows ``chunk_tokens`` at a time (module docstring); raises
        :class:`Cancelled` when ``cancel`` or ``stopping`` is set between chunks."""
        seed = params.seed if params.seed is not None else secrets.randbits(31)
        stops = tuple(dict.fromkeys((*protocol_stops, *user_stops)))
        tag = secrets.token_hex(8)
        keys = [f"serve/{tag}/{i}" for i in range(n)]
        ids: list[list[int]] = [[] for _ in range(n)]
        out: list[Sample | None] = [None] * n
        try:
            while any(o is None for o in out):
                live = [i for i in range(n) if out[i] is None]
                reqs = [GenerationRequest(prefix_ids=tuple(prompt_ids) + tuple(ids[i]), cache_key=keys[i],
                                          max_new_tokens=min(self.whole_chunk_tokens,
                                                             params.max_new_tokens - len(ids[i])),
                                          seed=_row_seed(seed, i, len(ids[i]))) for i in live]
                gens = self._call(reqs, replace(params, stop=stops, seed=seed), cancel)
                for i, g in zip(live, gens):
                    ids[i] += g.token_ids
                    over = len(ids[i]) >= params.max_new_tokens or not g.token_ids
                    out[i] = self._finish(ids[i], "length", protocol_stops, user_stops, final=over)
        finally:
            self._to_release.extend(keys)
        with self.lock:
            self._drain()
        return out  # type: ignore[return-value]

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams, protocol_stops: Sequence[str] = (),
               user_stops: Sequence[str] = (), cancel: threading.Event | None = None
               ) -> Iterator[tuple[str, Sample | None]]:
        """Yield ``(text delta, None)`` while generating and ``("", final Sample)`` last; raises
        :class:`Cancelled` before a chunk once ``cancel`` or ``stopping`` is set. Its ``finally`` takes
        no lock (module docstring)."""
        seed = params.seed if params.seed is not None else secrets.randbits(31)
        stops = tuple(dict.fromkeys((*protocol_stops, *user_stops)))
        key = f"serve/{secrets.token_hex(8)}/0"
        ids: list[int] = []
        sent = ""
        hold = max((len(s) for s in user_stops), default=1) - 1
        try:
            while True:
                req = GenerationRequest(prefix_ids=tuple(prompt_ids) + tuple(ids), cache_key=key,
                                        max_new_tokens=min(self.chunk_tokens, params.max_new_tokens - len(ids)),
                                        seed=_row_seed(seed, 0, len(ids)))
                (g,) = self._call([req], replace(params, stop=stops, seed=seed), cancel)
                ids += g.token_ids
                over = len(ids) >= params.max_new_tokens or not g.token_ids
                done = self._finish(ids, "length", protocol_stops, user_stops, final=over)
                text = done.text if done is not None else self.decode(ids)
                # hold back a possible start of a request stop string and an incomplete UTF-8 character
                safe = text if done is not None else text[: max(len(sent), len(text) - hold)]
                safe = safe.rstrip("\ufffd") if done is None else safe
                if len(safe) > len(sent) and safe.startswith(sent):
                    yield safe[len(sent):], None
                    sent = safe
                if done is not None:
                    yield "", done
                    return
        finally:
            self._to_release.append(key)  # no lock here: this may run inside the GC (module docstring)

    # -- log-probs ---------------------------------------------------------------------------------------------
    def token_logprobs(self, prompt_ids: Sequence[int], token_ids: Sequence[int], temperature: float,
                       top_k: int = 0) -> list[TokenLogprob]:
        """Log-prob and ``top_k`` alternatives of each of ``token_ids`` after ``prompt_ids`` (module docstring)."""
        if not token_ids:
            return []
        device = next(self.model.parameters()).device
        ids = torch.tensor([list(prompt_ids) + list(token_ids)], dtype=torch.long, device=device)
        p, n = len(prompt_ids), len(token_ids)
        with self.lock, torch.inference_mode():
            logits = self.model(input_ids=ids, use_cache=False).logits[0, p - 1: p - 1 + n].float()
        logp_nV = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1).cpu()
        chosen = logp_nV.gather(-1, torch.tensor(list(token_ids))[:, None]).squeeze(-1).tolist()
        tops_v, tops_i = logp_nV.topk(top_k, dim=-1) if top_k > 0 else (None, None)
        out = []
        for t, tok in enumerate(token_ids):
            top = ()
            if top_k > 0:
                top = tuple((self.decode([int(i)]), float(v)) for v, i in zip(tops_v[t].tolist(), tops_i[t].tolist()))
            out.append(TokenLogprob(self.decode([int(tok)]), float(chosen[t]), top))
        return out
