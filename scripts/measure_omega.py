#!/usr/bin/env python
"""Issue 12, item 4: which Omega (and Branching Score) variant finds the decisions that change the outcome?

1. Unless ``--model`` is given: ``appo demo`` (SFT + APPO on arithmetic) into ``OUT/demo``, saving the last two
   checkpoints so the ``previous`` anchor (the policy before the last update, as training uses it) exists.
2. ``appo analyze --paired`` in ``--shards`` parallel processes per anchor (``--data-seed`` 0..shards-1):
   anchors ``previous`` (the second-to-last checkpoint) and ``sft`` (the SFT model), every Omega variant of
   ``appo.analysis.records.OMEGA_VARIANTS`` scored next to the paper's clipped, gamma = 1 Omega.
3. Pools each anchor's shards (``appo.analysis.pooled_summaries``: bootstrap over rollouts) and writes
   ``OUT/pooled_<anchor>.txt`` / ``.json``.

    python scripts/measure_omega.py --out runs/omega            # the measurement in docs/analysis.md
    python scripts/measure_omega.py --out /tmp/o --quick        # a pipeline check in a few minutes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = "proc:arith?n_operands=[2,2]&digits=[1,3]"


def run_demo(out: Path, quick: bool, steps: int, threads: int, extra: list[str]) -> tuple[Path, Path, Path]:
    """Demo with the last two checkpoints kept; returns (policy, previous policy, SFT model)."""
    over = [*extra, f"trainer.total_training_steps={steps}", "trainer.save_freq=1", "trainer.max_actor_ckpt_to_keep=2",
            f"trainer.test_freq={steps}", "data.val_max_samples=32", f"trainer.num_threads={threads}",
            "trainer.logger=[console,jsonl]"]
    cmd = [sys.executable, "-m", "appo", "demo", "--out", str(out), *(["--quick"] if quick else []), *over]
    subprocess.run(cmd, check=True, cwd=ROOT)
    ckpts = sorted((out / "train" / "checkpoints").glob("step_*"))
    if len(ckpts) < 2:
        raise SystemExit(f"need two checkpoints under {out / 'train' / 'checkpoints'}, found {len(ckpts)}")
    return ckpts[-1] / "model", ckpts[-2] / "model", out / "sft" / "sft_model"


def omega_shape(files) -> str:
    """How each Omega variant is distributed over the analysed positions: the share at the clip bounds and
    its Spearman rho with the position (earliness = 1 - t / length)."""
    from appo.analysis import load_positions, spearman

    ps = [p for f in files for p in load_positions(f)]
    early = [1.0 - p.rel_position for p in ps]
    rows = {"omega[clipped,g=1]": [p.omega for p in ps]}
    variants = [k for k in sorted(ps[0].variant_scores) if k.startswith("omega")]
    rows.update({k: [p.variant_scores.get(k) for p in ps] for k in variants})
    lines = [f"{'omega variant':<26} {'at 1.2':>7} {'at 0.8':>7} {'spearman(earliness, .)':>23}"]
    for name, xs in rows.items():
        vals = [x for x in xs if x is not None]
        hi = sum(abs(x - 1.2) < 1e-6 for x in vals) / max(len(vals), 1)
        lo = sum(abs(x - 0.8) < 1e-6 for x in vals) / max(len(vals), 1)
        clipped = "sum" not in name
        rho = spearman(early, xs)[0]
        lines.append(f"{name:<26} {hi if clipped else float('nan'):>7.3f} {lo if clipped else float('nan'):>7.3f} "
                     f"{rho:>+23.3f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", help="analysed policy (skips the demo; then --previous and --sft are needed)")
    ap.add_argument("--previous")
    ap.add_argument("--sft")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=40, help="APPO steps of the demo")
    ap.add_argument("--threads", type=int, default=8, help="torch threads of the demo")
    ap.add_argument("--demo-overrides", default="", help="space-separated extra overrides of the demo")
    ap.add_argument("--shards", type=int, default=6, help="analysis processes per anchor")
    ap.add_argument("--prompts", type=int, default=6, help="prompts per shard")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--positions", type=int, default=8)
    ap.add_argument("--anchors", default="previous,sft")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--pool-only", action="store_true", help="only pool the shards already under --out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.pool_only:
        model = previous = sft = Path("-")
    elif args.model:
        model, previous, sft = Path(args.model), Path(args.previous), Path(args.sft)
    else:
        model, previous, sft = run_demo(out / "demo", args.quick, 2 if args.quick else args.steps, args.threads,
                                        args.demo_overrides.split())
    t_demo = time.time() - t0
    anchors = {"previous": previous, "sft": sft}
    procs = []
    for name in args.anchors.split(",") if not args.pool_only else []:
        for s in range(args.shards):
            d = out / f"an_{name}" / f"shard{s}"
            cmd = [sys.executable, "-m", "appo", "analyze", "--model", str(model), "--anchor-model",
                   str(anchors[name]), "--data", DATA, "--data-seed", str(s), "--prompts", str(args.prompts),
                   "--rollouts", "2", "--positions", str(args.positions), "--samples", str(args.samples), "--paired",
                   "--tools", "python", "--system-prompt", "short", "--max-response-tokens", "96",
                   "--max-tool-calls", "2", "--seed", "0", "--bootstrap", "0", "--num-threads", "1", "--out", str(d)]
            log = open(out / f"an_{name}_shard{s}.log", "w")
            procs.append((name, d, subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)))
    if args.pool_only:  # the shards of an earlier run
        procs = [(name, d, None) for name in args.anchors.split(",")
                 for d in sorted((out / f"an_{name}").glob("shard*"))]
    failed = [str(d) for _, d, p in procs if p is not None and p.wait() != 0]
    t_an = time.time() - t0 - t_demo
    from appo.analysis import format_summary, pooled_summaries

    report = {"demo_s": round(t_demo, 1), "analysis_s": round(t_an, 1), "failed": failed,
              "model": str(model), "anchors": {k: str(v) for k, v in anchors.items()}}
    for name in args.anchors.split(","):
        files = [d / "analysis.json" for n, d, _ in procs if n == name and (d / "analysis.json").is_file()]
        if not files:
            continue
        infl, effect = pooled_summaries(files, bootstrap=args.bootstrap)
        text = format_summary(infl, header=[f"anchor {name}: {len(files)} shards pooled", "target: influence"])
        if effect is not None:
            text += "\n\n" + format_summary(effect, target="effect", header=["target: token effect (paired)"])
        text += "\n\n" + omega_shape(files)
        (out / f"pooled_{name}.txt").write_text(text + "\n")
        (out / f"pooled_{name}.json").write_text(json.dumps(
            {"influence": infl.to_dict(), "token_effect": effect.to_dict() if effect else None}, indent=1))
        print(text, flush=True)
    (out / "measure.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
