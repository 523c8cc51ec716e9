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
   :mod:`appo.bench.gpu`), ``--rollout-rows`` rows x ``--new-tokens`` new tokens, EOS disabled on both sides
   (random weights rarely emit it; ``min_new_tokens`` in generate): HFEngine vs ``model.generate`` tokens/s.
8. ``speed_rl_step``: one whole RL step, ours (grpo, appo) vs TRL ``GRPOTrainer``, same model/prompts/reward
   (:mod:`appo.bench.rl_step`), bf16 on the GPU.

``--cpu-dry-run`` runs every row at toy sizes on the CPU (fp32 where the GPU run uses bf16 for speed; the
bf16 correctness rows stay bf16). Exits 0 when every row that ran passed, 1 when one failed, 2 when CUDA is
unavailable and ``--cpu-dry-run`` was not given (nothing run). The JSON is rewritten after every row.

    PYTHONUNBUFFERED=1 python scripts/gpu_check.py --out gpu_h200.json
    python scripts/gpu_check.py --cpu-dry-run --out /tmp/dry.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

REWARD_SOURCE = '''def length_reward(prompts, completions, **columns):
    return [(len(c) % 7) / 7 for c in completions]
'''


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of one mode (GPU run or CPU dry run)."""

    engine_tokens: int = 32
    rollout_rows: int = 128
    prompt_len: int = 256
    new_tokens: int = 256
    rollout_repeats: int = 2
    rl_prompts: int = 8
    rl_rows: int = 8
    rl_response: int = 256
    rl_micro_rows: int = 32
    rl_repeats: int = 2
    vocab: int = 32768
    shape: dict | None = None  # None: SmolLM2-135M's
    corpus_chars: int = 6_000_000
    matmul_n: int = 8192
    copy_bytes: int = 2 << 30


GPU_SIZES = Sizes()
DRY_SIZES = Sizes(engine_tokens=12, rollout_rows=4, prompt_len=16, new_tokens=8, rollout_repeats=1, rl_prompts=2,
                  rl_rows=2, rl_response=8, rl_micro_rows=2, rl_repeats=1, vocab=600,
                  shape={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "num_key_value_heads": 1, "intermediate_size": 128},
                  corpus_chars=200_000, matmul_n=256, copy_bytes=1 << 22)


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


# ------------------------------------------------------------------------------------------- the report
class Report:
    """Rows in order; each printed when done and the JSON rewritten, so a killed run keeps what finished."""

    def __init__(self, out: Path | None, meta: dict, only: set[str] | None):
        self.out, self.meta, self.only = out, meta, only
        self.rows: dict[str, dict] = {}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def run(self, name: str, fn) -> dict:
        """Run ``fn()`` as row ``name``; an exception makes a failed row and the run goes on."""
        if self.only is not None and name not in self.only:
            return {}
        self.log(f"{name} ...")
        t = time.perf_counter()
        try:
            row = fn()
        except Exception as e:  # noqa: BLE001 - a failed check is a row, the others still run
            row = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(row["traceback"], flush=True)
        row["seconds"] = round(time.perf_counter() - t, 2)
        self.rows[name] = row
        self.log(f"{name}: {status(row)} {json.dumps(brief(row), default=str)[:1500]}")
        self.write()
        return row

    def skip(self, name: str, reason: str) -> None:
        if self.only is not None and name not in self.only:
            return
        self.rows[name] = {"ok": None, "skipped": reason, "seconds": 0.0}
        self.log(f"{name}: skipped ({reason})")
        self.write()

    def write(self) -> None:
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {**self.meta, "elapsed_s": round(self.elapsed(), 1), "checks": self.rows}
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
        os.replace(tmp, self.out)

    def table(self) -> None:
        print(f"\n{'check':<20} {'result':<8} {'seconds':>8}  details", flush=True)
        for name, row in self.rows.items():
            print(f"{name:<20} {status(row):<8} {row['seconds']:>8.1f}  {json.dumps(brief(row), default=str)[:400]}",
                  flush=True)


def status(row: dict) -> str:
    return "skipped" if row.get("ok") is None else ("ok" if row["ok"] else "FAILED")


def brief(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("ok", "seconds", "traceback", "figures")}


def _jsonable(x):
    return str(x)  # anything json cannot write (paths, dtypes) as its text


# ------------------------------------------------------------------------------------------- helpers
def build_tiny(workdir: Path) -> Path:
    """The correctness model: the demo's tokenizer with a hidden-64, 2-layer Llama."""
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


