"""The whole-RL-step figure: our trainer (grpo and appo) against TRL's ``GRPOTrainer``, one step each.

Both sides train the same model (separate copies, same initial weights) on the same procedural
arithmetic prompts in the same order (``prompts`` per step), ``rows`` rows per prompt, responses of at
most ``max_response`` tokens, temperature 1, the same reward (:mod:`appo.rewards` ``default``), one
optimizer step per RL step, micro-batches of ``micro_rows`` rows, no KL, no tools (TRL's trainer is
single-turn here). Two shapes (``shape`` names them in the figure): ``accum`` (micro-batches smaller
than the step: gradient accumulation) and ``trl`` (``micro_rows`` = every row of the step, TRL's
``per_device_train_batch_size=32`` with no accumulation, the shape a TRL user runs in one process).
Ours is :meth:`appo.train.trainer.Trainer.train_step` (rollouts -> rewards -> advantages -> old
log-probs, skipped on these on-policy steps -> PPO update); appo uses ``rows/2`` initial rollouts +
``rows/2`` branches and scores Omega with the previous policy, work that grpo and TRL do not do, and
trains its branch rows too (``algorithm.appo.train_on_branches=true``), so every side trains the same
number of rows. TRL's step is the span between its ``on_step_begin`` and ``on_step_end`` callbacks
(generation, reward, loss, backward, optimizer step), driven by ``trainer.train()``.

Phases (``details.phases_median_s``, same names both sides): ``generation``, ``reward``,
``old_log_probs``, ``update`` (loss forward, backward, optimizer step) and ``other`` (the rest of the
step: advantages, collation, bookkeeping). TRL's are timed by wrapping its ``_generate``,
``_calculate_rewards`` and its no-grad ``_get_per_token_logps_and_entropies`` calls on the instance.

Device: ``cpu`` in fp32 by default; ``scripts/gpu_check.py`` runs both sides on a GPU in bf16 (TRL with
``bf16=True``), synchronising the device at the end of every timed span and recording each side's peak
allocated GPU memory.

Gradient checkpointing is one setting for both sides (``gradient_checkpointing``, default off): TRL's
``GRPOConfig.gradient_checkpointing`` and our ``model.enable_gradient_checkpointing``. TRL's own default is
on, which recomputes the forward in the backward (~1.3x its update); an earlier version of this figure
left TRL at that default and ours off. The setting each side actually ran with (read back from TRL's
``args`` and from our model) is in ``details.gradient_checkpointing`` and in the figure's name.

Interleaving: TRL's training loop drives the repeats; our steps run from its callbacks, before its
step in odd rounds and after it in even ones. Round 0 is a warm-up for all and is not recorded.
The rows generated differ between the sides (sampling), so generated tokens are recorded per side
(``details.tokens``): wall time per step is the figure, tokens/s is context.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time

import torch

from appo.perf.harness import Contender, PeakRSS, figure
from appo.perf.models import model_path
from appo.perf.trl_side import build_grpo_trainer


def train_overrides(model_name: str, algorithm: str, threads: int, prompts: int, rows: int, max_response: int,
                    micro_rows: int, *, device: str = "cpu", dtype: str = "float32",
                    gradient_checkpointing: bool = False) -> list[str]:
    """The config overrides of our side of the RL-step figures (without the run directory), shared by the
    in-process figure and the ``appo train`` one (:mod:`appo.perf.cli_step`)."""
    return [
        f"model.path={model_path(model_name)}", f"model.device={device}", f"model.dtype={dtype}",
        "data.train_files=[proc:arith]",
        "data.train_max_samples=256", f"data.train_batch_size={prompts}", f"data.max_response_length={max_response}",
        "data.shuffle=false", f"rollout.n={rows}", f"rollout.n_initial={max(1, rows // 2)}",
        f"rollout.max_batch_size={max(64, prompts * rows)}", "rollout.system_prompt=short",
        f"algorithm.name={algorithm}", f"actor.ppo_mini_batch_size={prompts}",
        f"actor.ppo_micro_batch_size_per_gpu={micro_rows}", "actor.optim.lr=1e-6",
        "tools=[]", "reward.name=default", "trainer.total_training_steps=1000", "trainer.save_freq=-1",
        "trainer.test_freq=-1", "trainer.val_before_train=false", "trainer.dump_rollouts_freq=-1",
        f"trainer.num_threads={threads}", "trainer.logger=[jsonl]", "trainer.resume_mode=disable",
        "algorithm.appo.train_on_branches=true",
        f"model.enable_gradient_checkpointing={str(gradient_checkpointing).lower()}"]


def _our_trainer(model_name: str, algorithm: str, threads: int, prompts: int, rows: int, max_response: int,
                 micro_rows: int, run_dir: str, *extra: str, device: str = "cpu", dtype: str = "float32",
                 gradient_checkpointing: bool = False):
    from appo.config import load_config
    from appo.train.trainer import Trainer

    ov = train_overrides(model_name, algorithm, threads, prompts, rows, max_response, micro_rows, device=device,
                         dtype=dtype, gradient_checkpointing=gradient_checkpointing)
    return Trainer(load_config(None, [*ov, f"trainer.default_local_dir={run_dir}", *extra]))


PHASES = ("generation", "reward", "old_log_probs", "update", "other")
"""The per-phase breakdown's names, both sides."""

