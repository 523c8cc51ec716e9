"""Training rows: a whole APPO step in bf16 and in mixed precision, then 5 PPO updates on its batch; checkpoint
save and resume against an uninterrupted run."""

from __future__ import annotations

import copy
import math
from pathlib import Path

from gpu_checks.common import finite, train_cfg, weight_gap, weights


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
