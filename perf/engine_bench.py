"""Benchmark HFEngine: decode throughput versus ``model.generate``, and forks with KV reuse versus re-prefill.

Usage (CPU, the tiny random-init Llama; about a minute on 2 cores)::

    .venv/bin/python perf/engine_bench.py --model tiny --batch-sizes 1,8,32 --new-tokens 64 \
        --repeats 3 --json runs/engine_bench.json

``--model`` is ``tiny`` or a Hugging Face folder (or a ``.gguf`` file, dequantised by transformers).

Sections (all rows forced to equal length: EOS disabled in the engine, ``min_new_tokens`` in generate):

- ``decode``: tokens/s of ``HFEngine.generate`` and of ``model.generate`` (sampling at temperature 1, no
  top-k/top-p, the same prompts and lengths), per batch size; min/median/max over repeats and the
  ratio of medians. The two are timed alternately within each repeat, so machine noise hits both.
- ``fork``: K branch requests continuing K kept rollouts at prefix length P, with continuation C
  (P:C = 1:1 and 4:1). ``reuse`` keeps the rollouts' KV (only the last prefix token is prefilled);
  ``re-prefill`` is the same engine code with no kept caches (``cache_budget_tokens=0``).
- ``compact``: rows with different lengths (per-request budgets spread over [N/8, N]); decode time
  with finished rows dropped at once (``compact_fraction=0``), when a quarter/half of the batch is
  done, or never (kept masked).

Timings on a shared machine are noisy: compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from appo.engine.base import GenerationRequest, SamplingParams
from appo.engine.hf import HFEngine
from appo.perf.models import cut_windows


def _corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 9999), rng.randint(10, 9999)
        out.append(f"What is {a} * {b}? <think>Let me compute.</think>\n<python>print({a} * {b})</python>\n"
                   f"<result>\n{a * b}\n</result>\n<answer>\\boxed{{{a * b}}}</answer>")
        out.append("Who wrote the book? <search>author of the book</search>\n<result>\nAlice Smith wrote it "
                   "in Paris.\n</result>\n<answer>\\boxed{Alice Smith}</answer>")
    return out


def load(name: str):
    """(model, tokenizer) for ``tiny`` or a local HF folder / .gguf file (never the hub)."""
    if name == "tiny":
        from appo.models.tiny import build_tiny_model, train_tokenizer

        tok = train_tokenizer(_corpus(300), vocab_size=512)
        return build_tiny_model(tok, seed=0).eval(), tok
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name)
    kwargs = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
    folder = path.parent if path.suffix == ".gguf" else path
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32, **kwargs)
    return model.eval(), tok


def prompts(tok, n: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    """``n`` token prompts with lengths spread over [lo, hi]."""
    rng = random.Random(seed)
    text = " ".join(_corpus(50, seed=1))
    return cut_windows(tok(text)["input_ids"], n, lo, hi, rng)


def summary(xs: list[float]) -> dict:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_decode(model, tok, batch_sizes, new_tokens, repeats, prompt_len) -> list[dict]:
    engine = HFEngine(model, tok, eos_token_ids=(), max_batch_size=max(batch_sizes), cache_budget_tokens=0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = []
    for B in batch_sizes:
        ids = prompts(tok, B, prompt_len // 2, prompt_len, seed=B)
        reqs = [GenerationRequest(tuple(p)) for p in ids]
        width = max(len(p) for p in ids)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in ids])
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])

        def run_engine(seed):
            out = engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=seed))
            assert all(len(g.token_ids) == new_tokens for g in out)

        def run_generate(seed):
            torch.manual_seed(seed)
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids, attention_mask=attn, do_sample=True, temperature=1.0,
                                     top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     pad_token_id=pad)
            assert out.shape[1] == width + new_tokens

        run_engine(0), run_generate(0)  # warm-up
        te, tg = [], []
        for r in range(repeats):
            te.append(B * new_tokens / timed(lambda: run_engine(r)))
            tg.append(B * new_tokens / timed(lambda: run_generate(r)))
        row = {"batch": B, "new_tokens": new_tokens, "engine_tok_s": summary(te), "generate_tok_s": summary(tg),
               "ratio": statistics.median(te) / statistics.median(tg)}
        rows.append(row)
        print(f"decode  B={B:<3} engine {row['engine_tok_s']['median']:8.0f} tok/s "
              f"[{row['engine_tok_s']['min']:.0f}-{row['engine_tok_s']['max']:.0f}]  generate "
              f"{row['generate_tok_s']['median']:8.0f} tok/s [{row['generate_tok_s']['min']:.0f}-"
              f"{row['generate_tok_s']['max']:.0f}]  ratio {row['ratio']:.2f}x", flush=True)
    return rows


def bench_fork(model, tok, branches, prefix_len, ratios, repeats) -> list[dict]:
    rows = []
    for ratio in ratios:
        cont = max(1, prefix_len // ratio)
        keep = HFEngine(model, tok, eos_token_ids=(), max_batch_size=branches,
                        cache_budget_tokens=branches * (prefix_len + cont + 64))
        fresh = HFEngine(model, tok, eos_token_ids=(), max_batch_size=branches, cache_budget_tokens=0)
        starts = prompts(tok, branches, 16, 16, seed=7)
        rollouts = keep.generate([GenerationRequest(tuple(p), cache_key=f"r{i}") for i, p in enumerate(starts)],
                                 SamplingParams(temperature=1.0, max_new_tokens=prefix_len, seed=0))
        t = prefix_len - 16 - 1
        forks = [GenerationRequest(tuple(p) + g.token_ids[: t + 1]) for p, g in zip(starts, rollouts)]
        params = SamplingParams(temperature=1.0, max_new_tokens=cont, seed=1)
        keep.generate(forks, params), fresh.generate(forks, params)  # warm-up
        keep.reset_stats()
        tr, tp = [], []
        for _ in range(repeats):
            tr.append(timed(lambda: keep.generate(forks, params)))
            tp.append(timed(lambda: fresh.generate(forks, params)))
        assert keep.stats.reused_tokens == repeats * branches * (prefix_len - 1), keep.stats
        row = {"branches": branches, "prefix": prefix_len, "continuation": cont, "reuse_s": summary(tr),
               "reprefill_s": summary(tp), "speedup": statistics.median(tp) / statistics.median(tr)}
        rows.append(row)
        print(f"fork    K={branches} prefix {prefix_len} : cont {cont:<4} reuse {row['reuse_s']['median']:.3f}s  "
              f"re-prefill {row['reprefill_s']['median']:.3f}s  speedup {row['speedup']:.2f}x", flush=True)
    return rows


def bench_compact(model, tok, batch, new_tokens, repeats) -> list[dict]:
    rng = random.Random(0)
    ids = prompts(tok, batch, 16, 48, seed=3)
    reqs = [GenerationRequest(tuple(p), max_new_tokens=rng.randint(max(1, new_tokens // 8), new_tokens)) for p in ids]
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=0)
    settings = {"drop at once": 0.0, "drop at 1/4": 0.25, "drop at 1/2": 0.5, "keep masked": 2.0}
    engines = {k: HFEngine(model, tok, eos_token_ids=(), max_batch_size=batch, cache_budget_tokens=0,
                           compact_fraction=v) for k, v in settings.items()}
    times = {k: [] for k in settings}
    for e in engines.values():
        e.generate(reqs, params)
    for _ in range(repeats):
        for k, e in engines.items():
            times[k].append(timed(lambda: e.generate(reqs, params)))
    rows = []
    for k in settings:
        row = {"setting": k, "compact_fraction": settings[k], "batch": batch, "seconds": summary(times[k])}
        rows.append(row)
        print(f"compact B={batch} {k:<13} {row['seconds']['median']:.3f}s "
              f"[{row['seconds']['min']:.3f}-{row['seconds']['max']:.3f}]", flush=True)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' or a local HF folder / .gguf file")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=48, help="prompt lengths spread over [len/2, len]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--branches", type=int, default=8, help="K branch requests in the fork section")
    ap.add_argument("--fork-prefix", type=int, default=256, help="prefix length P of the forks")
    ap.add_argument("--sections", default="decode,fork,compact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = load(args.model)
    sections = set(args.sections.split(","))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    result = {"model": args.model, "threads": args.threads, "torch": torch.__version__,
              "device": str(next(model.parameters()).device), "argv": sys.argv[1:]}
    if "decode" in sections:
        result["decode"] = bench_decode(model, tok, batch_sizes, args.new_tokens, args.repeats, args.prompt_len)
    if "fork" in sections:
        result["fork"] = bench_fork(model, tok, args.branches, args.fork_prefix, (1, 4), args.repeats)
    if "compact" in sections:
        result["compact"] = bench_compact(model, tok, max(batch_sizes), args.new_tokens, args.repeats)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
