#!/usr/bin/env python
"""GPU check: the CUDA paths that the CPU test suite cannot reach, in a few minutes on one GPU.

Checks, in order (each a row of the printed table and of the JSON written to ``--out``):

1. ``hf_engine_logprobs``: HFEngine samples on CUDA from a tiny Llama built locally (no hub); its per-token
   log-probs and entropies must match a teacher-forced forward of the same sequences within ``--tol``.
2. ``train_step``: ``appo.train.trainer.train`` runs ``--steps`` APPO steps on CUDA (tiny config, no tools,
   a length-based reward so every step has a gradient); metrics must be finite, the gradient norm > 0.
3. ``vllm_engine`` (only when ``import vllm`` works and ``--skip-vllm`` is not given): VLLMEngine over the same
   tiny model; its log-probs must match the teacher-forced forward within ``--vllm-tol`` (vLLM runs fp16),
   and again after ``update_weights`` pushes perturbed weights (the trainer's path). Otherwise ``skipped``.

Exits 0 when every check that ran passed, 1 when one failed, 2 when CUDA is unavailable (nothing run).

    python scripts/gpu_check.py --out gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

REWARD_SOURCE = '''def length_reward(prompts, completions, **columns):
    return [(len(c) % 7) / 7 for c in completions]
'''


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Check appo's CUDA paths (HFEngine log-probs, a training step, VLLMEngine if vllm imports) "
                    "on a tiny locally built model. Needs a CUDA GPU; refuses (exit 2) without one.")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    p.add_argument("--steps", type=int, default=1, help="training steps of the train check (default: 1)")
    p.add_argument("--tol", type=float, default=2e-3, help="max |log-prob difference| for HFEngine (fp32)")
    p.add_argument("--vllm-tol", type=float, default=5e-2, help="max |log-prob difference| for vLLM (fp16)")
    p.add_argument("--skip-vllm", action="store_true", help="do not run the vLLM check even if vllm imports")
    p.add_argument("--workdir", type=Path, default=None, help="where to build the model and run (default: a temp dir)")
    return p.parse_args(argv)


def build_model(workdir: Path) -> Path:
    from appo.data.procedural import get_task
    from appo.models.demo_model import build_demo_base
    from appo.prompts import SHORT

    base = workdir / "tiny_base"
    if not (base / "config.json").exists():
        build_demo_base(base, [get_task("arith")], SHORT, hidden_size=64, num_layers=2, num_heads=2)
    return base


def prompts(tokenizer, n: int = 4) -> list[tuple[int, ...]]:
    texts = ["What is 3 + 4?", "Compute 12 * 7.", "What is 9 - 5?", "Add 21 and 13."][:n]
    return [tuple(tokenizer(t)["input_ids"]) or (0,) for t in texts]


def teacher_forced(model, prefix, generated, temperature: float = 1.0):
    """Per generated token: log-prob of the token and entropy of softmax(logits / T), one forward."""
    import torch

    ids = torch.tensor([list(prefix) + list(generated)], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prefix) - 1 : -1].float() / temperature
    logp = torch.log_softmax(logits, -1)
    tok = torch.tensor(list(generated), device=logp.device)
    return logp.gather(-1, tok[:, None])[:, 0].cpu(), -(logp.exp() * logp).sum(-1).cpu()


def check_hf_engine(base: Path, args) -> dict:
    import torch

    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.hf import HFEngine
    from appo.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(base, "float32", args.device)
    engine = HFEngine(model, tok)
    reqs = [GenerationRequest(p, cache_key=f"r{i}") for i, p in enumerate(prompts(tok))]
    gens = engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=32, seed=0))
    fork = GenerationRequest(reqs[0].prefix_ids + gens[0].token_ids[:3])  # reuses kept KV
    gens_fork = engine.generate([fork], SamplingParams(temperature=1.0, max_new_tokens=16, seed=1))
    worst_lp = worst_h = 0.0
    for req, gen in list(zip(reqs, gens)) + [(fork, gens_fork[0])]:
        if not gen.token_ids:
            continue
        lp, h = teacher_forced(model, req.prefix_ids, gen.token_ids)
        worst_lp = max(worst_lp, float((lp - torch.tensor(gen.logprobs)).abs().max()))
        worst_h = max(worst_h, float((h - torch.tensor(gen.entropies)).abs().max()))
    tokens = sum(len(g.token_ids) for g in gens)
    ok = worst_lp <= args.tol and worst_h <= args.tol and tokens > 0 and engine.stats.reused_tokens > 0
    return {"ok": ok, "max_logprob_diff": worst_lp, "max_entropy_diff": worst_h, "tokens": tokens,
            "reused_tokens": engine.stats.reused_tokens, "device": str(engine.device)}


def check_train_step(base: Path, workdir: Path, args) -> dict:
    from appo.config import load_config
    from appo.train.trainer import train

    reward = workdir / "length_reward.py"
    reward.write_text(REWARD_SOURCE)
    run_dir = workdir / "run"
    cfg = load_config(None, [
        f"model.path={base}", f"model.device={args.device}", "data.train_files=[proc:arith]",
        "data.train_batch_size=2", "data.max_response_length=24", "rollout.n=4", "rollout.n_initial=2",
        "rollout.max_batch_size=8", "rollout.system_prompt=short", "actor.ppo_mini_batch_size=1",
        "actor.ppo_micro_batch_size_per_gpu=4", "actor.optim.lr=1e-2", "tools=[]",
        f"reward.name={reward}:length_reward",
        f"trainer.total_training_steps={args.steps}", "trainer.save_freq=-1", "trainer.test_freq=-1",
        "trainer.logger=[jsonl]", f"trainer.default_local_dir={run_dir}"])
    result = train(cfg)
    last = result.history[-1] if result.history else {}
    numbers = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    finite = all(math.isfinite(v) for v in numbers.values())
    grad = float(numbers.get("actor/grad_norm", float("nan")))
    ok = result.steps == args.steps and finite and grad > 0
    return {"ok": ok, "steps": result.steps, "grad_norm": grad, "finite_metrics": finite,
            "step_seconds": numbers.get("timing_s/step")}


def check_vllm(base: Path, args) -> dict:
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        return {"ok": None, "skipped": f"vllm does not import: {e}"}
    import torch

    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.vllm import VLLMEngine
    from appo.models.loading import load_model_and_tokenizer

    policy, tok = load_model_and_tokenizer(base, "float32", args.device)
    engine = VLLMEngine(str(base), policy=policy, logprobs_k=5, gpu_memory_utilization=0.3, dtype="float16",
                        enforce_eager=True, max_model_len=512)
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=0)
    reqs = [GenerationRequest(p) for p in prompts(tok)]

    def worst() -> float:
        gens = engine.generate(reqs, params)
        diffs = [float((teacher_forced(policy, r.prefix_ids, g.token_ids)[0] - torch.tensor(g.logprobs)).abs().max())
                 for r, g in zip(reqs, gens) if g.token_ids]
        return max(diffs, default=float("nan"))

    before = worst()
    with torch.no_grad():  # an in-place "update", as an optimizer step: the next generate pushes it
        policy.lm_head.weight.mul_(1.5)
    after = worst()
    ok = before <= args.vllm_tol and after <= args.vllm_tol and engine.weight_pushes == 1
    return {"ok": ok, "max_logprob_diff": before, "max_logprob_diff_after_push": after,
            "weight_pushes": engine.weight_pushes}


def run_check(name: str, fn, results: dict) -> None:
    t0 = time.perf_counter()
    try:
        row = fn()
    except Exception as e:  # a failed check is a row, the others still run
        row = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    row["seconds"] = round(time.perf_counter() - t0, 2)
    results[name] = row


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine (torch.cuda.is_available() is False); this script "
              "checks the GPU paths and runs only on a CUDA machine. Nothing was run.", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="appo_gpu_check_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results: dict = {"device": torch.cuda.get_device_name(torch.device(args.device)), "torch": torch.__version__}
        base = build_model(workdir)
        checks: dict = {}
        run_check("hf_engine_logprobs", lambda: check_hf_engine(base, args), checks)
        run_check("train_step", lambda: check_train_step(base, workdir, args), checks)
        if args.skip_vllm:
            checks["vllm_engine"] = {"ok": None, "skipped": "--skip-vllm", "seconds": 0.0}
        else:
            run_check("vllm_engine", lambda: check_vllm(base, args), checks)
    results["checks"] = checks
    print(f"{'check':<22} {'result':<8} {'seconds':>8}  details")
    for name, row in checks.items():
        status = "skipped" if row.get("ok") is None else ("ok" if row["ok"] else "FAILED")
        details = {k: v for k, v in row.items() if k not in ("ok", "seconds", "traceback")}
        print(f"{name:<22} {status:<8} {row['seconds']:>8.1f}  {json.dumps(details, default=str)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 1 if any(row.get("ok") is False for row in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
