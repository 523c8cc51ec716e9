"""Shared-prefix (tree) layout against the padded layout: one forward + backward of a 32-row batch.

Usage::

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python perf/shared_prefix_time.py tiny 7 out.json

Batches: 4 groups x 8 rows on one prompt each (prompt ``plen`` random tokens, responses 20-64 tokens);
``grpo`` rows are independent, ``appo`` has 4 initial rows and 4 branches per group that copy their
parent's response up to a random split; a long-prompt ``grpo`` case (200 prompt tokens). Both layouts run
alternately (padded, tree) ``repeats`` times with one torch thread; the JSON records, per case, the flop
estimate of :func:`appo.train.shared_prefix.layout_costs` (tree / padded), the measured median ratio,
the per-repeat ratios and the load average before and after.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time

import torch

from appo.perf.models import load_bench_model
from appo.train.batching import collate, split_micro_batches
from appo.train.layout import micro_logprobs
from appo.train.shared_prefix import layout_costs, tree_micro_batches
from appo.types import Rollout


def _rollout(g, u, prompt, resp, **kw):
    n = len(resp)
    return Rollout(group=g, uid=u, prompt_ids=prompt, response_ids=resp, logprobs=(0.0,) * n, entropies=(0.0,) * n,
                   loss_mask=(1,) * n, stop_reason="eos", **kw)


def case_batch(V: int, algorithm: str, plen: int, seed: int = 0):
    """4 groups x 8 rows (see the module docstring)."""
    rng = random.Random(seed)
    rows = []
    for g in range(4):
        prompt = tuple(rng.randrange(V) for _ in range(plen))
        initial = 8 if algorithm == "grpo" else 4
        mine = [_rollout(g, u, prompt, tuple(rng.randrange(V) for _ in range(rng.randint(20, 64))))
                for u in range(initial)]
        for k in range(8 - initial):
            parent = rng.choice(mine)
            split = rng.randrange(len(parent.response_ids))
            tail = tuple(rng.randrange(V) for _ in range(max(1, 64 - split - 1 - rng.randint(0, 20))))
            mine.append(_rollout(g, initial + k, prompt, parent.response_ids[: split + 1] + tail, origin="branch",
                                 parent=parent.uid, split=split))
        rows += mine
    return collate(rows, pad_id=0)


def main(model_name: str = "tiny", repeats: int = 7, out: str | None = None) -> dict:
    torch.set_num_threads(1)
    model, tok = load_bench_model(model_name)
    model.train()
    res = {"model": model_name, "load_before": os.getloadavg(), "cases": []}
    for algorithm, plen in (("grpo", 40), ("appo", 40), ("grpo", 200)):
        batch = case_batch(len(tok), algorithm, plen)
        padded_est, tree_est = layout_costs(batch, model.config)
        layouts = {"padded": split_micro_batches(batch, max_rows=32), "tree": tree_micro_batches(batch, max_rows=32)}

        def run(micro):
            t = time.perf_counter()
            for m in micro:
                logp, _ = micro_logprobs(model, m, 1.0, with_entropy=True)
                logp.sum().backward()
            return time.perf_counter() - t

        times = {k: [] for k in layouts}
        for _ in range(repeats):
            for k, micro in layouts.items():
                times[k].append(run(micro))
        ratio = statistics.median(times["tree"]) / statistics.median(times["padded"])
        res["cases"].append({"algorithm": algorithm, "prompt_len": plen, "rows": 32, "groups": 4,
                             "estimated_tree_over_padded": tree_est / padded_est,
                             "measured_tree_over_padded_median": ratio,
                             "per_repeat_ratio": [t / p for t, p in zip(times["tree"], times["padded"])],
                             "tree_layout": list(layouts["tree"][0].input_ids_GS.shape),
                             "padded_layout": list(layouts["padded"][0].batch.input_ids_BL.shape)})
        print(f"{algorithm} prompt {plen}: estimate {tree_est / padded_est:.3f}, measured {ratio:.3f}", flush=True)
    res["load_after"] = os.getloadavg()
    if out:
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tiny", int(sys.argv[2]) if len(sys.argv) > 2 else 7,
         sys.argv[3] if len(sys.argv) > 3 else None)
