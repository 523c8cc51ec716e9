"""The training loop, top to bottom (docs/algorithm.md 12): prompts -> rollouts -> rewards -> advantages ->
old log-probs -> PPO updates -> metrics -> checkpoint -> validation.

:func:`train` is the Python call behind ``appo train``. :class:`Trainer` holds the run's live objects
(:mod:`appo.train.components`); :meth:`Trainer.train_step` is one step, each arrow a named call.
Algorithms differ only through their spec (:mod:`appo.algorithms`: one module per algorithm): its rollout
strategy and options, advantage estimator and options, which rows are trained, Omega's anchor, loss switches.
Under ``torchrun`` each rank runs this loop on its share of the prompts; ``self.dist``
(:mod:`appo.distributed.ddp`) holds the few cross-process calls, all identities in one process.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from appo.agent import RolloutContext, engine_logprobs, prompt_specs, run_strategy, teacher_forced_logp_fn
from appo.algorithms import get_algorithm
from appo.config import Config, save_config
from appo.core import get_advantage_estimator
from appo.data.sources import PromptSampler
from appo.distributed.ddp import Quiet, init_distributed
from appo.dump import TokenTexts, step_record, write_step
from appo.eval import evaluate
from appo.prompts import resolve_system_prompt
from appo.train.batching import advantage_inputs, collate, with_advantages, with_fields
from appo.train.checkpoint import list_checkpoints, load_checkpoint, load_latest_checkpoint, restore, save_checkpoint
from appo.train.components import (
    Components,
    build_components,
    build_optimizer,
    build_rollout_pool,
    loop_limits,
    sampling_params,
)
from appo.train.interrupt import SIGTERM_EXIT, StopRequest, TrainingInterrupted
from appo.train.layout import Layout, batched_logprobs, choose_layout
from appo.train.metrics_log import MetricsLogger, batch_metrics, reduce_metrics, timer
from appo.train.progress import ProgressDisplay
from appo.train.resume_check import check_resume_config
from appo.train.update import UpdateOptions, on_policy_step, ppo_update


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path
    """The run directory."""
    steps: int
    """Training steps completed."""
    history: list[dict] = field(default_factory=list)
    """Metrics of the steps run in this call."""
    val: dict[int, dict] = field(default_factory=dict)
    """Validation summaries by step (``all`` pools every source)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """One training run. ``Trainer(cfg).fit()``; pass ``components`` to bring your own parts."""

    def __init__(self, cfg: Config, components: Components | None = None, train_dataset: Any = None,
                 val_dataset: Any = None):
        self.cfg = cfg
        self.dist = init_distributed(cfg.actor.strategy, cfg.model.device, cfg.trainer.dist_timeout_s)
        self.run_dir = Path(cfg.trainer.default_local_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.check_resume()  # before config.yaml is overwritten: the saved one describes the run to resume
        self.dist.barrier()
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        seed_everything(cfg.trainer.seed)
        self.algorithm = get_algorithm(cfg.algorithm.name)  # once per run: strategy, estimator, rows, Omega anchor
        with self.dist.main_first():  # rank 0 writes the run's shared files (search corpus, index) first
            components = components or build_components(cfg, self.run_dir, train_dataset, val_dataset, self.algorithm)
        # DDP / FSDP2 module for the update (the model itself in one process); FSDP2 rebuilds the optimizer
        self.c = self.dist.wrap(components, cfg, lambda m: build_optimizer(m, cfg, cfg.trainer.total_training_steps))
        self.sampler = PromptSampler(len(self.c.train_examples), cfg.data.train_batch_size, cfg.data.seed,
                                     cfg.data.shuffle)
        self.estimator = get_advantage_estimator(cfg.algorithm.adv_estimator)
        self.texts = TokenTexts(self.c.tokenizer)
        self.system_prompt = resolve_system_prompt(cfg.rollout.system_prompt, self.c.tools, cfg.rollout.protocol)
        self.start_step = self._resume()
        self.rollout_pool = None  # rollout.workers > 0: Ray actors generate (appo.distributed.ray_rollout)
        if cfg.rollout.workers:
            if self.dist.enabled:
                raise ValueError("rollout.workers > 0 (Ray rollout workers) needs a single training process; "
                                 "under torchrun set rollout.workers=0 (each rank generates its own share)")
            self.rollout_pool = build_rollout_pool(cfg, self.c, self.algorithm)
            self.push_rollout_weights(with_previous=True)

    # ------------------------------------------------------------------------------------ one step
    def rollout_context(self, step: int) -> RolloutContext:
        """The agent context of ``step``: sampling seeded by (seed, step); Omega's log-prob fns when the
        algorithm scores Omega (its :meth:`~appo.algorithms.Algorithm.omega_anchor`)."""
        cfg, c = self.cfg, self.c
        current = anchor = None
        anchor_name = self.algorithm.omega_anchor(cfg)
        if anchor_name is not None:
            T = cfg.rollout.temperature
            anchor_model = {"previous": c.prev_model, "reference": c.ref_model}.get(anchor_name)
            current = teacher_forced_logp_fn(c.model, T)
            anchor = engine_logprobs if anchor_model is None else teacher_forced_logp_fn(anchor_model, T)
        return RolloutContext.create(c.engine, c.tokenizer, cfg.rollout.protocol, c.tools, sampling_params(cfg),
                                     loop_limits(cfg), seed=self.dist.rank_seed(cfg.trainer.seed * 1_000_003 + step),
                                     current_logp_fn=current, anchor_logp_fn=anchor, key_prefix=f"step{step}/")

    def update_options(self) -> UpdateOptions:
        """The PPO update settings from ``actor`` and the algorithm's loss switches (APPO: future-KL)."""
        a = self.cfg.actor
        return UpdateOptions(
            ppo_mini_batch_size=a.ppo_mini_batch_size, ppo_epochs=a.ppo_epochs,
            micro_batch_rows=a.ppo_micro_batch_size_per_gpu,
            max_tokens=a.ppo_max_token_len_per_gpu if a.use_dynamic_bsz else None,
            loss_agg_mode=a.loss_agg_mode, policy_loss=a.policy_loss, clip_ratio_low=a.clip_ratio_low,
            clip_ratio_high=a.clip_ratio_high, clip_ratio_c=a.clip_ratio_c, grad_clip=a.grad_clip,
            kl_loss_coef=a.kl_loss_coef if a.use_kl_loss else 0.0, kl_loss_type=a.kl_loss_type,
            entropy_coeff=a.entropy_coeff, temperature=self.cfg.rollout.temperature,
            rollout_is_cap=a.rollout_is_cap,
            **self.algorithm.loss_options(self.cfg))

    def layout(self, batch) -> Layout:
        """The step's log-prob layout (:func:`appo.train.layout.choose_layout`): ``tree`` per
        ``actor.shared_prefix`` (``auto``: the trie's estimated cost wins on ``batch``), else ``packed`` per
        ``actor.use_remove_padding``, else ``padded``. Chosen once; the old/reference pass and the update use it."""
        a = self.cfg.actor
        return choose_layout(a.shared_prefix, a.use_remove_padding, self.c.model, batch)

    def skip_old_logp(self, opts: UpdateOptions) -> bool:
        """``actor.old_logp=auto`` and the step is exactly on-policy (:func:`appo.train.update.on_policy_step`):
        in-process rollouts (no Ray workers), one epoch, one mini-batch over ``data.train_batch_size``."""
        return self.cfg.actor.old_logp == "auto" and on_policy_step(
            opts, self.cfg.data.train_batch_size, self.rollout_pool is None, self.c.model)

    def push_rollout_weights(self, with_previous: bool = False) -> None:
        """Ray workers: push the policy's trainable weights (one ``ray.put``), and with ``with_previous`` the
        previous policy's (APPO's ``previous`` anchor); otherwise the last push becomes the previous one."""
        from appo.distributed.ray_rollout import policy_weights

        c = self.c
        weights = policy_weights(c.model)
        previous = policy_weights(c.prev_model, list(weights)) if with_previous and c.prev_model is not None else None
        self.rollout_pool.set_weights(weights, previous=previous)

    def train_step(self, step: int) -> dict[str, float]:
        """One step: generate -> reward -> advantage -> old log-probs -> update. Returns its metrics."""
        cfg, c, m = self.cfg, self.c, {}
        t0 = time.perf_counter()
        indices = self.dist.shard_prompts(self.sampler.next_indices(),
                                          cfg.actor.ppo_mini_batch_size)  # this rank's share
        examples = [c.train_examples[i] for i in indices]

        # 1. Rollouts: the algorithm's strategy (independent / arpo / appo / tree) through the tool loop.
        c.model.eval()
        with timer("gen", m):
            ctx = self.rollout_context(step)
            prompts = prompt_specs(ctx, examples, indices, system_prompt=self.system_prompt)
            check_prompt_lengths(prompts, examples, cfg.data.max_prompt_length)
            run = run_strategy if self.rollout_pool is None else self.rollout_pool.run_strategy  # in-process or Ray
            out = run(self.algorithm.strategy, ctx, prompts, self.algorithm.strategy_config(cfg))
        rows = out.rows

        # 2. Rewards, one per row (initial and branch rows alike).
        with timer("reward", m):
            scored = c.reward_fn([examples[r.group] for r in rows], [r.response_text for r in rows])
            rewards_N = torch.tensor([s.score for s in scored], dtype=torch.float32)

        # 3. Advantages: token-level [N, T] from the registry.
        with timer("adv", m):
            adv_opts = self.algorithm.advantage_options(cfg)
            trained = self.algorithm.trained_rows(cfg, rows)
            batch = collate(rows, c.tokenizer.pad_token_id, trained)  # the rows' tensors, built once
            adv_NT, adv_metrics = self.estimator(advantage_inputs(rows, rewards_N, batch.response_mask_BR), **adv_opts)
            batch = with_advantages(batch, adv_NT)

        # 4. Old (and reference) log-probs, recomputed by the trainer as in verl; on-policy steps skip the
        #    old pass (the update's own log-probs, detached, are the old ones).
        T, max_tok = cfg.rollout.temperature, cfg.actor.ppo_max_token_len_per_gpu
        opts = self.update_options()
        layout = self.layout(batch)  # the one choice of padded | packed | tree for this step
        opts = dataclasses.replace(opts, old_logp_from_current=self.skip_old_logp(opts), layout=layout)
        m["actor/shared_prefix"] = float(layout == "tree")
        with timer("old_log_prob", m):
            old_logp = batch.old_logp_BR if opts.old_logp_from_current else \
                batched_logprobs(c.model, batch, layout, T, max_tokens=max_tok)[0]
            ref_logp = None
            if c.ref_model is not None and cfg.actor.use_kl_loss:
                ref_logp, _ = batched_logprobs(c.ref_model, batch, layout, T, max_tokens=max_tok)
            batch = with_fields(batch, old_logp_BR=old_logp, ref_logp_BR=ref_logp)

        # 5. Keep the policy as it is before this update: APPO's `previous` anchor at the next step.
        if c.prev_model is not None:
            c.prev_model.load_state_dict(c.model.state_dict())

        # 6. PPO mini-batch updates.
        with timer("update_actor", m):
            m.update(ppo_update(c.train_model, c.optimizer, batch, opts, c.scheduler, self.dist))
            self.dist.pull_weights(c)  # FSDP2: the rollout copy gets the new full weights
        if self.rollout_pool is not None:
            with timer("sync_weights", m):
                self.push_rollout_weights()  # Ray workers: the new weights through the object store
        c.model.eval()

        # 7. Metrics (verl names) and the rollout dump for the report.
        m.update(out.metrics)
        m.update({f"critic/{k}": v for k, v in adv_metrics.items()})
        m.update(batch_metrics(batch, rewards_N, cfg.data.max_response_length))
        m.update({f"reward/{k}": v for k, v in reduce_metrics([s.metrics for s in scored]).items()})
        m["timing_s/step"] = time.perf_counter() - t0
        done, every = step + 1, cfg.trainer.dump_rollouts_freq
        if every > 0 and (done == 1 or done % every == 0 or done == cfg.trainer.total_training_steps):
            record = step_record(done, rows, examples, scored, adv_NT, self.texts, {"algorithm": cfg.algorithm.name},
                                 trained=trained)
            record = self.dist.gather_step_record(record, cfg.actor.ppo_mini_batch_size)  # None except on rank 0
            if record is not None:
                write_step(self.run_dir, record)
        return self.dist.reduce_metrics(m)  # over ranks: counts summed, means averaged

    # ------------------------------------------------------------------------------------ the run
    def validate(self, step: int) -> dict:
        """Rollouts sampled as ``rollout.val_kwargs`` says (greedy by default, ``n`` per problem) over the
        validation set after ``step`` steps; writes every scored answer to ``val/step_XXXXXX.json`` and
        returns the summary by source. With ``trainer.val_greedy`` and a sampling temperature > 0, a greedy
        pass over the same problems follows (``val/greedy_step_XXXXXX.json``; sources ``greedy_<source>``)."""
        cfg = self.cfg
        params = sampling_params(cfg, validation=True)
        summary = self._validate_pass(step, params, cfg.rollout.val_kwargs.n, "")
        if cfg.trainer.val_greedy and params.temperature > 0:
            greedy = self._validate_pass(step, replace(params, temperature=0.0, top_p=1.0, top_k=0), 1, "greedy_")
            summary.update({f"greedy_{source}": s for source, s in greedy.items()})
        return summary

    def _validate_pass(self, step: int, params, n: int, prefix: str) -> dict:
        """One validation pass with ``params``, ``n`` samples per problem, written to ``val/<prefix>step_N.json``."""
        cfg, c = self.cfg, self.c
        c.model.eval()
        examples, result = self.dist.shard_list(c.val_examples), None  # this rank's share (all, in one process)
        if examples:
            result = evaluate(c.engine, c.tokenizer, examples, reward_fn=c.reward_fn, tools=c.tools,
                              protocol=cfg.rollout.protocol, params=params, limits=loop_limits(cfg), n=n,
                              batch_size=cfg.data.val_batch_size or cfg.rollout.max_batch_size,
                              seed=cfg.trainer.seed, system_prompt=self.system_prompt)
        result = self.dist.gather_eval(result)  # every rank's rows, pooled
        if self.dist.is_main:
            result.to_json(self.run_dir / "val" / f"{prefix}step_{step:06d}.json")
        return result.summary

    def fit(self) -> TrainResult:
        """Run from ``start_step`` to ``trainer.total_training_steps``; checkpoints, validation, logs."""
        t = self.cfg.trainer
        result = TrainResult(self.run_dir, self.start_step)
        main = self.dist.is_main  # only rank 0 logs
        logger = MetricsLogger(self.run_dir, t.logger, project=t.project_name, experiment=t.experiment_name,
                               resume_step=self.start_step if self.start_step else None,
                               console_keys=CONSOLE_KEYS) if main else Quiet()
        progress = (ProgressDisplay(t.total_training_steps, t.experiment_name, start=self.start_step) if main
                    else Quiet())
        stop = StopRequest(enabled=not self.dist.enabled)  # Ctrl-C: finish the step, save, stop (module interrupt)
        try:
            stop.__enter__()
            if self.c.val_examples and t.val_before_train and self.start_step == 0:
                result.val[0] = self.validate(0)
                logger.log(_val_metrics(result.val[0]), step=0)
            for step in range(self.start_step, t.total_training_steps):
                metrics = self.train_step(step)
                done = step + 1
                last = done == t.total_training_steps
                if self.c.val_examples and t.test_freq > 0 and (done % t.test_freq == 0 or last):
                    result.val[done] = self.validate(done)
                    metrics.update(_val_metrics(result.val[done]))
                logger.log(metrics, step=done)
                result.history.append(metrics)
                result.steps = done
                progress.update(done, reward=metrics.get("critic/score/mean"), acc=metrics.get("reward/acc"),
                                val_acc=metrics.get("val/all/acc"))
                scheduled = t.save_freq > 0 and (done % t.save_freq == 0 or done == t.total_training_steps)
                if scheduled or stop.requested:  # Ctrl-C: the finished step is saved, the resume point
                    self.save(done)
                if stop.requested and done < t.total_training_steps:
                    raise self.interrupted(done)
        except BaseException as exc:
            if stop.terminated:  # SIGTERM: whatever the exception became inside library code, exit 143
                raise SystemExit(SIGTERM_EXIT) from None
            if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, TrainingInterrupted):
                raise self.interrupted(result.steps) from None  # a second Ctrl-C (or the first under torchrun)
            raise
        finally:
            stop.__exit__(None, None, None)
            progress.close()
            logger.close()
        return result

    def interrupted(self, steps_done: int) -> TrainingInterrupted:
        """The :class:`TrainingInterrupted` after ``steps_done`` steps: the newest complete checkpoint on
        disk, and ``trainer.resume_mode=auto`` when this run was started without resuming from it."""
        ckpts = list_checkpoints(self.run_dir)
        overrides = () if self.cfg.trainer.resume_mode == "auto" else ("trainer.resume_mode=auto",)
        return TrainingInterrupted(self.run_dir, steps_done, ckpts[-1] if ckpts else None, overrides)

    # ------------------------------------------------------------------------------ checkpointing
    def close(self) -> None:
        """Stop the Ray rollout workers (if any), the engine's own processes (an engine with ``close``, e.g.
        vLLM's), and leave the process group (if this run joined one)."""
        if self.rollout_pool is not None:
            self.rollout_pool.close()
            self.rollout_pool = None
        close_engine = getattr(self.c.engine, "close", None)
        if close_engine is not None:
            close_engine()
        self.dist.close()

    def save(self, step: int) -> Path | None:
        """Atomic checkpoint: weights, optimizer, scheduler, RNG, sampler position, previous policy.
        Written by rank 0 only (None elsewhere); every rank waits for it."""
        c = self.c
        extra = {"prev_model": c.prev_model.state_dict()} if c.prev_model is not None else {}
        optimizer = self.dist.savable_optimizer(c)  # FSDP2: the full state, gathered by every rank
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.run_dir, step, c.model, optimizer, c.scheduler,
                                   data_state=self.sampler.state_dict(),
                                   extra=extra, tokenizer=c.tokenizer, keep=self.cfg.trainer.max_actor_ckpt_to_keep)
        self.dist.barrier()
        return path

    def resume_source(self) -> Path | None:
        """The checkpoint folder this run will resume from (``trainer.resume_mode``), or None (fresh start)."""
        t = self.cfg.trainer
        if t.resume_mode == "disable":
            return None
        if t.resume_mode == "resume_path":
            return Path(t.resume_from_path)
        ckpts = list_checkpoints(self.run_dir)
        return ckpts[-1] if ckpts else None

    def check_resume(self) -> None:
        """Refuse to resume with a config that changes the run's trajectory (:mod:`appo.train.resume_check`):
        compared with the ``config.yaml`` of the run that wrote the checkpoint."""
        source = self.resume_source()
        if source is None:
            return
        run_dir = source.parent.parent if source.parent.name == "checkpoints" else self.run_dir
        digits = source.name.removeprefix("step_")
        check_resume_config(run_dir / "config.yaml", self.cfg, int(digits) if digits.isdigit() else None)

    def _resume(self) -> int:
        t = self.cfg.trainer
        if t.resume_mode == "disable":
            return 0
        if t.resume_mode == "resume_path":
            ckpt = load_checkpoint(t.resume_from_path)
        else:
            ckpt = load_latest_checkpoint(self.run_dir)
        if ckpt is None:
            return 0
        c = self.c
        restore(ckpt, c.model, self.dist.loadable_optimizer(c), c.scheduler)
        self.dist.push_weights(c)  # FSDP2: into the sharded training copy
        self.sampler.load_state_dict(ckpt.data_state)
        if c.prev_model is not None and "prev_model" in ckpt.extra:
            c.prev_model.load_state_dict(ckpt.extra["prev_model"])
        return ckpt.step


