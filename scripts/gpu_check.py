#!/usr/bin/env python
"""GPU check: the CUDA paths the CPU test suite cannot reach, then speed against ``model.generate`` and TRL,
in one run of a few minutes on one GPU.

Correctness (a tiny Llama built locally, no hub), each a row of the printed table and of the JSON:

1. ``engine_fp32`` / ``engine_bf16``: HFEngine samples; its per-token log-probs and entropies must match a
   teacher-forced forward of the same sequences (``--tol`` fp32, ``--bf16-tol`` bf16); a fork that reuses
   kept KV must match the same fork recomputed by a fresh engine (same tokens in fp32, log-probs within tol).
2. ``train_bf16``: one whole APPO ``Trainer.train_step`` in bf16 (finite metrics, gradient > 0), then 5 more PPO
   updates on the batch that step trained on (old log-probs and advantages kept): the policy loss must decrease.
   Also recorded: the share of weights one AdamW step at lr 1e-6 changes at all, bf16 vs fp32 (rounding).
   ``train_mixed``: the same with ``model.dtype=float32 model.compute_dtype=bfloat16`` (fp32 master weights,
   bf16 autocast): the step and the 5 updates as above, and the share of weights one AdamW step at lr 1e-6
   changes must be above 90% (bf16 weights: a few %).
3. ``checkpoint_resume``: 1 step saved, a new trainer resumes it: weights and optimizer state bitwise equal,
   the sampler where it was, and the next step runs; the gap to an uninterrupted 2-step run is recorded.
4. ``vllm_engine`` (when ``import vllm`` works and ``--skip-vllm`` is not given; else ``skipped``).
5. ``fsdp2_world1`` (it joins, then leaves, a one-process NCCL/gloo group): ``Trainer.train_step`` with
   ``actor.strategy=fsdp2`` (sharded training copy, weights pulled back) against plain training from the
   same start: weights after one step within ``--fsdp-tol``; then an FSDP2 save and resume.

Speed (``--skip-speed`` leaves it out; no section, nor RL-step round, starts once ``--budget-s`` seconds
have passed; the RL-step rows then hold the repeats that finished):

6. ``ceilings``: the device's bf16 matmul TFLOP/s and copy GB/s, measured (fractions are taken against them
   and against the datasheet).
7. ``speed_rollout``: a ~125M Llama (SmolLM2-135M's shape, random init, 32k BPE from the stdlib: see
   :mod:`appo.perf.gpu`), ``--rollout-rows`` rows x ``--new-tokens`` new tokens, EOS disabled on both sides
   (random weights rarely emit it; ``min_new_tokens`` in generate): HFEngine vs ``model.generate`` tokens/s.
8. ``speed_rl_step``: one whole RL step, ours (grpo, appo) vs TRL ``GRPOTrainer``, same model/prompts/reward
   (:mod:`appo.perf.rl_step`), bf16 on the GPU.

``--cpu-dry-run`` runs every row at toy sizes on the CPU (fp32 where the GPU run uses bf16 for speed; the
bf16 correctness rows stay bf16). Exits 0 when every row that ran passed, 1 when one failed, 2 when CUDA is
unavailable and ``--cpu-dry-run`` was not given (nothing run). The JSON is rewritten after every row.

The rows live in ``scripts/gpu_checks/`` (one module per job: report, common helpers, engine, training,
FSDP2, speed); this file parses the arguments and runs them in order.

    PYTHONUNBUFFERED=1 python scripts/gpu_check.py --out gpu_h200.json
    python scripts/gpu_check.py --cpu-dry-run --out /tmp/dry.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the rows: scripts/gpu_checks/, one module per job

from gpu_checks.common import DRY_SIZES, GPU_SIZES, REWARD_SOURCE, Sizes, build_tiny  # noqa: E402
from gpu_checks.engine_rows import check_engine, check_vllm  # noqa: E402
from gpu_checks.fsdp2_row import check_fsdp2  # noqa: E402
from gpu_checks.report import Report  # noqa: E402
from gpu_checks.speed_rows import speed_ceilings, speed_rl_step, speed_rollout  # noqa: E402
from gpu_checks.train_rows import check_checkpoint, check_train_bf16  # noqa: E402

__all__ = ["DRY_SIZES", "GPU_SIZES", "Report", "Sizes", "main", "parse_args"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Check appo's CUDA paths (HFEngine log-probs and KV reuse, bf16 training, checkpoint resume, "
                    "FSDP2, VLLMEngine if vllm imports) and time HFEngine vs model.generate and an RL step vs TRL. "
                    "Needs a CUDA GPU; refuses (exit 2) without one unless --cpu-dry-run.")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here (after every row)")
    p.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run every row at toy sizes on the CPU (tests the script; no GPU figures)")
    p.add_argument("--budget-s", type=float, default=330.0,
                   help="no speed section (nor RL-step round) starts after this many seconds (default: 330)")
    p.add_argument("--skip-speed", action="store_true", help="correctness rows only")
    p.add_argument("--only", default=None, help="comma-separated row names to run (default: all)")
    p.add_argument("--tol", type=float, default=2e-3, help="max |log-prob or entropy difference|, fp32")
    p.add_argument("--bf16-tol", type=float, default=6e-2, help="max |log-prob or entropy difference|, bf16")
    p.add_argument("--fsdp-tol", type=float, default=1e-4, help="max |weight difference| FSDP2 vs plain (fp32)")
    p.add_argument("--vllm-tol", type=float, default=5e-2, help="max |log-prob difference| for vLLM (fp16)")
    p.add_argument("--skip-vllm", action="store_true", help="do not run the vLLM check even if vllm imports")
    p.add_argument("--workdir", type=Path, default=None, help="where to build the models and run (default: temp)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.cpu_dry_run:
        args.device = "cpu"
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    elif not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine (torch.cuda.is_available() is False); this script "
              "checks the GPU paths and runs only on a CUDA machine (or pass --cpu-dry-run). Nothing was run.",
              file=sys.stderr)
        return 2
    sizes = DRY_SIZES if args.cpu_dry_run else GPU_SIZES
    speed_dtype = "float32" if args.cpu_dry_run else "bfloat16"
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the log keeps one line per event
    meta = {"device": "cpu (dry run)" if args.cpu_dry_run else torch.cuda.get_device_name(torch.device(args.device)),
            "torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
            "python": sys.version.split()[0], "sizes": dataclasses.asdict(sizes), "argv": sys.argv[1:],
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": args.budget_s}
    try:
        import trl

        meta["trl"] = trl.__version__
    except Exception:  # noqa: BLE001
        meta["trl"] = None
    only = set(args.only.split(",")) if args.only else None
    report = Report(args.out, meta, only)
    report.log(f"gpu_check on {meta['device']} (torch {meta['torch']}, transformers {meta['transformers']}, "
               f"trl {meta['trl']})")
    with tempfile.TemporaryDirectory(prefix="appo_gpu_check_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        reward = workdir / "length_reward.py"
        reward.write_text(REWARD_SOURCE)
        base = build_tiny(workdir)
        report.run("engine_fp32", lambda: check_engine(base, "float32", args.tol, args, sizes))
        report.run("engine_bf16", lambda: check_engine(base, "bfloat16", args.bf16_tol, args, sizes))
        report.run("train_bf16", lambda: check_train_bf16(base, workdir, reward, args))
        report.run("train_mixed", lambda: check_train_bf16(base, workdir, reward, args, mixed=True))
        report.run("checkpoint_resume", lambda: check_checkpoint(base, workdir, reward, args))
        if args.skip_vllm or args.cpu_dry_run:
            report.skip("vllm_engine", "--skip-vllm" if args.skip_vllm else "CPU dry run")
        else:
            report.run("vllm_engine", lambda: check_vllm(base, args))
        report.run("fsdp2_world1", lambda: check_fsdp2(base, workdir, reward, args))
        if args.skip_speed:
            for name in ("ceilings", "speed_rollout", "speed_rl_step"):
                report.skip(name, "--skip-speed")
        else:
            def speed(name: str, fn) -> dict:
                if report.elapsed() >= args.budget_s:
                    report.skip(name, f"time budget: {report.elapsed():.0f} s >= --budget-s {args.budget_s:.0f}")
                    return {}
                return report.run(name, fn)

            ceilings = speed("ceilings", lambda: speed_ceilings(args, sizes))
            model_dir = workdir / "speed_model"
            if report.elapsed() < args.budget_s and (only is None or only & {"speed_rollout", "speed_rl_step"}):
                report.log("building the speed model (BPE on the stdlib source + random-init Llama) ...")
                from appo.perf.gpu import build_speed_model

                build_speed_model(model_dir, vocab_size=sizes.vocab, shape=sizes.shape,
                                  corpus_chars=sizes.corpus_chars)
            speed("speed_rollout", lambda: speed_rollout(model_dir, args, sizes, speed_dtype, ceilings))
            speed("speed_rl_step", lambda: speed_rl_step(model_dir, args, sizes, speed_dtype,
                                                         report.t0 + args.budget_s, report.log))
    report.table()
    report.write()
    return 1 if any(row.get("ok") is False for row in report.rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
