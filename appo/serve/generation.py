"""Text generation for the server over an :class:`~appo.engine.base.Engine`: whole, or streamed in chunks.

:class:`ServedGenerator` owns the engine, the tokenizer and a lock (the HF engine is not thread-safe; the
ASGI server runs requests on worker threads, so calls are serialised per engine call, and streams
interleave chunk by chunk).

- :meth:`ServedGenerator.generate`: ``n`` samples of one prompt in one engine call.
- :meth:`ServedGenerator.stream`: one sample, ``chunk_tokens`` tokens per engine call, each call
  continuing the last under the same ``cache_key`` (the engine reuses the KV of everything before the
  last token, so a stream costs about what one call does). Stop strings that straddle two chunks are
  found in the decoded text of the whole sample, as the agent loop does.

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


class ServedGenerator:
    """Engine + tokenizer + lock; see the module docstring."""

    def __init__(self, engine, tokenizer, model, *, end_ids: Sequence[int] = (), chunk_tokens: int = 8):
        self.engine, self.tokenizer, self.model = engine, tokenizer, model
        self.end_ids = frozenset(int(i) for i in end_ids) | frozenset(getattr(engine, "eos_token_ids", None) or ())
        self.chunk_tokens = chunk_tokens
        self.lock = threading.Lock()

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
                 protocol_stops: Sequence[str] = (), user_stops: Sequence[str] = ()) -> list[Sample]:
        """``n`` samples of ``prompt_ids`` (one engine call; per-row seeds from ``params.seed``)."""
        seed = params.seed if params.seed is not None else secrets.randbits(31)
        stops = tuple(dict.fromkeys((*protocol_stops, *user_stops)))
        reqs = [GenerationRequest(prefix_ids=tuple(prompt_ids), seed=seed * 1009 + i) for i in range(n)]
        with self.lock:
            gens = self.engine.generate(reqs, replace(params, stop=stops, seed=seed))
        out = []
        for g in gens:
            finish = "length" if g.finish_reason == "length" else g.finish_reason
            out.append(self._finish(list(g.token_ids), finish, protocol_stops, user_stops, final=True))
        return out

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams, protocol_stops: Sequence[str] = (),
               user_stops: Sequence[str] = ()) -> Iterator[tuple[str, Sample | None]]:
        """Yield ``(text delta, None)`` while generating and ``("", final Sample)`` last."""
        seed = params.seed if params.seed is not None else secrets.randbits(31)
        stops = tuple(dict.fromkeys((*protocol_stops, *user_stops)))
        key = f"serve-stream/{secrets.token_hex(8)}"
        ids: list[int] = []
        sent = ""
        hold = max((len(s) for s in user_stops), default=1) - 1
        try:
            while True:
                budget = params.max_new_tokens - len(ids)
                req = GenerationRequest(prefix_ids=tuple(prompt_ids) + tuple(ids), cache_key=key,
                                        max_new_tokens=min(self.chunk_tokens, budget), seed=seed * 1009 + len(ids))
                with self.lock:
                    (g,) = self.engine.generate([req], replace(params, stop=stops, seed=seed))
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
            with self.lock:
                self.engine.release([key])

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
