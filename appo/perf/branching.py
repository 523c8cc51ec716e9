"""Branching figure: K continuations forked with KV reuse against the same continuations re-prefilled.

Set-up (APPO's branch step): K initial rollouts are generated with cache keys, so the engine keeps
their KV. Each is then forked at the position where its prefix (prompt + response[: t + 1]) is P tokens
long, and the K forks are continued for C tokens, in one call (one batch):

- ``reuse``: the engine that kept the rollouts; each fork copies P - 1 tokens of KV from the store and
  runs only its last prefix token;
- ``re-prefill``: the same engine code with no kept caches (``cache_budget_tokens=0``), so each fork's
  whole prefix is prefilled. Same requests, same batch, same seeds, same sampling: only the reuse differs.

Reuse can at best remove the prefill, so the speedup is capped by ``(prefill + decode) / decode`` of
the re-prefill run; ``details.cap`` records that cap from the re-prefill run's own timers.
"""

from __future__ import annotations

import statistics

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine
from appo.perf.harness import Contender, figure, interleave, timed
from appo.perf.models import text_prompts


def branching_figures(model, tok, model_name: str, threads: int, branches: int, prefix_len: int, ratios,
                      repeats: int, prompt_len: int = 16) -> list[dict]:
    """One figure per prefix:continuation ratio (``P:C``); target >= 2x at 1:1."""
    out = []
    for ratio in ratios:
        cont = max(1, prefix_len // ratio)
        keep = HFEngine(model, tok, eos_token_ids=(), max_batch_size=branches, num_threads=threads,
                        cache_budget_tokens=branches * (prefix_len + cont + 64))
        fresh = HFEngine(model, tok, eos_token_ids=(), max_batch_size=branches, cache_budget_tokens=0,
                         num_threads=threads)
        starts = text_prompts(tok, branches, prompt_len, prompt_len, seed=7)
        rollouts = keep.generate([GenerationRequest(tuple(p), cache_key=f"r{i}") for i, p in enumerate(starts)],
                                 SamplingParams(temperature=1.0, max_new_tokens=prefix_len, seed=0))
        t = prefix_len - prompt_len - 1
        forks = [GenerationRequest(tuple(p) + g.token_ids[: t + 1]) for p, g in zip(starts, rollouts)]
        caps = []

        def run_reuse(r: int) -> float:
            keep.reset_stats()
            dt = timed(lambda: keep.generate(forks, SamplingParams(temperature=1.0, max_new_tokens=cont, seed=r + 1)))
            assert keep.stats.reused_tokens == branches * (prefix_len - 1), keep.stats
            return dt

        def run_prefill(r: int) -> float:
            fresh.reset_stats()
            dt = timed(lambda: fresh.generate(forks, SamplingParams(temperature=1.0, max_new_tokens=cont, seed=r + 1)))
            s = fresh.stats
            caps.append((s.prefill_seconds + s.decode_seconds) / s.decode_seconds)
            return dt

        ours, base = Contender("fork with KV reuse", run_reuse), Contender("same forks, prefix re-prefilled",
                                                                           run_prefill)
        interleave(ours, base, repeats)
        out.append(figure("branching", f"{model_name} t{threads} {ratio}:1", "s", ours, base, higher_is_better=False,
                          target=2.0 if ratio == 1 else None,
                          target_text=">= 2x re-prefill at 1:1" if ratio == 1 else "",
                          details={"model": model_name, "threads": threads, "branches": branches,
                                   "prefix": prefix_len, "continuation": cont,
                                   "cap": statistics.median(caps[1:] or caps)}))
    return out