def max_diff(a, b) -> float:
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max()) if a.numel() else 0.0


def train_cfg(base: Path, run_dir: Path, reward: Path, device: str, dtype: str, *extra: str):
    """A tiny APPO run on the arithmetic prompts, no tools, a length reward (every step has a gradient)."""
    from appo.config import load_config

    return load_config(None, [
        f"model.path={base}", f"model.device={device}", f"model.dtype={dtype}", "data.train_files=[proc:arith]",
        "data.train_batch_size=2", "data.max_response_length=24", "rollout.n=4", "rollout.n_initial=2",
        "rollout.max_batch_size=8", "rollout.system_prompt=short", "actor.ppo_mini_batch_size=2",
        "actor.ppo_micro_batch_size_per_gpu=4", "actor.optim.lr=1e-3", "tools=[]",
        f"reward.name={reward}:length_reward", "trainer.total_training_steps=2", "trainer.save_freq=-1",
        "trainer.test_freq=-1", "trainer.val_before_train=false",
        "trainer.dump_rollouts_freq=-1", "trainer.logger=[jsonl]", "trainer.resume_mode=disable",
        f"trainer.default_local_dir={run_dir}", *extra])


def weights(model) -> dict:
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def weight_gap(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def finite(metrics: dict) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, (int, float)))


