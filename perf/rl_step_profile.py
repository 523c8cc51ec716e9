"""Profile one of our RL steps at TRL's shape (issue 26): ``torch.profiler`` op table and ``cProfile``.

``python perf/rl_step_profile.py [grpo|appo] [tiny|smollm2-135m-instruct]``: builds the bench's trainer
(:func:`appo.perf.rl_step._our_trainer`, 1 thread, checkpointing off), runs two warm-up steps, then one step
under ``torch.profiler`` (top 30 ops by self CPU time) and one under ``cProfile`` (top 40 by cumulative
time), printing each step's ``timing_s/*``. Ratios between phases are what it is for; absolute times
follow the machine's load.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from appo.perf.rl_step import _our_trainer


def main(argv: list[str]) -> int:
    alg = argv[0] if argv else "grpo"
    model = argv[1] if len(argv) > 1 else "tiny"
    prompts, rows, max_response = (4, 8, 64) if model == "tiny" else (2, 8, 32)
    torch.set_num_threads(1)
    tr = _our_trainer(model, alg, 1, prompts, rows, max_response, prompts * rows, tempfile.mkdtemp())
    for s in range(2):
        tr.train_step(s)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        m = tr.train_step(2)
    print({k[9:]: round(v, 3) for k, v in m.items() if k.startswith("timing_s/")})
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    pr = cProfile.Profile()
    pr.enable()
    m = tr.train_step(3)
    pr.disable()
    print({k[9:]: round(v, 3) for k, v in m.items() if k.startswith("timing_s/")})
    pstats.Stats(pr).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