OUR_PHASES = {"gen": "generation", "reward": "reward", "old_log_prob": "old_log_probs", "update_actor": "update"}
"""Our step's timers (``timing_s/*``) by phase name."""


def our_phases(metrics: dict) -> dict:
    """Seconds per phase of one of our steps, from its ``timing_s/*`` metrics."""
    out = {name: float(metrics.get(f"timing_s/{k}", 0.0)) for k, name in OUR_PHASES.items()}
    out["other"] = max(0.0, float(metrics["timing_s/step"]) - sum(out.values()))
    return out


class TRLPhaseTimer:
    """Times a ``GRPOTrainer``'s phases by wrapping its methods on the instance (see the module docstring)."""

    def __init__(self, trainer):
        self.acc = dict.fromkeys(PHASES, 0.0)
        for attr, phase in (("_generate", "generation"), ("_calculate_rewards", "reward")):
            setattr(trainer, attr, self._wrap(getattr(trainer, attr), lambda phase=phase: phase))
        trainer._get_per_token_logps_and_entropies = self._wrap(
            trainer._get_per_token_logps_and_entropies, lambda: None if torch.is_grad_enabled() else "old_log_probs")

    def _wrap(self, fn, phase_of):
        def timed_call(*args, **kwargs):
            phase = phase_of()
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if phase is not None:
                    self.acc[phase] += time.perf_counter() - t
        return timed_call

    def start(self) -> None:
        """Zero the accumulators at the start of a step."""
        self.acc = dict.fromkeys(PHASES, 0.0)

    def phases(self, step_s: float) -> dict:
        """This step's phases; ``update`` is the rest of the step after generation, reward and old log-probs
        (TRL computes the loss, backward and optimizer step there); ``other`` is 0 on this side."""
        out = dict(self.acc)
        out["update"] = max(0.0, step_s - out["generation"] - out["reward"] - out["old_log_probs"])
        out["other"] = 0.0
        return out


TARGETS = {("accum", "grpo"): 2.0, ("accum", "appo"): 2.0, ("trl", "grpo"): 1 / 0.7, ("trl", "appo"): 1 / 0.7}
"""Speedup targets (TRL time / ours) per (shape, algorithm) for the tiny model (issue 26: <= 0.7x TRL's time at
TRL's shape, equal settings); other models at TRL's shape: :data:`OTHER_MODEL_TARGET`."""

OTHER_MODEL_TARGET = 1 / 0.6
"""Speedup target of a pretrained model (SmolLM2-135M) at TRL's shape: <= 0.6x TRL's time."""


