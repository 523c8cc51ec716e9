"""Memory figure: peak RSS of one rollout (``rows`` x ``tokens`` new tokens) measured in a fresh subprocess.

The child loads the model, records its RSS, generates ``rows`` rows of exactly ``tokens`` new tokens each
(EOS disabled) from short task prompts with the default engine settings, and prints JSON with its peak
RSS (``VmHWM``, which covers the whole child: interpreter, torch, weights, KV cache, logits). Target for
SmolLM2-135M, 32 x 512: under 4 GiB. Run directly: ``python -m appo.perf.memory --model tiny``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def memory_figure(model_name: str, rows: int, tokens: int, threads: int, limit_gib: float = 4.0,
                  timeout_s: float = 1800) -> dict:
    """Run the child and turn its report into a figure record (``met``: peak RSS < ``limit_gib``)."""
    cmd = [sys.executable, "-m", "appo.perf.memory", "--model", model_name, "--rows", str(rows), "--tokens",
           str(tokens), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = rep["peak_rss_mb"]
    return {"section": "memory", "name": f"{model_name} t{threads} rollout {rows}x{tokens}", "unit": "MiB",
            "higher_is_better": False, "repeats": 1, "ours_name": "HFEngine.generate in a fresh process",
            "ours": {"min": peak, "median": peak, "max": peak}, "ours_peak_rss_mb": peak, "baseline_name": None,
            "baseline": None, "baseline_peak_rss_mb": None, "speedup": None, "speedup_min": None,
            "speedup_max": None, "target": limit_gib * 1024, "target_text": f"peak RSS < {limit_gib:g} GiB",
            "met": peak < limit_gib * 1024, "details": rep}


def _child(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.hf import HFEngine
    from appo.perf.harness import _read_kb
    from appo.perf.models import load_bench_model, text_prompts

    model, tok = load_bench_model(args.model)
    loaded_mb = (_read_kb("VmRSS") or 0) / 1024
    engine = HFEngine(model, tok, eos_token_ids=(), max_batch_size=args.rows, num_threads=args.threads)
    reqs = [GenerationRequest(tuple(p)) for p in text_prompts(tok, args.rows, 24, 48, seed=5)]
    t = time.perf_counter()
    out = engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=args.tokens, seed=0))
    dt = time.perf_counter() - t
    assert all(len(g.token_ids) == args.tokens for g in out)
    return {"model": args.model, "rows": args.rows, "tokens": args.tokens, "threads": args.threads,
            "rss_after_load_mb": round(loaded_mb, 1), "peak_rss_mb": round((_read_kb("VmHWM") or 0) / 1024, 1),
            "kv_bytes_per_token": engine.kv_bytes_per_token, "seconds": round(dt, 2),
            "tok_s": round(args.rows * args.tokens / dt, 1)}


if __name__ == "__main__":
    print(json.dumps(_child()))