# ------------------------------------------------------------------------------------------- correctness
def check_engine(base: Path, dtype: str, tol: float, args, sizes: Sizes) -> dict:
    """Engine log-probs/entropies vs teacher forcing; a fork with kept KV vs the same fork on a fresh engine."""
    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.hf import HFEngine
    from appo.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(base, dtype, args.device)
    engine = HFEngine(model, tok, eos_token_ids=())
    reqs = [GenerationRequest(p, cache_key=f"r{i}") for i, p in enumerate(prompts(tok))]
    gens = engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=sizes.engine_tokens, seed=0))
    worst_lp = worst_h = 0.0
    for req, gen in zip(reqs, gens):
        lp, h = teacher_forced(model, req.prefix_ids, gen.token_ids)
        worst_lp, worst_h = max(worst_lp, max_diff(lp, gen.logprobs)), max(worst_h, max_diff(h, gen.entropies))
    # Fork of rollout 0 at position 5: reuses the kept KV of prompt + response[:-1].
    fork = GenerationRequest(reqs[0].prefix_ids + gens[0].token_ids[:5], seed=7)
    params = SamplingParams(temperature=1.0, max_new_tokens=sizes.engine_tokens // 2, seed=1)
    before = engine.stats.reused_tokens
    reused = engine.generate([fork], params)[0]
    reused_tokens = engine.stats.reused_tokens - before
    fresh = HFEngine(model, tok, eos_token_ids=(), cache_budget_tokens=0).generate([fork], params)[0]
    same = reused.token_ids == fresh.token_ids
    n = next((i for i, (a, b) in enumerate(zip(reused.token_ids, fresh.token_ids)) if a != b), len(reused.token_ids))
    fork_lp = max_diff(reused.logprobs[:n], fresh.logprobs[:n])
    lp_tf, _ = teacher_forced(model, fork.prefix_ids, reused.token_ids)
    fork_tf = max_diff(lp_tf, reused.logprobs)
    tokens_rule = same if dtype == "float32" else n > 0  # bf16: a draw on a CDF boundary may flip a token
    ok = (worst_lp <= tol and worst_h <= tol and fork_lp <= tol and fork_tf <= tol and reused_tokens > 0
          and tokens_rule and all(len(g.token_ids) == sizes.engine_tokens for g in gens))
    return {"ok": ok, "dtype": dtype, "tol": tol, "max_logprob_diff": worst_lp, "max_entropy_diff": worst_h,
            "fork_reused_tokens": reused_tokens, "fork_same_tokens_as_recompute": same,
            "fork_tokens_compared": n, "fork_logprob_diff_vs_recompute": fork_lp,
            "fork_logprob_diff_vs_teacher_forced": fork_tf, "tokens": sum(len(g.token_ids) for g in gens),
            "device": str(engine.device)}


def changed_fraction(model, batch, opts, lr: float) -> float:
    """Share of ``model``'s weights that one PPO update with AdamW at ``lr`` changes at all."""
    import torch

    from appo.train.update import ppo_update

    before = weights(model)
    ppo_update(model, torch.optim.AdamW(model.parameters(), lr=lr), batch, opts)
    after = weights(model)
    return sum(int((after[k] != before[k]).sum()) for k in after) / sum(v.numel() for v in after.values())


def check_train_bf16(base: Path, workdir: Path, reward: Path, args, mixed: bool = False) -> dict:
    """A whole APPO step in bf16, then 5 more PPO updates on the batch that step trained on (its old log-probs
    and advantages kept): the policy loss must go down. The batch is taken where the step hands it to the update.
    ``mixed``: float32 weights with bf16 compute (``model.compute_dtype``); then one AdamW step at lr 1e-6 must
    change more than 90% of the weights (it changes a few % of bf16 weights)."""
    import dataclasses as dc
    from unittest import mock

    import torch

    import appo.train.trainer as trainer_mod
    from appo.models.precision import autocast_dtype, set_compute_dtype
    from appo.train.batching import with_fields
    from appo.train.layout import batched_logprobs
    from appo.train.trainer import Trainer
    from appo.train.update import ppo_update

    if mixed:
        cfg = train_cfg(base, workdir / "run_mixed", reward, args.device, "float32", "model.compute_dtype=bfloat16")
    else:
        cfg = train_cfg(base, workdir / "run_bf16", reward, args.device, "bfloat16")
    trainer = Trainer(cfg)
    seen: dict = {}

    def recording_update(model, optimizer, batch, opts, *rest, **kw):
        if not seen:  # before the step's update: pi_old = the current policy
            old = batch.old_logp_BR
            if old is None or opts.old_logp_from_current:
                old, _ = batched_logprobs(trainer.c.model, batch, opts.layout, opts.temperature)
            seen.update(batch=with_fields(batch, old_logp_BR=old), opts=dc.replace(opts, old_logp_from_current=False))
            # bf16 weights and a small learning rate: how much of one AdamW step survives rounding (fp32 copy as
            # the control); on copies of the policy before any update (later, clipping zeroes the gradient).
            # copies keep the recorded compute dtype: in the mixed run the float32 copy autocasts to bf16
            seen["changed"] = {}
            for name, dt, compute in (("bfloat16", torch.bfloat16, None), ("float32", torch.float32, None),
                                      ("float32_bf16_compute", torch.float32, torch.bfloat16)):
                m_copy = copy.deepcopy(trainer.c.model).to(dt).train()
                set_compute_dtype(m_copy, compute)
                seen["changed"][name] = changed_fraction(m_copy, seen["batch"], seen["opts"], lr=1e-6)
        return ppo_update(model, optimizer, batch, opts, *rest, **kw)

    try:
        p_dtype = next(trainer.c.model.parameters()).dtype
        assert p_dtype == (torch.float32 if mixed else torch.bfloat16), p_dtype
        assert autocast_dtype(trainer.c.model) == (torch.bfloat16 if mixed else None)
        with mock.patch.object(trainer_mod, "ppo_update", recording_update):
            m = trainer.train_step(0)
        grad = float(m.get("actor/grad_norm", float("nan")))
        losses = [m.get("actor/pg_loss")]
        for _ in range(5):
            u = ppo_update(trainer.c.train_model, trainer.c.optimizer, seen["batch"], seen["opts"])
            losses.append(u["actor/pg_loss"])
    finally:
        trainer.close()
    batch = seen["batch"]
    ok = (finite(m) and grad > 0 and all(map(math.isfinite, losses)) and losses[-1] < losses[1]
          and float(batch.advantages_BR.abs().sum()) > 0)
    if mixed:
        ok = ok and seen["changed"]["float32_bf16_compute"] > 0.9
    return {"ok": ok, "weights": "float32, bf16 compute" if mixed else "bfloat16",
            "step_metrics_finite": finite(m), "grad_norm": grad, "step_seconds": m.get("timing_s/step"),
            "rows": int(batch.response_mask_BR.shape[0]), "pg_loss_step_then_5_updates": losses,
            "lr1e-6_adamw_step_changed_fraction_of_weights": seen["changed"],
            "appo_branch_points": m.get("appo/branch_points"), "shared_prefix": m.get("actor/shared_prefix")}


def check_checkpoint(base: Path, workdir: Path, reward: Path, args) -> dict:
    """Save after step 1; a new trainer resumes: weights, optimizer state, sampler, step count; step 2 runs."""
    import torch

    from appo.train.trainer import Trainer

    run = workdir / "run_ckpt"
    first = Trainer(train_cfg(base, run, reward, args.device, "float32", "trainer.total_training_steps=1",
                              "trainer.save_freq=1"))
    try:
        r1 = first.fit()
        w1, opt1 = weights(first.c.model), copy.deepcopy(first.c.optimizer.state_dict())
        sampler1 = first.sampler.state_dict()
    finally:
        first.close()
    second = Trainer(train_cfg(base, run, reward, args.device, "float32", "trainer.resume_mode=auto"))
    try:
        start = second.start_step
        w_restored = weights(second.c.model)
        opt2 = second.c.optimizer.state_dict()
        opt_equal = all(torch.equal(opt1["state"][k][n].cpu(), opt2["state"][k][n].cpu())
                        for k in opt1["state"] for n in opt1["state"][k])
        sampler_equal = second.sampler.state_dict() == sampler1
        r2 = second.fit()
        w2 = weights(second.c.model)
    finally:
        second.close()
    straight = Trainer(train_cfg(base, workdir / "run_straight", reward, args.device, "float32"))
    try:
        straight.fit()
        gap = weight_gap(w2, weights(straight.c.model))
    finally:
        straight.close()
    restored_gap = weight_gap(w1, w_restored)
    ok = (r1.steps == 1 and start == 1 and restored_gap == 0.0 and opt_equal and sampler_equal and r2.steps == 2
          and all(finite(h) for h in r2.history))
    return {"ok": ok, "resumed_at_step": start, "restored_weights_max_diff": restored_gap,
            "optimizer_state_equal": opt_equal, "sampler_state_equal": sampler_equal, "steps_after_resume": r2.steps,
            "resumed_vs_uninterrupted_max_weight_diff": gap}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_fsdp2(base: Path, workdir: Path, reward: Path, args) -> dict:
    """FSDP2 with one process (a real process group: NCCL on CUDA, gloo on CPU) against plain training."""
    from datetime import timedelta
    from unittest import mock

    import torch
    import torch.distributed as tdist

    import appo.train.trainer as trainer_mod
    from appo.distributed.ddp import DistEnv
    from appo.train.trainer import Trainer

    cuda = args.device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), GLOO_SOCKET_IFNAME="lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    if cuda:
        torch.cuda.set_device(torch.device(args.device).index or 0)
    tdist.init_process_group(backend, rank=0, world_size=1, timeout=timedelta(seconds=120))
    env = DistEnv(rank=0, world_size=1, strategy="fsdp2", backend=backend, owns_group=False)
    try:
        plain = Trainer(train_cfg(base, workdir / "run_plain", reward, args.device, "float32"))
        with mock.patch.object(trainer_mod, "init_distributed", lambda *a, **k: env):
            sharded = Trainer(train_cfg(base, workdir / "run_fsdp2", reward, args.device, "float32",
                                        "actor.strategy=fsdp2", "trainer.save_freq=1"))
        start = weights(plain.c.model)
        is_dtensor = any(type(p).__name__ == "DTensor" for p in sharded.c.train_model.parameters())
        mp = plain.train_step(0)
        ms = sharded.train_step(0)
        wp, ws = weights(plain.c.model), weights(sharded.c.model)
        gap, moved = weight_gap(wp, ws), weight_gap(wp, start)
        path = sharded.save(1)
        with mock.patch.object(trainer_mod, "init_distributed", lambda *a, **k: env):
            resumed = Trainer(train_cfg(base, workdir / "run_fsdp2", reward, args.device, "float32",
                                        "actor.strategy=fsdp2", "trainer.resume_mode=auto"))
        resumed_gap = weight_gap(ws, weights(resumed.c.model))
        full = {n: p.full_tensor().detach().float().cpu() for n, p in resumed.c.train_model.named_parameters()}
        shard_gap = max(float((full[n] - ws[n]).abs().max()) for n in full if n in ws)
        m2 = resumed.train_step(1)
    finally:
        for t in ("plain", "sharded", "resumed"):
            if t in locals():
                locals()[t].close()
        tdist.destroy_process_group()
    ok = (is_dtensor and gap <= args.fsdp_tol and moved > args.fsdp_tol and path is not None
          and resumed.start_step == 1 and resumed_gap == 0.0 and shard_gap == 0.0 and finite(m2) and finite(ms))
    return {"ok": ok, "backend": backend, "sharded_params_are_dtensors": is_dtensor,
            "max_weight_diff_vs_plain": gap, "max_weight_moved": moved, "tol": args.fsdp_tol,
            "grad_norm": {"plain": mp.get("actor/grad_norm"), "fsdp2": ms.get("actor/grad_norm")},
            "resume": {"start_step": resumed.start_step, "full_copy_max_diff": resumed_gap,
                       "sharded_copy_max_diff": shard_gap, "next_step_finite": finite(m2)}}


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
        diffs = [max_diff(teacher_forced(policy, r.prefix_ids, g.token_ids)[0], g.logprobs)
                 for r, g in zip(reqs, gens) if g.token_ids]
        return max(diffs, default=float("nan"))

    before = worst()
    with torch.no_grad():  # an in-place "update", as an optimizer step: the next generate pushes it
        policy.lm_head.weight.mul_(1.5)
    after = worst()
    ok = before <= args.vllm_tol and after <= args.vllm_tol and engine.weight_pushes == 1
    return {"ok": ok, "max_logprob_diff": before, "max_logprob_diff_after_push": after,
            "weight_pushes": engine.weight_pushes}