def rl_step_figures(model_name: str, threads: int, *, prompts: int, rows: int, max_response: int, micro_rows: int,
                    repeats: int, shape: str = "accum", device: str = "cpu", dtype: str = "float32",
                    label: str | None = None, gradient_checkpointing: bool = False,
                    deadline: float | None = None, progress=None) -> list[dict]:
    """Seconds per RL step: ours (grpo, appo) vs TRL GRPOTrainer at one shape (see the module docstring).

    ``device``/``dtype``: where and in what both sides train (``cuda`` + ``bfloat16`` for the GPU run).
    ``label`` names the model in the figure (default ``model_name``). ``gradient_checkpointing``: both
    sides' (TRL's and ours), recorded as each side ran it. ``deadline`` (a ``time.perf_counter()``
    value): no new round starts after it, and the figures hold the repeats that finished (a figure with none
    is a ``skipped`` record holding the warm-up round's times). ``progress(line)`` is called after every step
    of every side."""
    from transformers import TrainerCallback

    from appo.perf.gpu import gpu_peak_mb, reset_gpu_peak, sync

    torch.set_num_threads(threads)
    tmp = tempfile.mkdtemp(prefix="appo-bench-rl-")
    ours = {alg: _our_trainer(model_name, alg, threads, prompts, rows, max_response, micro_rows, f"{tmp}/{alg}",
                              device=device, dtype=dtype, gradient_checkpointing=gradient_checkpointing)
            for alg in ("grpo", "appo")}
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
    phases = {alg: [] for alg in ours}  # our step's own timers, by PHASES name
    trl_phases: list[dict] = []
    metrics = {alg: [] for alg in ours}  # token counts per repeat, for FLOP estimates
    gpu_mb = dict.fromkeys(("grpo", "appo", "trl"), 0.0)
    warmup_s: dict[str, float] = {}
    say = progress or (lambda line: None)
    state = {"round": 0, "t": 0.0, "mem": None}

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
                phases[alg].append(our_phases(m))

    class Interleave(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            if state["round"] % 2 == 1:
                run_ours(state["round"])
            torch.set_num_threads(threads)
            reset_gpu_peak(device)
            state["mem"] = PeakRSS().__enter__()
            state["timer"].start()
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
                trl_phases.append(state["timer"].phases(dt))
            if state["round"] % 2 == 0:
                run_ours(state["round"])
            state["round"] += 1
            if deadline is not None and time.perf_counter() > deadline:
                control.should_training_stop = True

    trainer = build_grpo_trainer(trl_model, tok, texts, examples, rows_per_step=prompts * rows, num_generations=rows,
                                 max_completion=max_response, micro_rows=micro_rows, max_steps=repeats + 1, lr=1e-6,
                                 output_dir=f"{tmp}/trl", callbacks=[Interleave()], device=device,
                                 bf16=dtype == "bfloat16", gradient_checkpointing=gradient_checkpointing)
    state["trainer"] = trainer
    ckpt = {"trl": bool(trainer.args.gradient_checkpointing),
            **{alg: bool(getattr(tr.c.model, "is_gradient_checkpointing", False)) for alg, tr in ours.items()}}
    state["timer"] = TRLPhaseTimer(trainer)
    trainer.train()
    out = []
    for alg in ours:
        c = contenders[alg]
        n = min(len(c.values), len(trl_c.values))
        ck = {True: "on", False: "off"}
        same = ckpt[alg] == ckpt["trl"]
        name = (f"{label or model_name} t{threads} {shape} {alg} vs TRL, grad ckpt "
                + (ck[ckpt[alg]] if same else f"ours {ck[ckpt[alg]]} TRL {ck[ckpt['trl']]}"))
        if n == 0:
            out.append({"section": "rl_step", "name": name, "skipped": "no timed repeat finished before the deadline",
                        "details": {"warmup_s": warmup_s, "device": device, "dtype": dtype,
                                    "gradient_checkpointing": {"ours": ckpt[alg], "trl": ckpt["trl"]}}})
            continue
        c.values, base = c.values[:n], Contender(trl_c.name, trl_c.run, trl_c.values[:n], trl_c.peak_rss_mb)
        target = TARGETS[(shape, alg)] if model_name == "tiny" or shape == "accum" else OTHER_MODEL_TARGET
        ratios = [o / b for o, b in zip(c.values, base.values)]
        out.append(figure("rl_step", name, "s/step", c, base,
                          higher_is_better=False, target=target,
                          target_text=f"<= {1 / target:.2g}x TRL wall time",
                          details={"model": model_name, "threads": threads, "shape": shape, "prompts": prompts,
                                   "rows_per_prompt": rows, "trained_rows": prompts * rows,
                                   "max_response": max_response, "micro_rows": micro_rows,
                                   "grad_accumulation": prompts * rows // micro_rows,
                                   "ratio_ours_over_trl_median": statistics.median(ratios) if ratios else None,
                                   "ratios_ours_over_trl": [round(r, 4) for r in ratios],
                                   "tokens_ours": tokens[alg][:n], "tokens_trl": tokens["trl"][:n],
                                   "phases_median_s": _median_phases(phases[alg][:n]),
                                   "trl_phases_median_s": _median_phases(trl_phases[:n]), "device": device,
                                   "dtype": dtype,
                                   "gradient_checkpointing": {"ours": ckpt[alg], "trl": ckpt["trl"]},
                                   "gpu_peak_mb": {"ours": gpu_mb[alg] or None, "trl": gpu_mb["trl"] or None},
                                   "metrics_ours": metrics[alg][:n], "warmup_s": warmup_s}))
    return out


_TOKEN_KEYS = ("response_length/mean", "prompt_length/mean", "rollout/rows", "appo/")
"""Metrics kept per repeat in ``details.metrics_ours`` (token counts, for FLOP estimates)."""


def _median_phases(rows: list[dict]) -> dict:
    """Median seconds per phase over repeats (phases missing from a repeat are skipped)."""
    keys = sorted({k for r in rows for k in r})
    return {k: round(statistics.median([r[k] for r in rows if k in r]), 3) for k in keys}
