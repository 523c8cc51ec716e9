"""The whole-RL-step figure: our trainer (grpo and appo) against TRL's ``GRPOTrainer``, one step each.

Both sides train the same model (separate copies, same initial weights) on the same procedural
arithmetic prompts in the same order (``prompts`` per step), ``rows`` rows per prompt, responses of at
most ``max_response`` tokens, temperature 1, the same reward (:mod:`appo.rewards` ``default``), one
optimizer step per RL step, micro-batches of ``micro_rows`` rows, no KL, no tools (TRL's trainer is
single-turn here). Ours is :meth:`appo.train.trainer.Trainer.train_step` (rollouts -> rewards ->
advantages -> old log-probs -> PPO update); appo uses ``rows/2`` initial rollouts + ``rows/2`` branches
and scores Omega with the previous policy, work that grpo and TRL do not do. TRL's step is the span
between its ``on_step_begin`` and ``on_step_end`` callbacks (generation, reward, loss, backward,
optimizer step), driven by ``trainer.train()``.

Interleaving: TRL's training loop drives the repeats; our steps run from its callbacks, before its
step in odd rounds and after it in even ones. Round 0 is a warm-up for all and is not recorded.
The rows generated differ between the sides (sampling), so generated tokens are recorded per side
(``details.tokens``): wall time per step is the figure, tokens/s is context.
"""

from __future__ import annotations

import copy
import tempfile
import time

import torch

from appo.bench.harness import Contender, PeakRSS, figure
from appo.bench.models import model_path
from appo.bench.trl_side import build_grpo_trainer


def _our_trainer(model_name: str, algorithm: str, threads: int, prompts: int, rows: int, max_response: int,
                 micro_rows: int, run_dir: str, device: str = "cpu", dtype: str = "float32"):
    from appo.train.config import load_config
    from appo.train.trainer import Trainer

    cfg = load_config(None, [
        f"model.path={model_path(model_name)}", f"model.device={device}", f"model.dtype={dtype}",
        "data.train_files=[proc:arith]",
        "data.train_max_samples=256", f"data.train_batch_size={prompts}", f"data.max_response_length={max_response}",
        "data.shuffle=false", f"rollout.n={rows}", f"rollout.n_initial={max(1, rows // 2)}",
        f"rollout.max_batch_size={max(64, prompts * rows)}", "rollout.system_prompt=short", f"algorithm.name={algorithm}",
        f"actor.ppo_mini_batch_size={prompts}", f"actor.ppo_micro_batch_size_per_gpu={micro_rows}", "actor.optim.lr=1e-6",
        "tools=[]", "reward.name=default", "trainer.total_training_steps=1000", "trainer.save_freq=-1",
        "trainer.test_freq=-1", "trainer.val_before_train=false", "trainer.dump_rollouts_freq=-1",
        f"trainer.num_threads={threads}", "trainer.logger=[jsonl]", "trainer.resume_mode=disable",
        f"trainer.default_local_dir={run_dir}"])
    return Trainer(cfg)


