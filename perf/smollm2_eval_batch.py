"""Which batch size is fastest for greedy held-out evaluation of SmolLM2 on HFEngine, measured on real work.

One model, one held-out set, consecutive chunks of the sizes in ``--plan`` (default 25, 50, 100, 25: 200
problems), each chunk one ``eval_chunk`` call of ``scripts/smollm2_demo.py`` (the eval stage's agent loop,
Python tool, greedy) on an engine whose ``max_batch_size`` is the largest chunk, so a chunk of B problems is
decoded as one batch of B. Per chunk it records the wall time, the process CPU time (one thread: the CPU time is
what a batch size changes, the wall time also carries the machine's load), the engine's generated tokens and
decode steps. The rows are the evaluation itself (greedy: the batch does not change the tokens except where two
candidates tie within fp32 rounding), written as the eval stage writes them, ``<out>/eval_<name>_<set>.json``,
so the report and the paired comparisons read them; the timings go to ``<out>/eval_batch_<name>_<set>.json``.

What it leaves out: the chunks hold different problems, so per-problem cost also varies with the problems;
compare CPU seconds per generated token (which normalizes response length) as well as per problem.

    OMP_NUM_THREADS=1 nice -n 19 python perf/smollm2_eval_batch.py --out runs/smollm2 --name grpo_s1 --set wordnew
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "smollm2_demo.py"


def _demo():
    spec = importlib.util.spec_from_file_location("smollm2_demo", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/smollm2")
    ap.add_argument("--name", required=True, help="a --models entry of scripts/smollm2_demo.py (grpo_s1, x=path)")
    ap.add_argument("--set", default="wordnew", choices=("wordnew", "gsm8k", "word"))
    ap.add_argument("--plan", default="25,50,100,25", help="chunk sizes, in order (problems per batch)")
    ap.add_argument("--max-tokens", type=int, default=160)
    args = ap.parse_args(argv)
    demo = _demo()
    from appo.data.sources import load_examples
    from appo.tools.registry import build_tools

    out = Path(args.out)
    plan = [int(x) for x in args.plan.split(",")]
    (name, path), = demo.model_paths(out, [args.name]).items()
    spec = "gsm8k" if args.set == "gsm8k" else str(out / "data" / demo.SET_FILES[args.set])
    examples = load_examples([spec], "test", sum(plan))
    engine, tok = demo.load_engine(path, max(plan))
    tools = build_tools(["python"])
    res = {"model": path, "set": args.set, "max_tokens": args.max_tokens, "rows": [], "ids_checked": 0,
           "id_mismatches": []}
    timings = []
    start = 0
    try:
        for size in plan:
            engine.reset_stats()
            w0, c0 = time.perf_counter(), time.process_time()
            rows, checked, mism = demo.eval_chunk(engine, tok, examples[start: start + size], start,
                                                  args.max_tokens, name != "base", tools)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            res["rows"] += rows
            res["ids_checked"] += checked
            res["id_mismatches"] += mism
            (out / f"eval_{name}_{args.set}.json").write_text(json.dumps(res, indent=1))
            st = engine.stats
            timings.append({"start": start, "batch": size, "problems": len(rows), "wall_s": round(wall, 1),
                            "cpu_s": round(cpu, 1), "generated_tokens": st.generated_tokens,
                            "decode_steps": st.decode_steps, "cpu_s_per_problem": round(cpu / len(rows), 2),
                            "cpu_ms_per_token": round(1000 * cpu / max(st.generated_tokens, 1), 2),
                            "acc": sum(r["acc"] for r in rows) / len(rows)})
            (out / f"eval_batch_{name}_{args.set}.json").write_text(json.dumps(timings, indent=1))
            print(f"[batch {size}] rows {start}-{start + len(rows) - 1}: " + json.dumps(timings[-1]),
                  file=sys.stderr, flush=True)
            start += size
    finally:
        for t in tools:
            t.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
