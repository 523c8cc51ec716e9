"""Skipping the old-log-prob pass on an exactly on-policy step: the update equals the recomputing path,
and the trainer skips only when one epoch, one mini-batch, in-process rollouts and no dropout hold."""

from __future__ import annotations

import random

import pytest
import torch
from run_helpers import tiny_base, tiny_config

import appo.train.trainer as trainer_mod
from appo.train.batching import collate, with_fields
from appo.train.layout import batched_logprobs
from appo.train.update import UpdateOptions, on_policy_step, ppo_update
from appo.types import Rollout


def _batch(V: int, pad_id: int, n: int = 8, groups: int = 2, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p, r = rng.randint(2, 9), rng.randint(1, 14)
        rows.append(Rollout(group=i % groups, uid=i // groups, prompt_ids=tuple(rng.randrange(V) for _ in range(p)),
                            response_ids=tuple(rng.randrange(V) for _ in range(r)), logprobs=(-1.0,) * r,
                            entropies=(0.0,) * r, loss_mask=tuple(int(rng.random() < 0.85) for _ in range(r)),
                            stop_reason="eos"))
    adv = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    return collate(rows, pad_id=pad_id, advantages_NT=adv)


@pytest.mark.parametrize("future_kl,micro_rows", [(False, 8), (True, 3)])
def test_update_from_current_logp_equals_recomputed(tiny_model_dir, tiny_tokenizer, future_kl, micro_rows):
    from transformers import AutoModelForCausalLM

    batch = _batch(len(tiny_tokenizer), tiny_tokenizer.pad_token_id)
    out = []
    for from_current in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        b = batch
        if not from_current:
            old, _ = batched_logprobs(model, batch, max_rows=5)  # other grouping than the update's
            b = with_fields(batch, old_logp_BR=old)
        opts = UpdateOptions(ppo_mini_batch_size=2, micro_batch_rows=micro_rows, future_kl=future_kl,
                             old_logp_from_current=from_current)
        metrics = ppo_update(model, torch.optim.SGD(model.parameters(), lr=0.5), b, opts)
        out.append(({k: p.detach().clone() for k, p in model.named_parameters()}, metrics))
    (p0, m0), (p1, m1) = out
    moved = max(float((p1[k] - p.detach()).abs().max()) for k, p in
                AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).named_parameters())
    assert moved > 1e-4  # the update did something
    assert max(float((p0[k] - p1[k]).abs().max()) for k in p0) < 1e-6
    assert m0["actor/pg_loss"] == pytest.approx(m1["actor/pg_loss"], abs=1e-6)
    assert m0["actor/grad_norm"] == pytest.approx(m1["actor/grad_norm"], rel=1e-5)


def test_on_policy_conditions(tiny_model):
    one = UpdateOptions(ppo_mini_batch_size=4, ppo_epochs=1)
    assert on_policy_step(one, 4, True, tiny_model)
    assert not on_policy_step(UpdateOptions(ppo_mini_batch_size=4, ppo_epochs=2), 4, True, tiny_model)
    assert not on_policy_step(UpdateOptions(ppo_mini_batch_size=2), 4, True, tiny_model)  # two mini-batches
    assert not on_policy_step(one, 4, False, tiny_model)  # rollouts from other weights (Ray workers)
    tiny_model.config.attention_dropout = 0.1
    assert not on_policy_step(one, 4, True, tiny_model)
    tiny_model.config.attention_dropout = 0.0
    tiny_model.model.layers[0].add_module("extra", torch.nn.Dropout(0.1))
    assert not on_policy_step(one, 4, True, tiny_model)


@pytest.mark.parametrize("extra,skips", [(("actor.ppo_mini_batch_size=2",), True),
                                         (("actor.ppo_mini_batch_size=2", "actor.old_logp=recompute"), False),
                                         (("actor.ppo_mini_batch_size=1",), False)])
def test_trainer_skips_the_pass_only_on_policy(tmp_path, monkeypatch, extra, skips):
    calls = []
    real = trainer_mod.batched_logprobs
    monkeypatch.setattr(trainer_mod, "batched_logprobs", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = tiny_config(tiny_base(tmp_path / "base"), tmp_path / "run", "trainer.total_training_steps=1",
                      "trainer.save_freq=-1", "actor.shared_prefix=false", *extra)
    tr = trainer_mod.Trainer(cfg)
    try:
        assert tr.skip_old_logp(tr.update_options()) is skips
        metrics = tr.train_step(0)
    finally:
        tr.close()
    assert (not calls) is skips
    assert metrics["actor/grad_norm"] > 0
