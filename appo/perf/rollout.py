"""Rollout figures: our engine against ``model.generate``, and our decode step against a bare forward.

``rollout_figures``: tokens/s of ``HFEngine.generate`` and of ``model.generate`` (the path TRL's
``GRPOTrainer`` takes on CPU: left-padded prompts, ``do_sample=True``) on the same prompts (lengths
spread over ``[prompt_len/2, prompt_len]``), the same number of new tokens per row (EOS disabled in the
engine, ``min_new_tokens`` in generate), temperature 1, no top-k/top-p; prefill included in both.

``decode_bound_figures``: per-token-step time of our decode loop (``EngineStats.decode_seconds / new
tokens``: sampling with log-prob and entropy, the fast decode step, bookkeeping) against the bound a
generic loop cannot beat: a bare batched ``model(input_ids [B, 1], cache)`` forward with a KV cache of
the same shape (B rows, context growing from L like ours), nothing else (no sampling, no masks). Both
a ``DynamicCache`` and a ``StaticCache`` forward are timed; the faster one is the bound. The figure is
``bound time / our time`` (1.0 = our whole step costs what the bare forward alone costs).
"""

from __future__ import annotations

import inspect

import torch

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine
from appo.perf.harness import Contender, figure, interleave, timed
from appo.perf.models import left_pad, pad_id, text_prompts


def rollout_figures(model, tok, model_name: str, threads: int, batch_sizes, new_tokens: int, prompt_len: int,
                    repeats: int) -> list[dict]:
    """One figure per batch size: engine tok/s vs ``model.generate`` tok/s (target 3x)."""
    out = []
    engine = HFEngine(model, tok, eos_token_ids=(), max_batch_size=max(batch_sizes), cache_budget_tokens=0,
                      num_threads=threads)
    pad = pad_id(tok)
    for B in batch_sizes:
        ids = text_prompts(tok, B, max(1, prompt_len // 2), prompt_len, seed=B)
        reqs = [GenerationRequest(tuple(p)) for p in ids]
        input_ids, attn = left_pad(ids, pad)

        def run_engine(r: int) -> float:
            params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=r + 1)
            dt = timed(lambda: engine.generate(reqs, params))
            return B * new_tokens / dt

        def run_generate(r: int) -> float:
            torch.manual_seed(r + 1)

            def go():
                with torch.inference_mode():
                    o = model.generate(input_ids=input_ids, attention_mask=attn, do_sample=True, temperature=1.0,
                                       top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                       pad_token_id=pad)
                assert o.shape[1] == input_ids.shape[1] + new_tokens

            return B * new_tokens / timed(go)

        ours, base = Contender("HFEngine.generate", run_engine), Contender("model.generate", run_generate)
        interleave(ours, base, repeats)
        out.append(figure("rollout", f"{model_name} t{threads} B={B}", "tok/s", ours, base, higher_is_better=True,
                          target=3.0, target_text=">= 3x model.generate",
                          details={"model": model_name, "threads": threads, "batch": B, "new_tokens": new_tokens,
                                   "prompt_tokens": [min(map(len, ids)), max(map(len, ids))]}))
    return out


def _bare_forward(model, B: int, ctx: int, steps: int, static: bool, prefix_ids: torch.Tensor) -> float:
    """Seconds per step of ``steps`` bare one-token forwards after a ``ctx``-token prefill."""
    from transformers import DynamicCache, StaticCache

    cache = StaticCache(config=model.config, max_cache_len=ctx + steps + 1) if static else DynamicCache()
    kw = {"cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values": cache}
    with torch.inference_mode():
        model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1, **kw)
        tok = prefix_ids[:, -1:]
        pos = torch.full((B, 1), ctx, dtype=torch.long)

        def go():
            nonlocal pos
            for s in range(steps):
                if static:
                    kw["cache_position"] = torch.tensor([ctx + s])
                model(input_ids=tok, position_ids=pos, use_cache=True, logits_to_keep=1, **kw)
                pos = pos + 1

        return timed(go) / steps


def decode_bound_figures(model, tok, model_name: str, threads: int, batch_sizes, context: int, steps: int,
                         repeats: int) -> list[dict]:
    """One figure per batch size: bare-forward step time / our decode step time (target >= 0.7)."""
    out = []
    engine = HFEngine(model, tok, eos_token_ids=(), max_batch_size=max(batch_sizes), cache_budget_tokens=0,
                      num_threads=threads)
    for B in batch_sizes:
        ids = text_prompts(tok, B, context, context, seed=100 + B)
        reqs = [GenerationRequest(tuple(p)) for p in ids]
        prefix = torch.tensor(ids, dtype=torch.long)
        bound_kind = {}

        def run_ours(r: int) -> float:
            engine.reset_stats()
            engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=steps, seed=r + 1))
            return engine.stats.decode_seconds / steps

        def run_bare(r: int) -> float:
            dyn = _bare_forward(model, B, context, steps, False, prefix)
            sta = _bare_forward(model, B, context, steps, True, prefix)
            bound_kind[r] = "DynamicCache" if dyn <= sta else "StaticCache"
            return min(dyn, sta)

        ours = Contender("engine decode step (sample + fast step + bookkeeping)", run_ours)
        base = Contender("bare model forward, KV cache of the same shape", run_bare)
        interleave(ours, base, repeats)
        out.append(figure("decode", f"{model_name} t{threads} B={B}", "s/step", ours, base, higher_is_better=False,
                          target=0.7, target_text=">= 0.7 of the bare-forward bound",
                          details={"model": model_name, "threads": threads, "batch": B, "context": context,
                                   "steps": steps, "bound_cache": sorted(set(bound_kind.values()))}))
    return out