def rl_step_figures(model_name: str, threads: int, *, prompts: int, rows: int, max_response: int, micro_rows: int,
                    repeats: int, device: str = "cpu", dtype: str = "float32", label: str | None = None,
                    trl_gradient_checkpointing: bool | None = None, deadline: float | None = None,
                    progress=None) -> list[dict]:
    """Seconds per RL step: ours (grpo, appo) vs TRL GRPOTrainer (target: ours <= 0.5x TRL's wall time).

    ``device``/``dtype``: where and in what both sides train (``cuda`` + ``bfloat16`` for the GPU run:
    TRL then runs with ``bf16=True``); on CUDA each timed span ends with a device synchronisation and
    ``details.gpu_peak_mb`` records each side's peak allocated memory. ``label`` names the model in the
    figure (default ``model_name``). ``deadline`` (a ``time.perf_counter()`` value): no new round starts after
    it, and the figures hold the repeats that finished (a figure with none is a ``skipped`` record holding
    the warm-up round's times). ``progress(line)`` is called after every step of every side."""
    from transformers import TrainerCallback

    from appo.bench.gpu import gpu_peak_mb, reset_gpu_peak, sync

    torch.set_num_threads(threads)
    tmp = tempfile.mkdtemp(prefix="appo-bench-rl-")
    ours = {alg: _our_trainer(model_name, alg, threads, prompts, rows, max_response, micro_rows, f"{tmp}/{alg}",
                              device, dtype) for alg in ("grpo", "appo")}
    grpo = ours["grpo"]
    examples = grpo.c.train_examples
    tok = grpo.c.tokenizer
    from appo.prompts import SHORT

    texts = [tok.apply_chat_template([{"role": "system", "content": SHORT}, {"role": "user", "content": e.question}],
                                     tokenize=False, add_generation_prompt=True) for e in examples]
    trl_model = copy.deepcopy(grpo.c.model).train()
    contenders = {alg: Contender(f"appo Trainer.train_step ({alg})", lambda r: 0.0) for alg in ours}
    trl_c = Contender("trl GRPOTrainer step", lambda r: 0.0)
    tokens = {k: [] for k in ("grpo", "appo", "trl")}
    phases = {alg: [] for alg in ours}  # our step's own timers (gen, reward, adv, old_log_prob, update_actor)
    metrics = {alg: [] for alg in ours}  # our step's whole metrics (token counts for the FLOP estimates)
    gpu_mb = {k: 0.0 for k in ("grpo", "appo", "trl")}
    state = {"round": 0, "t": 0.0, "mem": None}
    warmup_s: dict[str, float] = {}
    say = progress or (lambda line: None)

    def run_ours(rnd: int) -> None:
        for alg, tr in ours.items():
            reset_gpu_peak(device)
            with PeakRSS() as mem:
                t = time.perf_counter()
                m = tr.train_step(rnd)
                sync(device)
                dt = time.perf_counter() - t
            torch.set_num_threads(threads)
            timers = ", ".join(f"{k[9:]}={v:.2f}" for k, v in m.items() if k.startswith("timing_s/"))
            say(f"rl_step round {rnd} ours {alg}: {dt:.2f} s ({timers})")
            if rnd == 0:
                warmup_s[alg] = dt
            if rnd > 0:
                gpu_mb[alg] = max(gpu_mb[alg], gpu_peak_mb(device) or 0.0)
                metrics[alg].append({k: v for k, v in m.items() if k.startswith(_TOKEN_KEYS)})
                contenders[alg].values.append(dt)
                contenders[alg].peak_rss_mb = max(contenders[alg].peak_rss_mb, mem.peak_mb)
                tokens[alg].append(m.get("response_length/mean", float("nan")) * m.get("rollout/rows", rows * prompts))
                phases[alg].append({k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("timing_s/")})

    class Interleave(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            if state["round"] % 2 == 1:
                run_ours(state["round"])
            torch.set_num_threads(threads)
            reset_gpu_peak(device)
            state["mem"] = PeakRSS().__enter__()
            state["t"] = time.perf_counter()

        def on_step_end(self, args, st, control, **kw):
            sync(device)
            dt = time.perf_counter() - state["t"]
            state["mem"].__exit__(None, None, None)
            say(f"rl_step round {state['round']} trl: {dt:.2f} s")
            if state["round"] == 0:
                warmup_s["trl"] = dt
            if state["round"] > 0:
                gpu_mb["trl"] = max(gpu_mb["trl"], gpu_peak_mb(device) or 0.0)
                trl_c.values.append(dt)
                trl_c.peak_rss_mb = max(trl_c.peak_rss_mb, state["mem"].peak_mb)
                lengths = state["trainer"]._metrics.get("train", {}).get("completions/mean_length") or [float("nan")]
                tokens["trl"].append(lengths[-1] * prompts * rows)
            if state["round"] % 2 == 0:
                run_ours(state["round"])
            state["round"] += 1
            if deadline is not None and time.perf_counter() > deadline:
                control.should_training_stop = True

    trainer = build_grpo_trainer(trl_model, tok, texts, examples, rows_per_step=prompts * rows, num_generations=rows,
                                 max_completion=max_response, micro_rows=micro_rows, max_steps=repeats + 1, lr=1e-6,
                                 output_dir=f"{tmp}/trl", callbacks=[Interleave()], device=device,
                                 bf16=dtype == "bfloat16", gradient_checkpointing=trl_gradient_checkpointing)
    state["trainer"] = trainer
    trainer.train()
    out = []
    for alg in ours:
        c = contenders[alg]
        n = min(len(c.values), len(trl_c.values))
        if n == 0:
            out.append({"section": "rl_step", "name": f"{label or model_name} t{threads} {alg} vs TRL",
                        "skipped": "no timed repeat finished before the deadline",
                        "details": {"warmup_s": warmup_s, "device": device, "dtype": dtype}})
            continue
        c.values, base = c.values[:n], Contender(trl_c.name, trl_c.run, trl_c.values[:n], trl_c.peak_rss_mb)
        out.append(figure("rl_step", f"{label or model_name} t{threads} {alg} vs TRL", "s/step", c, base,
                          higher_is_better=False,
                          target=2.0, target_text="<= 0.5x TRL wall time (speedup >= 2)",
                          details={"model": model_name, "threads": threads, "prompts": prompts, "rows_per_prompt": rows,
                                   "max_response": max_response, "micro_rows": micro_rows,
                                   "tokens_ours": tokens[alg][:n], "tokens_trl": tokens["trl"][:n],
                                   "phases_median_s": _median_phases(phases[alg][:n]), "device": device,
                                   "dtype": dtype, "trl_gradient_checkpointing": trl_gradient_checkpointing,
                                   "gpu_peak_mb": {"ours": gpu_mb[alg] or None, "trl": gpu_mb["trl"] or None},
                                   "metrics_ours": metrics[alg][:n], "warmup_s": warmup_s}))
    return out


_TOKEN_KEYS = ("response_length/mean", "prompt_length/mean", "rollout/rows", "appo/")
"""Metrics kept per repeat in ``details.metrics_ours`` (token counts, for FLOP estimates)."""


def _median_phases(rows: list[dict]) -> dict:
    """Median seconds per phase over repeats (phases missing from a repeat are skipped)."""
    import statistics

    keys = sorted({k for r in rows for k in r})
    return {k: round(statistics.median([r[k] for r in rows if k in r]), 3) for k in keys}
