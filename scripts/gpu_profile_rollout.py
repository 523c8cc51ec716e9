#!/usr/bin/env python
"""Where does our RL step's generation spend its time on the GPU? (the follow-up to gpu_check's RL-step row)

Builds gpu_check's speed model (125M, random weights), then:

1. ``sdpa``: decode-shaped attention alone (64 rows, 9 query / 3 KV heads, 300 keys, a padding mask with
   holes) in four forms, ms per call (is the attention kernel itself slow?);
2. ``trainer``: one grpo ``Trainer.train_step`` at 8 prompts x 8 rows x 256 tokens under cProfile, after a
   warm-up step (``--skip-trainer`` leaves it out): the step's phases and the host functions it waits in;
3. ``engine_alone``: the trainer's own engine on 64 rows (8 prompts x 8), prompts of equal and of mixed
   lengths, with the agent loop's stop strings and per-row seeds, each timed after a warm-up.

Prints the tables; ``--out`` writes them as JSON. ``--device cpu --small`` runs it all at toy sizes (CI).

    PYTHONUNBUFFERED=1 python scripts/gpu_profile_rollout.py --out gpu_profile.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check import DRY_SIZES  # noqa: E402  (``--small`` builds gpu_check's CPU dry-run speed model)


def timed(fn, sync, repeats: int = 1) -> float:
    """Seconds per call of ``fn`` (synchronised before and after)."""
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t) / repeats


def sdpa_bench(device: str, sync, B: int = 64, Hq: int = 9, Hk: int = 3, L: int = 300, D: int = 64) -> dict:
    """ms per decode-shaped ``scaled_dot_product_attention`` call, four forms, and the largest difference
    between the grouped-query forms."""
    F = torch.nn.functional
    dt = torch.bfloat16 if device == "cuda" else torch.float32
    q = torch.randn(B, Hq, 1, D, device=device, dtype=dt)
    k = torch.randn(B, Hk, L, D, device=device, dtype=dt)
    v = torch.randn_like(k)
    mask = torch.ones(B, 1, 1, L, dtype=torch.bool, device=device)
    mask[::2, ..., :7] = False
    G = Hq // Hk
    forms = {
        "mask+enable_gqa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True),
        "mask+grouped_q": lambda: F.scaled_dot_product_attention(q.reshape(B, Hk, G, D), k, v, attn_mask=mask),
        "mask+repeat_kv": lambda: F.scaled_dot_product_attention(q, k.repeat_interleave(G, 1),
                                                                 v.repeat_interleave(G, 1), attn_mask=mask),
        "nomask+enable_gqa": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
    }
    res = {}
    for name, fn in forms.items():
        timed(fn, sync, 5)
        res[f"{name}_ms"] = timed(fn, sync, 200) * 1e3
    a = forms["mask+enable_gqa"]().reshape(B, Hq * D).float()
    b = forms["mask+grouped_q"]().reshape(B, Hq * D).float()
    res["max_diff_grouped_vs_gqa"] = float((a - b).abs().max())
    return res


def profile_trainer_step(tr, sync) -> dict:
    """One warm-up ``train_step``, then one under cProfile: phases, lengths, engine counters, top functions."""
    out = {"warm_s": timed(lambda: tr.train_step(0), sync)}
    pr = cProfile.Profile()
    pr.enable()
    t = time.perf_counter()
    m = tr.train_step(1)
    sync()
    out["step_s"] = time.perf_counter() - t
    pr.disable()
    out["timing"] = {k: v for k, v in m.items() if k.startswith("timing_s/")}
    out["lengths"] = {k: m[k] for k in m if k.startswith(("response_length", "prompt_length", "rollout/"))}
    out["engine_stats"] = dict(vars(tr.c.engine.stats)) if hasattr(tr.c.engine, "stats") else None
    for key, n in (("tottime", 35), ("cumulative", 50)):
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats(key).print_stats(n)
        out[f"cprofile_{key}"] = s.getvalue()
    return out


def engine_alone(tr, new_tokens: int, sync) -> dict:
    """The trainer's engine on 64 rows (8 prompts x 8), equal and mixed prompt lengths, timed after a warm-up."""
    from appo.engine.base import GenerationRequest, SamplingParams

    eng, tok = tr.c.engine, tr.c.tokenizer
    rng = random.Random(0)
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, stop=("</python>", "</search>", "</answer>"))
    res = {}
    for lens in ("equal", "mixed"):
        prompts = [tuple(rng.randrange(len(tok)) for _ in range(48 if lens == "equal" else rng.randint(40, 56)))
                   for _ in range(8)]
        reqs = [GenerationRequest(prompts[i // 8], seed=1000 + i) for i in range(64)]
        eng.generate(reqs, params)  # warm-up
        sync()
        steps0, t = eng.stats.decode_steps, time.perf_counter()
        gens = eng.generate(reqs, params)
        sync()
        dt, steps = time.perf_counter() - t, eng.stats.decode_steps - steps0
        res[f"{lens}_prompts"] = {"s": dt, "tokens": sum(len(g.token_ids) for g in gens), "decode_steps": steps,
                                  "ms_per_step": dt / max(1, steps) * 1e3}
        print(f"{lens}_prompts", res[f"{lens}_prompts"], flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--small", action="store_true", help="toy sizes (a CPU dry run)")
    p.add_argument("--skip-trainer", action="store_true", help="only the attention and engine timings")
    a = p.parse_args(argv)
    from appo.perf.gpu import build_speed_model
    from appo.perf.rl_step import _our_trainer

    def sync():
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    tmp = Path(tempfile.mkdtemp(prefix="appo_gpu_profile_"))
    small = {"vocab_size": DRY_SIZES.vocab, "shape": DRY_SIZES.shape, "corpus_chars": DRY_SIZES.corpus_chars}
    model_dir = build_speed_model(tmp / "model", **(small if a.small else {}))
    new_tokens = 16 if a.small else 256
    out = {"sdpa": sdpa_bench(a.device, sync)}
    print("sdpa", out["sdpa"], flush=True)
    tr = _our_trainer(str(model_dir), "grpo", 1, 8, 8, new_tokens, 32, str(tmp / "run"), device=a.device,
                      dtype="bfloat16" if a.device.startswith("cuda") else "float32")
    if not a.skip_trainer:
        out["trainer"] = profile_trainer_step(tr, sync)
        print(out["trainer"]["cprofile_tottime"], out["trainer"]["cprofile_cumulative"], sep="\n")
    out["engine_alone"] = engine_alone(tr, new_tokens, sync)
    if a.out:
        a.out.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
