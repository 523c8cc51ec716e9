"""Per-step error profile of a model on the ``depth`` task (issue 24): sample each held-out problem at
``--temperature`` (default 1) with the Python tool, find each response's first wrong step
(:func:`appo.data.procedural.depth.first_wrong_step`) and print the conditional error rate of every step, of
the answer, and at the decisive step, one row per decisive depth.

    python scripts/depth_profile.py runs/study/depth_middle/sft/sft_model --depths 3 --problems 32 --samples 2

(each depth task has its own start model; give the depths it was SFT'd on)
"""

from __future__ import annotations

import argparse
import json

from appo.data.procedural.depth import error_profile
from appo.data.sources import load_examples
from appo.eval import evaluate_benchmarks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--depths", default="1,3,5")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="sampling temperature (the study's rollout.temperature)")
    ap.add_argument("--json", default=None, help="also write the profiles here")
    args = ap.parse_args()
    profiles = {}
    for d in args.depths.split(","):
        spec = f"proc:depth?steps={args.steps}&depth=[{d}]"
        res = evaluate_benchmarks(args.model, [spec], limit=args.problems, tools=["python", "search"],
                                  system_prompt="short", max_response_tokens=192, max_tool_calls=args.steps + 1,
                                  temperature=args.temperature, n=args.samples, seed=args.seed, device="cpu")
        by_id = {e.id: e for e in load_examples([spec], "test", args.problems, args.seed)}
        profiles[d] = p = error_profile([by_id[r.id] for r in res.rows], [r.response for r in res.rows])
        steps = " ".join(f"s{k}={100 * p[f'step_{k}']:.0f}%" for k in range(1, args.steps + 1))
        ops = " ".join(f"s{k}={100 * p[f'op_step_{k}']:.0f}%" for k in range(1, args.steps + 1))
        print(f"decisive step {d}: acc {100 * p['acc']:.1f}% | error per step {steps} answer={100 * p['answer']:.0f}% "
              f"| at the decisive step {100 * p['decisive']:.1f}% | wrong operator per step {ops} (n={int(p['n'])})",
              flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(profiles, fh, indent=1)


if __name__ == "__main__":
    main()
