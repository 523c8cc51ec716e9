"""HFEngine: the transformers backend of the Engine protocol, a direct decode loop with prefix KV reuse.

What one ``generate`` call does, per chunk of at most ``max_batch_size`` requests:

1. **Plan.** Each request's prefix is looked up in the kept-KV store (``kv_store.PrefixKVStore``); it
   reuses the KV of its longest common prefix with a kept sequence, at most ``len(prefix) - 1`` tokens (the
   last prefix token is always run, to get the next-token logits). Identical prefixes in the chunk are
   prefilled once and their rows copied afterwards (GRPO groups share one prompt).
2. **Prefill** only the non-reused suffixes, left-padded, in query chunks of about
   ``prefill_chunk_tokens`` tokens, into a ``batch_cache.BatchKVCache`` (dense right-aligned layout,
   explicit 4D masks and per-row ``position_ids``; see that module).
3. **Decode** one token per step for all live rows: ``model(input_ids [B,1], mask, positions, cache)``,
   then ``sampling.sample_next`` (log-prob and entropy of ``softmax(z/T)`` before truncation). A row ends
   on an EOS id, a stop string (the completing token is kept), or its own token budget. Finished rows are
   dropped from the batch (one row-gather of the cache) once they are ``compact_fraction`` of it; until
   then they ride along masked (their samples are ignored). A finished row with a ``cache_key`` is stored
   right away: its KV for ``prefix + generated[:-1]``, trimmed, copied to ``store_device``.

``model.generate`` is not used: its per-step overhead (logits processors, stopping criteria, cache
bookkeeping) dominates for small models.

Weights are shared, never copied: the engine holds a reference to the trainer's model, so in-place
updates (optimizer steps, ``load_state_dict``) are seen by the next call. Kept KV computed under older
weights would no longer match a recomputation, so each call compares a fingerprint of the parameters
(``data_ptr`` and in-place version counter of each) with the one of the previous call and drops every kept
cache when it changed. The fast decode step's fused weight copies (``fast_decode``) follow the same rule:
built on the first call, rebuilt on the first call after the fingerprint changed. Changes that bypass the
version counter (writes through ``param.data``) are invisible to both; call ``set_model(model)`` after
such a change. ``set_model`` swaps in another model object (and drops kept caches and fused copies).

Cache keys, for callers (the agent loop):

- Initial rollouts: one request per rollout with ``cache_key=f"{row}"``; after the call the store holds
  ``prompt + response[:-1]`` of each. Identical prompts in one call are prefilled once anyway.
- Next turn of the same rollout: prefix ``prompt + response + tool_result`` with the *same* key; the
  old entry is reused (all but the last generated token) and then replaced by the longer sequence.
- Forks (APPO branch at response position t): prefix ``prompt + response[: t + 1]``, with or without a
  key of its own (give one if the branch will have later turns). Reuse is found by token content, so
  any kept sequence that shares the prefix serves, whatever its key.
- ``release(keys)`` when rollouts are done (e.g. after a training step); weight changes drop all
  kept caches anyway. Memory: ``kv_bytes_per_token * cache_budget_tokens`` at most.

Determinism: the same seed, requests, engine settings and kept caches give the same output. A request
with its own ``seed`` samples from its own counter-based stream (``sampling.counter_uniforms``: the k-th
token's uniform is a function of (seed, k)), so its tokens do not depend on which requests share the call
or the chunk; rows without one draw from the call's generator (``SamplingParams.seed``). Reused and
recomputed KV agree only to float rounding (~1e-6), so a run with different kept caches may, rarely,
sample a different token where a draw falls on a CDF boundary.

Calls run under ``torch.inference_mode`` with the model temporarily in eval mode (its train/eval flag is
restored). With a compute dtype below the weights' (``model.compute_dtype``, :mod:`appo.models.precision`)
prefill and decode run under autocast, through the model's forward (the fast decode step is skipped).
Attention must be ``sdpa`` or ``eager`` (the engine passes explicit 4D masks); models with sliding-window
layers are refused when a sequence could exceed the window.
"""

from __future__ import annotations

import inspect
import secrets
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from appo.engine.base import Generation, GenerationRequest, SamplingParams
from appo.engine.batch_cache import BatchKVCache
from appo.engine.fast_decode import FastDecoder
from appo.engine.kv_store import PrefixKVStore
from appo.engine.sampling import StopStrings, counter_uniforms, sample_next
from appo.models.lm_logits import accepts_logits_to_keep
from appo.models.precision import autocast_dtype, compute_autocast