CONSOLE_KEYS = ("critic/score/mean", "reward/acc", "rollout/tool_calls_per_rollout", "rollout/branches_per_prompt",
                "actor/pg_clipfrac", "actor/grad_norm", "response_length/mean", "timing_s/step", "val/all/acc")
"""Metrics printed on the console each step (all of them go to JSONL / TensorBoard)."""


def check_prompt_lengths(prompts, examples, max_len: int) -> None:
    """Refuse a prompt longer than ``data.max_prompt_length`` (verl's ``truncation: error``), naming it."""
    for p in prompts:
        if len(p.prompt_ids) > max_len:
            ex = examples[p.group]
            raise ValueError(f"example {ex.id!r} has a {len(p.prompt_ids)}-token prompt (system prompt and chat "
                             f"template included), over data.max_prompt_length={max_len}; raise "
                             "data.max_prompt_length, shorten rollout.system_prompt, or drop long examples "
                             "(data.train_files)")


def _val_metrics(summary: dict) -> dict[str, float]:
    return {f"val/{source}/{k}": v for source, s in summary.items() for k, v in s.items()}


def train(cfg: Config, train_dataset: Any = None, val_dataset: Any = None) -> TrainResult:
    """Train with ``cfg`` (see :mod:`appo.config`); the Python call behind ``appo train`` (and of
    each rank under ``torchrun``). ``train_dataset`` / ``val_dataset``: a ``datasets.Dataset`` or
    ``DatasetDict`` (TRL or verl rows), a list of row dicts or of Examples, used instead of
    ``data.train_files`` / ``data.val_files`` (see :mod:`appo.data.hf`); the run's saved config does not
    record them, so resuming such a run needs the same datasets passed again."""
    trainer = Trainer(cfg, train_dataset=train_dataset, val_dataset=val_dataset)
    try:
        return trainer.fit()
    finally:
        trainer.close()