# ------------------------------------------------------------------------------------------- speed
def speed_ceilings(args, sizes: Sizes) -> dict:
    from appo.bench.gpu import H200_SPEC, measure_ceilings

    c = measure_ceilings(args.device, sizes.matmul_n, sizes.copy_bytes)
    return {"ok": True, **c, "spec": H200_SPEC}


def speed_rollout(model_dir: Path, args, sizes: Sizes, dtype: str, ceilings: dict) -> dict:
    """HFEngine vs model.generate on the same rows, fixed lengths (EOS off), interleaved repeats."""
    import statistics

    import torch

    from appo.bench.gpu import H200_SPEC, ModelShape, gpu_peak_mb, reset_gpu_peak, sync
    from appo.bench.models import left_pad, pad_id, text_prompts
    from appo.engine.base import GenerationRequest, SamplingParams
    from appo.engine.hf import HFEngine
    from appo.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(model_dir, dtype, args.device)
    shape = ModelShape.of(model)
    B, N = sizes.rollout_rows, sizes.new_tokens
    ids = text_prompts(tok, B, sizes.prompt_len // 2, sizes.prompt_len, seed=B)
    mean_prompt = statistics.mean(map(len, ids))
    reqs = [GenerationRequest(tuple(p)) for p in ids]
    input_ids, attn = (t.to(args.device) for t in left_pad(ids, pad_id(tok)))
    engine = HFEngine(model, tok, eos_token_ids=(), max_batch_size=B, cache_budget_tokens=0)
    res = {"engine": [], "generate": [], "engine_decode_s": [], "engine_prefill_s": []}
    peak = {"engine": 0.0, "generate": 0.0}

    def run_engine(r: int) -> None:
        engine.reset_stats()
        reset_gpu_peak(args.device)
        t = time.perf_counter()
        gens = engine.generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=N, seed=r + 1))
        sync(args.device)
        dt = time.perf_counter() - t
        assert all(len(g.token_ids) == N for g in gens)
        if r >= 0:
            res["engine"].append(dt)
            res["engine_decode_s"].append(engine.stats.decode_seconds)
            res["engine_prefill_s"].append(engine.stats.prefill_seconds)
            peak["engine"] = max(peak["engine"], gpu_peak_mb(args.device) or 0.0)

    def run_generate(r: int) -> None:
        torch.manual_seed(r + 1)
        reset_gpu_peak(args.device)
        t = time.perf_counter()
        with torch.inference_mode():
            o = model.generate(input_ids=input_ids, attention_mask=attn, do_sample=True, temperature=1.0, top_k=0,
                               top_p=1.0, max_new_tokens=N, min_new_tokens=N, pad_token_id=pad_id(tok))
        sync(args.device)
        dt = time.perf_counter() - t
        assert o.shape[1] == input_ids.shape[1] + N
        if r >= 0:
            res["generate"].append(dt)
            peak["generate"] = max(peak["generate"], gpu_peak_mb(args.device) or 0.0)

    run_engine(-1)
    run_generate(-1)
    for r in range(sizes.rollout_repeats):
        for fn in ((run_engine, run_generate) if r % 2 == 0 else (run_generate, run_engine)):
            fn(r)
    med = {k: statistics.median(v) for k, v in res.items()}
    tokens = B * N
    flops = shape.decode_flops(B, mean_prompt, N)
    bytes_ = shape.decode_bytes(B, mean_prompt, N)
    ratios = [g / e for e, g in zip(res["engine"], res["generate"])]

    def frac(x: float, key: str, spec: float) -> dict:
        return {"measured": x / ceilings[key] if ceilings.get(key) else None, "spec": x / spec}

    eng_tflops = flops / med["engine_decode_s"] / 1e12
    eng_tb_s = bytes_ / med["engine_decode_s"] / 1e12
    return {
        "ok": True, "model_params": shape.params, "dtype": dtype, "rows": B, "new_tokens": N,
        "prompt_tokens": [min(map(len, ids)), max(map(len, ids))], "mean_prompt_tokens": mean_prompt,
        "eos": "disabled on both sides (engine eos_token_ids=(), generate min_new_tokens=max_new_tokens)",
        "engine_tok_s": tokens / med["engine"], "generate_tok_s": tokens / med["generate"],
        "speedup_vs_generate": statistics.median(ratios), "speedup_min_max": [min(ratios), max(ratios)],
        "engine_s": res["engine"], "generate_s": res["generate"], "engine_decode_s": res["engine_decode_s"],
        "engine_prefill_s": res["engine_prefill_s"],
        "engine_decode_ms_per_step": med["engine_decode_s"] / N * 1e3,
        "generate_ms_per_token_step": med["generate"] / N * 1e3,
        "decode_tflops": eng_tflops,
        "decode_tflops_fraction": frac(eng_tflops, "matmul_tflops", H200_SPEC["bf16_dense_tflops"]),
        "decode_tb_s": eng_tb_s, "decode_bandwidth_fraction": {
            "measured": eng_tb_s * 1e3 / ceilings["copy_gb_s"] if ceilings.get("copy_gb_s") else None,
            "spec": eng_tb_s / H200_SPEC["hbm_tb_s"]},
        "generate_tflops_incl_prefill": (flops + shape.forward_flops(B * mean_prompt, mean_prompt / 2))
        / med["generate"] / 1e12,
        "gpu_peak_mb": peak, "repeats": sizes.rollout_repeats,
        "estimates": "FLOP 2P+4Ldc per token; bytes per step = weights + live KV (appo.bench.gpu)",
    }