@dataclass
class EngineStats:
    """Counters since the engine was built (or ``reset_stats``); plain ints, for tests and benchmarks."""

    requests: int = 0
    """Requests answered."""
    prefill_tokens: int = 0
    """Prefix tokens run through the model (after reuse and de-duplication)."""
    reused_tokens: int = 0
    """Prefix tokens whose KV came from the store instead."""
    cache_hits: int = 0
    """Unique prefixes that reused kept KV."""
    deduplicated_rows: int = 0
    """Rows whose prefix was identical to another row's in the same chunk (prefilled once)."""
    generated_tokens: int = 0
    """Tokens sampled and returned."""
    decode_steps: int = 0
    """Batched decode forwards."""
    compactions: int = 0
    """Times finished rows were dropped from a decoding batch."""
    stale_releases: int = 0
    """Times kept caches were dropped because the weights changed."""
    prefill_seconds: float = 0.0
    """Wall time spent planning and prefilling (reused-KV copies included)."""
    decode_seconds: float = 0.0
    """Wall time spent in decode loops (sampling, decode forwards, stop checks, KV extraction for the store)."""


class HFEngine:
    """Engine over any Hugging Face causal LM (tested: Llama family), CPU or CUDA. See the module docstring.

    Args:
        model: the causal LM, shared with the trainer (never copied).
        tokenizer: needed for stop strings and EOS ids; may be None when neither is used.
        max_batch_size: rows decoded together; larger calls are split into chunks.
        cache_budget_tokens: total tokens of kept KV (LRU eviction beyond it; 0 disables keeping).
            One kept token costs ``2 * layers * kv_heads * head_dim * dtype bytes``
            (``kv_bytes_per_token``), e.g. 4 KiB for the tiny test model, 45 KiB for SmolLM2-135M in fp32.
        device: where the model runs; defaults to its parameters' device (the engine never moves it).
        store_device: where kept KV lives (default: ``device``; ``"cpu"`` saves GPU memory).
        eos_token_ids: ids that end a row; None takes the tokenizer's and the generation config's,
            ``()`` disables EOS (fixed-length benchmarks).
        prefill_chunk_tokens: about how many tokens one prefill forward processes (bounds activations).
        compact_fraction: drop finished rows once they are at least this fraction of the batch
            (0 drops at once, > 1 never); see ``perf/engine_bench.py`` for the measurement.
        fast_decode: decode steps with ``fast_decode.FastDecoder`` (Llama/Mistral/Qwen2/Qwen3 with plain
            ``nn.Linear`` layers) instead of the model's forward; other models always use the forward.
        num_threads: torch intra-op threads during ``generate`` (restored after); None leaves torch's
            setting. On a busy CPU, 1 thread avoids stalls of small parallel kernels (measured up to 100x
            per attention call with 2 threads on a loaded 2-core machine).
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        max_batch_size: int = 32,
        cache_budget_tokens: int = 32768,
        device: str | torch.device | None = None,
        store_device: str | torch.device | None = None,
        eos_token_ids: Sequence[int] | None = None,
        prefill_chunk_tokens: int = 4096,
        compact_fraction: float = 0.25,
        fast_decode: bool = True,
        num_threads: int | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if prefill_chunk_tokens < 1:
            raise ValueError(f"prefill_chunk_tokens must be >= 1, got {prefill_chunk_tokens}")
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.compact_fraction = compact_fraction
        self.fast_decode = fast_decode
        self.num_threads = num_threads
        self._fast: FastDecoder | None = None
        self._fast_fingerprint: int | None = None
        self._eos_override = None if eos_token_ids is None else frozenset(int(t) for t in eos_token_ids)
        self._device_arg = device
        self._store_device_arg = store_device
        self.store = PrefixKVStore(cache_budget_tokens)
        self.stats = EngineStats()
        self.set_model(model)

    # -- model ----------------------------------------------------------------------------------------------------
    def set_model(self, model) -> None:
        """Use ``model`` from now on (e.g. a reloaded policy); drops all kept caches."""
        params = list(model.parameters())
        if not params:
            raise ValueError("model has no parameters")
        model_device = params[0].device
        device = torch.device(self._device_arg) if self._device_arg is not None else model_device
        if device != model_device:
            raise ValueError(f"device={device} but the model's weights are on {model_device}: move the model "
                             "(model.to(device)) or leave device=None; the engine never copies weights")
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        impl = getattr(model.config, "_attn_implementation", None) or "eager"
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"HFEngine needs attn_implementation 'sdpa' or 'eager', the model uses {impl!r}: load "
                             "it with attn_implementation='sdpa' (or call model.set_attn_implementation('sdpa'))")
        layer_types = getattr(config, "layer_types", None) or ()
        if any(t != "full_attention" for t in layer_types):
            raise NotImplementedError("HFEngine supports full-attention layers only; this model has "
                                      f"{set(layer_types)}")
        window = getattr(config, "sliding_window", None)
        self._window = window if window and getattr(config, "use_sliding_window", True) and not layer_types else None
        self.model = model
        self.config = config
        self.device = device
        self.store_device = torch.device(self._store_device_arg) if self._store_device_arg is not None else device
        self.dtype = params[0].dtype if params[0].is_floating_point() else torch.float32
        self._mask_dtype = torch.bool if impl == "sdpa" else self.dtype
        self._num_layers = config.num_hidden_layers
        self._vocab = model.get_input_embeddings().num_embeddings
        sig = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in sig else "past_key_values"
        self._keep_kw = accepts_logits_to_keep(model)
        self._eos = self._eos_override if self._eos_override is not None else self._default_eos(model)
        self.store.release()
        self._fast = None
        self._fingerprint = self._weights_fingerprint()

    def _default_eos(self, model) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(self.tokenizer, "eos_token_id", None), getattr(model.generation_config, "eos_token_id",
                                                                              None)
                       if getattr(model, "generation_config", None) is not None else None):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(int(t) for t in source)
        return frozenset(ids)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Ids that end a row with ``finish_reason == "eos"``."""
        return self._eos

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of KV one kept token costs (all layers, keys and values)."""
        c = self.config
        heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return 2 * self._num_layers * heads * head_dim * torch.empty((), dtype=self.dtype).element_size()

    def _weights_fingerprint(self) -> int:
        return hash(tuple((p.data_ptr(), p._version) for p in self.model.parameters()))

    # -- protocol -------------------------------------------------------------------------------------------------
    def release(self, keys: Sequence[str] | None = None) -> None:
        """Drop kept KV caches (all when ``keys`` is None); unknown keys are ignored."""
        self.store.release(keys)

    def reset_stats(self) -> None:
        """Zero the counters in ``stats``."""
        self.stats = EngineStats()

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        """Continue every request (results in request order); see the module docstring."""
        _check_params(params)
        for i, req in enumerate(requests):
            self._check_request(i, req, params)
        fingerprint = self._weights_fingerprint()
        if fingerprint != self._fingerprint:
            if len(self.store):
                self.stats.stale_releases += 1
            self.store.release()
            self._fingerprint = fingerprint
        if not self.fast_decode or autocast_dtype(self.model) is not None:  # mixed precision: the model's forward
            self._fast = None
        elif self._fast is None or self._fast_fingerprint != fingerprint or self._fast.model is not self.model:
            self._fast = FastDecoder.build(self.model)  # fused weight copies: rebuilt only after a weight change
            self._fast_fingerprint = fingerprint
        stops = StopStrings(self.tokenizer, params.stop)
        seed = params.seed if params.seed is not None else secrets.randbits(62)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        order = sorted(range(len(requests)), key=lambda i: requests[i].prefix_ids)
        results: list[Generation | None] = [None] * len(requests)
        was_training = self.model.training
        threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        self.model.eval()
        try:
            with torch.inference_mode():
                for c in range(0, len(order), self.max_batch_size):
                    idx = order[c : c + self.max_batch_size]
                    for i, gen in zip(idx, self._run_chunk([requests[i] for i in idx], params, generator, stops)):
                        results[i] = gen
        finally:
            self.model.train(was_training)
            torch.set_num_threads(threads)
        self.stats.requests += len(requests)
        return results  # type: ignore[return-value]

    def _check_request(self, i: int, req: GenerationRequest, params: SamplingParams) -> None:
        if not req.prefix_ids:
            raise ValueError(f"requests[{i}].prefix_ids is empty: give at least one token (e.g. a BOS or chat prefix)")
        try:
            lo, hi = min(req.prefix_ids), max(req.prefix_ids)
        except TypeError:
            raise ValueError(f"requests[{i}].prefix_ids must be a tuple of int token ids, got "
                             f"{type(req.prefix_ids).__name__} of {type(req.prefix_ids[0]).__name__}") from None
        if lo < 0 or hi >= self._vocab:
            raise ValueError(f"requests[{i}].prefix_ids has id {lo if lo < 0 else hi} outside the model's vocabulary "
                             f"[0, {self._vocab}): tokenize with the model's own tokenizer")
        if req.seed is not None and not (isinstance(req.seed, int) and 0 <= req.seed < 2**64):
            raise ValueError(f"requests[{i}].seed must be an int in [0, 2**64) or None, got {req.seed!r}")
        budget = _budget(req, params)
        if budget < 0:
            raise ValueError(f"requests[{i}].max_new_tokens must be >= 0, got {budget}")
        if self._window is not None and len(req.prefix_ids) + budget > self._window:
            raise NotImplementedError(f"requests[{i}] may reach {len(req.prefix_ids) + budget} tokens, beyond the "
                                      f"model's sliding window ({self._window}), which HFEngine does not implement")

    # -- one chunk ------------------------------------------------------------------------------------------------
    def _forward(self, input_ids, mask, positions, cache) -> torch.Tensor:
        kwargs = {self._cache_kw: cache}
        if self._keep_kw:
            kwargs["logits_to_keep"] = 1
        with compute_autocast(self.model):
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        return out.logits[:, -1, :]

    def _run_chunk(self, reqs: list[GenerationRequest], params: SamplingParams, generator, stops) -> list[Generation]:
        results: list[Generation | None] = [None] * len(reqs)
        rows = []
        for i, req in enumerate(reqs):
            if _budget(req, params) == 0:
                results[i] = Generation((), (), (), "length")
            else:
                rows.append(i)
        if not rows:
            return results  # type: ignore[return-value]
        max_new = max(_budget(reqs[i], params) for i in rows)
        t0 = time.perf_counter()
        cache, logits = self._prefill([reqs[i] for i in rows], max_new)
        t1 = time.perf_counter()
        self._decode(reqs, rows, cache, logits, params, generator, stops, results)
        self.stats.prefill_seconds += t1 - t0
        self.stats.decode_seconds += time.perf_counter() - t1
        return results  # type: ignore[return-value]

    def _prefill(self, reqs: list[GenerationRequest], max_new: int) -> tuple[BatchKVCache, torch.Tensor]:
        """Prefill the chunk's unique prefixes (reusing kept KV); returns the cache and logits, one row per request."""
        unique: dict[tuple[int, ...], int] = {}
        row_of = [unique.setdefault(r.prefix_ids, len(unique)) for r in reqs]
        prefixes = list(unique)
        self.stats.deduplicated_rows += len(reqs) - len(prefixes)
        lengths = [len(p) for p in prefixes]
        T0 = max(lengths)
        starts = [T0 - n for n in lengths]
        reuse, suffixes = [], []
        for u, prefix in enumerate(prefixes):
            entry, lcp = self.store.lookup(prefix)
            r = min(lcp, len(prefix) - 1)
            if entry is not None and r > 0:
                reuse.append((u, entry.kv, r, starts[u]))
                self.stats.cache_hits += 1
                self.stats.reused_tokens += r
            else:
                r = 0
            suffixes.append(prefix[r:])
        cache = BatchKVCache(self._num_layers, starts, T0 + min(max_new, 256), self.device, self._mask_dtype, reuse)
        U, S = len(prefixes), max(len(s) for s in suffixes)
        ids_US = torch.zeros(U, S, dtype=torch.long)
        real_US = torch.zeros(U, S, dtype=torch.bool)
        pos_US = torch.zeros(U, S, dtype=torch.long)
        for u, suf in enumerate(suffixes):
            n = len(suf)
            ids_US[u, S - n :] = torch.tensor(suf, dtype=torch.long)
            real_US[u, S - n :] = True
            pos_US[u, S - n :] = torch.arange(lengths[u] - n, lengths[u])
        self.stats.prefill_tokens += sum(len(s) for s in suffixes)
        ids_US, real_US, pos_US = ids_US.to(self.device), real_US.to(self.device), pos_US.to(self.device)
        slot_cols_S = torch.arange(T0 - S, T0, device=self.device)
        step = max(1, self.prefill_chunk_tokens // U)
        for j0 in range(0, S, step):
            j1 = min(S, j0 + step)
            mask, pos = cache.prefill_inputs(slot_cols_S[j0:j1], real_US[:, j0:j1], pos_US[:, j0:j1])
            logits_UV = self._forward(ids_US[:, j0:j1], mask, pos, cache)
        cache.finish_prefill()
        cache.reuse = []
        if U < len(reqs):
            idx_B = torch.tensor(row_of, dtype=torch.long, device=self.device)
            cache.select_rows(idx_B)
            logits_UV = logits_UV.index_select(0, idx_B)
        return cache, logits_UV

    def _decode(self, reqs, rows, cache: BatchKVCache, logits_BV, params: SamplingParams, generator, stops, results):
        """Sample until every row in ``rows`` ends; fills ``results`` and stores kept KV."""
        budgets = {i: _budget(reqs[i], params) for i in rows}
        out_ids = {i: [] for i in rows}
        out_logp = {i: [] for i in rows}
        out_ent = {i: [] for i in rows}
        live = list(rows)  # chunk index per batch position, -1 once finished (masked until compaction)
        pos_B1 = (torch.tensor([len(reqs[i].prefix_ids) for i in rows], dtype=torch.long) - 1)[:, None].to(self.device)
        if self._fast is not None:
            self._fast.prepare(int(pos_B1.max()) + 1 + max(budgets.values()), self.device)
        seeded = params.temperature > 0 and any(reqs[i].seed is not None for i in rows)
        while True:
            u_B = self._row_uniforms(reqs, live, out_ids, generator) if seeded else None
            tok_B, logp_B, ent_B = sample_next(logits_BV, params.temperature, params.top_p, params.top_k, generator,
                                               uniforms_B=u_B)
            vals = torch.stack([tok_B.double(), logp_B.double(), ent_B.double()]).tolist()
            ended: list[tuple[int, int, str, str | None]] = []  # (batch pos, chunk row, reason, stop string)
            check = []
            for b, i in enumerate(live):
                if i < 0:
                    continue
                t = int(vals[0][b])
                out_ids[i].append(t)
                out_logp[i].append(vals[1][b])
                out_ent[i].append(vals[2][b])
                if t in self._eos:
                    ended.append((b, i, "eos", None))
                else:
                    check.append((b, i))
            if stops and check:
                for (b, i), s in zip(check, stops.check([out_ids[i] for _, i in check])):
                    if s is not None:
                        ended.append((b, i, "stop", s))
            done = {b for b, *_ in ended}
            ended += [(b, i, "length", None) for b, i in check if b not in done and len(out_ids[i]) >= budgets[i]]
            self.stats.generated_tokens += sum(1 for i in live if i >= 0)
            for b, i, reason, stop in ended:
                results[i] = Generation(tuple(out_ids[i]), tuple(out_logp[i]), tuple(out_ent[i]), reason, stop)
                if reqs[i].cache_key is not None:
                    start = int(cache.starts_B[b])
                    if cache.length - start <= self.store.budget_tokens:
                        kv = cache.extract(b, start, cache.length, self.store_device)
                        tokens = list(reqs[i].prefix_ids) + out_ids[i][:-1]
                        self.store.put(reqs[i].cache_key, tokens, kv)
                    else:
                        self.store.release([reqs[i].cache_key])  # a stale shorter entry must not stay under the key
                live[b] = -1
            n_live = sum(1 for i in live if i >= 0)
            if n_live == 0:
                return
            n_dead = len(live) - n_live
            if n_dead and n_dead >= self.compact_fraction * len(live):
                keep = [b for b, i in enumerate(live) if i >= 0]
                idx_B = torch.tensor(keep, dtype=torch.long, device=self.device)
                cache.select_rows(idx_B)
                tok_B, pos_B1 = tok_B.index_select(0, idx_B), pos_B1.index_select(0, idx_B)
                live = [live[b] for b in keep]
                self.stats.compactions += 1
            cache.ensure_capacity(cache.length + 1)
            pos_B1 = pos_B1 + 1
            if self._fast is not None:
                logits_BV = self._fast.step(tok_B, pos_B1[:, 0], cache, cache.decode_mask())
            else:
                logits_BV = self._forward(tok_B[:, None], cache.decode_mask(), pos_B1, cache)
            cache.length += 1
            self.stats.decode_steps += 1


    def _row_uniforms(self, reqs, live, out_ids, generator) -> torch.Tensor:
        """This step's uniform per batch position: a seeded live row's own (seed, tokens so far) draw,
        the call generator's draw for the others (drawn for the whole batch, as without seeds)."""
        u_B = torch.rand(len(live), generator=generator, device=self.device)
        pos = [b for b, i in enumerate(live) if i >= 0 and reqs[i].seed is not None]
        if pos:
            own = counter_uniforms([reqs[live[b]].seed for b in pos], [len(out_ids[live[b]]) for b in pos])
            u_B[torch.tensor(pos, device=self.device)] = own.to(self.device)
        return u_B


def _budget(req: GenerationRequest, params: SamplingParams) -> int:
    return req.max_new_tokens if req.max_new_tokens is not None else params.max_new_tokens


def _check_params(params: SamplingParams) -> None:
    if params.temperature < 0:
        raise ValueError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {params.temperature}")
    if not 0.0 < params.top_p <= 1.0:
        raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise ValueError(f"SamplingParams.top_k must be >= 0 (0 = off), got {params.top_k}")
    if params.max_new_tokens < 0:
        raise ValueError(f"SamplingParams.max_new_tokens must be >= 0, got {params.max_new_tokens}")
