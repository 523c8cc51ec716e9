"""Rollout/trainer mismatch: a planted gap between the engine's and the trainer's log-probs. The update takes
the trainer's old log-probs (never the engine's), logs the gap, and with ``rollout_is_cap`` weights each
token by ``min(pi_old / mu, cap)``: exactly the update without the switch on advantages scaled by that weight."""

from __future__ import annotations

import math
import random

import pytest
import torch

from appo.config import load_config
from appo.core.rollout_correction import mismatch_metrics, truncated_is_weights
from appo.train.batching import collate, with_fields
from appo.train.layout import batched_logprobs
from appo.train.update import UpdateOptions, ppo_update
from appo.types import Rollout


def test_truncated_weights_and_metrics_by_hand():
    old = torch.tensor([[-1.0, -2.0, -0.5, 0.0]])
    mu = torch.tensor([[-1.0, -1.0, -3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = truncated_is_weights(old, mu, cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[1.0, math.exp(-1.0), 2.0, 1.0]]))  # e^{2.5} > 2: truncated
    m = mismatch_metrics(old, mu, mask, cap=2.0)
    assert m["rollout_corr/logp_abs_diff"] == pytest.approx((0 + 1 + 2.5) / 3)
    d = torch.tensor([0.0, -1.0, 2.5], dtype=torch.float64)
    assert m["rollout_corr/kl"] == pytest.approx(float((d.exp() - 1 - d).mean()))
    assert m["rollout_corr/is_weight"] == pytest.approx((1 + math.exp(-1) + 2) / 3)
    assert m["rollout_corr/is_clipped_frac"] == pytest.approx(1 / 3)
    assert mismatch_metrics(old, mu, torch.zeros_like(mask)) == {}
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(old, mu, cap=0.0)


def _rows(V: int, n: int = 6, seed: int = 0) -> list[Rollout]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p, r = rng.randint(3, 7), rng.randint(4, 10)
        rows.append(Rollout(group=i % 2, uid=i // 2, prompt_ids=tuple(rng.randrange(V) for _ in range(p)),
                            response_ids=tuple(rng.randrange(V) for _ in range(r)), logprobs=(0.0,) * r,
                            entropies=(0.0,) * r, loss_mask=(1,) * r, stop_reason="eos"))
    return rows


def _params(model):
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def test_planted_mismatch_old_logp_is_the_trainers_and_is_weights_apply(tiny_model_dir, tiny_tokenizer, one_thread):
    from transformers import AutoModelForCausalLM

    def fresh():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)

    rows = _rows(len(tiny_tokenizer))
    adv = torch.randn(len(rows), 16, generator=torch.Generator().manual_seed(1))
    batch = collate(rows, tiny_tokenizer.pad_token_id, None, adv)
    trainer_logp, _ = batched_logprobs(fresh(), batch)
    gap = torch.randn(trainer_logp.shape, generator=torch.Generator().manual_seed(2)) * 1.5  # planted
    engine_logp = (trainer_logp - gap) * batch.response_mask_BR
    batch = with_fields(batch, old_logp_BR=engine_logp, rollout_logp_BR=engine_logp)
    cap = 2.0

    def run(b, **kw):
        model = fresh()
        metrics = ppo_update(model, torch.optim.SGD(model.parameters(), lr=0.5), b,
                             UpdateOptions(ppo_mini_batch_size=2, micro_batch_rows=6, **kw))
        return _params(model), metrics

    # on-policy path (old = current, detached): the engine's log-probs are logged, never used as pi_old
    p_is, m_is = run(batch, old_logp_from_current=True, rollout_is_cap=cap)
    assert m_is["actor/ppo_kl"] == pytest.approx(0.0, abs=1e-6) and m_is["actor/pg_clipfrac"] == 0.0
    mask = batch.loss_mask_BR
    expected = mismatch_metrics(trainer_logp, engine_logp, mask, cap)
    assert m_is["rollout_corr/logp_abs_diff"] == pytest.approx(expected["rollout_corr/logp_abs_diff"], rel=1e-3)
    assert m_is["rollout_corr/is_clipped_frac"] > 0.05  # the planted gap reaches the cap somewhere

    # the same update without the switch, advantages scaled by the weights computed here by hand
    w = torch.exp(trainer_logp - engine_logp).clamp(max=cap)
    scaled = with_fields(batch, advantages_BR=batch.advantages_BR * w)
    p_ref, m_ref = run(scaled, old_logp_from_current=True)
    assert max(float((p_is[k] - p_ref[k]).abs().max()) for k in p_is) < 1e-6
    assert "rollout_corr/is_weight" not in m_ref and "rollout_corr/logp_abs_diff" in m_ref  # logged either way

    # the recomputing path (verl's): old log-probs recomputed by the trainer give the same update
    p_re, _ = run(with_fields(batch, old_logp_BR=trainer_logp), rollout_is_cap=cap)
    assert max(float((p_is[k] - p_re[k]).abs().max()) for k in p_is) < 1e-5
    p_off, _ = run(batch, old_logp_from_current=True)
    assert max(float((p_is[k] - p_off[k]).abs().max()) for k in p_is) > 1e-4  # the switch changes the step


def test_config_field_reaches_the_update_options(tmp_path):
    cfg = load_config(None, ["actor.rollout_is_cap=2.0"])
    assert cfg.actor.rollout_is_cap == 2.0
    assert load_config(None).actor.rollout_is_cap == 0.0