def speed_rl_step(model_dir: Path, args, sizes: Sizes, dtype: str, deadline: float, log) -> dict:
    """Whole RL step, ours (grpo, appo) vs TRL GRPOTrainer, interleaved (appo.bench.rl_step); no round starts
    after ``deadline`` (``time.perf_counter()``); ``log`` gets a line per step of each side."""
    from appo.bench.gpu import ModelShape
    from appo.bench.rl_step import rl_step_figures
    from appo.bench.trl_side import trl_available
    from appo.models.loading import load_model_and_tokenizer

    reason = trl_available()
    if reason is not None:
        return {"ok": None, "skipped": reason}
    model, _ = load_model_and_tokenizer(model_dir, dtype, "cpu")
    shape = ModelShape.of(model)
    del model
    figs = rl_step_figures(str(model_dir), 1 if args.device != "cpu" else 2, prompts=sizes.rl_prompts,
                           rows=sizes.rl_rows, max_response=sizes.rl_response, micro_rows=sizes.rl_micro_rows,
                           repeats=sizes.rl_repeats, device=args.device, dtype=dtype, label="speed-model",
                           gradient_checkpointing=False, deadline=deadline, progress=log)
    out = {"ok": True, "dtype": dtype, "prompts": sizes.rl_prompts, "rows_per_prompt": sizes.rl_rows,
           "max_response": sizes.rl_response, "micro_rows": sizes.rl_micro_rows, "repeats": sizes.rl_repeats}
    for f in figs:
        alg = "appo" if " appo vs" in f["name"] else "grpo"
        d = f["details"]
        if "skipped" in f:
            out[alg] = {"skipped": f["skipped"], "warmup_s": d.get("warmup_s")}
            continue
        ms = d.get("metrics_ours") or [{}]
        rows = sum(m.get("rollout/rows", 0) for m in ms) / len(ms)
        resp = sum(m.get("response_length/mean", 0) for m in ms) / len(ms)
        prompt = sum(m.get("prompt_length/mean", 0) for m in ms) / len(ms)
        step_s = f["ours"]["median"]
        # generation (decode) + old log-probs (forward) + update (forward + backward), ours; model FLOP only
        flops = (shape.decode_flops(int(rows), prompt, int(resp)) + shape.forward_flops(rows * (prompt + resp), prompt)
                 + shape.train_flops(rows * (prompt + resp), prompt))
        upd = d.get("phases_median_s", {}).get("update")
        out[alg] = {"ours_s_per_step": step_s, "trl_s_per_step": f["baseline"]["median"] if f.get("baseline") else None,
                    "speedup_vs_trl": f.get("speedup"), "speedup_min_max": [f.get("speedup_min"), f.get("speedup_max")],
                    "ours_s": f["ours"], "trl_s": f.get("baseline"), "tokens_ours": d.get("tokens_ours"),
                    "tokens_trl": d.get("tokens_trl"), "phases_median_s": d.get("phases_median_s"),
                    "trl_phases_median_s": d.get("trl_phases_median_s"),
                    "rows": rows, "response_mean": resp, "prompt_mean": prompt,
                    "model_tflops_whole_step": flops / step_s / 1e12,
                    "update_tflops": (shape.train_flops(rows * (prompt + resp), prompt) / upd / 1e12) if upd else None,
                    "gpu_peak_mb": d.get("gpu_peak_mb"), "warmup_s": d.get("warmup_s")}
    if all("skipped" in out[a] for a in ("grpo", "appo")):
        out.update(ok=None, skipped="no timed repeat finished before the time budget")
    return out


# ------------------------------------------------------------------------------------------- main
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
                from appo.bench.gpu import build_speed_model

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
