"""Sequence packing (actor.use_remove_padding): packed log-probs, entropies and gradients equal the
padded computation, rows in one pack cannot see each other, bins respect their budgets."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from run_helpers import tiny_base, tiny_config

from appo.train.batching import collate, with_fields
from appo.train.layout import batched_logprobs
from appo.train.logprobs import compute_logprobs
from appo.train.packing import check_packing_support, pack_micro_batches, pack_rows, packed_logprobs
from appo.train.update import UpdateOptions, ppo_update
from appo.types import Rollout


def _rollouts(V: int, n: int = 7, seed: int = 0, groups: int = 1) -> list[Rollout]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p, r = rng.randint(1, 9), rng.randint(1, 16)
        out.append(Rollout(group=i % groups, uid=i // groups, prompt_ids=tuple(rng.randrange(V) for _ in range(p)),
                           response_ids=tuple(rng.randrange(V) for _ in range(r)), logprobs=(0.0,) * r,
                           entropies=(0.0,) * r, loss_mask=tuple(int(rng.random() < 0.8) for _ in range(r)),
                           stop_reason="eos"))
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_packed_logprobs_equal_padded(tiny_model, tiny_tokenizer, temperature):
    batch = collate(_rollouts(len(tiny_tokenizer), seed=int(temperature * 10)), pad_id=tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        ref_logp, ref_ent = compute_logprobs(tiny_model, batch, temperature, with_entropy=True)
        one = pack_rows(batch, list(range(batch.responses_BR.shape[0])))  # every row in one sequence
        logp, ent = packed_logprobs(tiny_model, one, temperature, with_entropy=True)
    assert one.input_ids_1S.shape[1] == int(batch.attention_mask_BL.sum())  # no padding left
    torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=0)
    # several packs under a token budget, put back in row order
    logp2, ent2 = batched_logprobs(tiny_model, batch, "packed", temperature, with_entropy=True, max_tokens=24)
    torch.testing.assert_close(logp2, ref_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent2, ref_ent, atol=1e-5, rtol=0)


def test_rows_in_a_pack_do_not_attend_to_each_other(tiny_model, tiny_tokenizer):
    V = len(tiny_tokenizer)
    rows = _rollouts(V, n=3, seed=1)
    changed = list(rows)
    changed[0] = dataclasses.replace(rows[0], prompt_ids=tuple((t + 1) % V for t in rows[0].prompt_ids),
                                     response_ids=tuple((t + 5) % V for t in rows[0].response_ids))
    outs = []
    for rs in (rows, changed):
        batch = collate(rs, pad_id=tiny_tokenizer.pad_token_id)
        with torch.no_grad():
            outs.append(packed_logprobs(tiny_model, pack_rows(batch, [0, 1, 2]))[0])
    assert not torch.allclose(outs[0][0], outs[1][0])  # the changed row's own log-probs move
    torch.testing.assert_close(outs[0][1:], outs[1][1:], atol=1e-6, rtol=0)  # its pack-mates' do not


def test_packed_gradients_equal_padded(tiny_model, tiny_tokenizer):
    batch = collate(_rollouts(len(tiny_tokenizer), seed=3), pad_id=tiny_tokenizer.pad_token_id)
    grads = []
    for packed in (False, True):
        tiny_model.zero_grad(set_to_none=True)
        if packed:
            logp, _ = packed_logprobs(tiny_model, pack_rows(batch, list(range(batch.responses_BR.shape[0]))))
        else:
            logp, _ = compute_logprobs(tiny_model, batch)
        (logp * batch.loss_mask_BR).sum().backward()
        grads.append({k: p.grad.clone() for k, p in tiny_model.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-5, rtol=1e-4)


def test_bins_respect_budgets_and_hold_every_row_once(tiny_tokenizer):
    batch = collate(_rollouts(len(tiny_tokenizer), n=12, seed=4), pad_id=tiny_tokenizer.pad_token_id)
    lengths = batch.attention_mask_BL.sum(1)
    for max_tokens, max_rows in [(20, None), (30, 2), (None, 3), (1, None)]:
        packs = pack_micro_batches(batch, max_tokens=max_tokens, max_rows=max_rows)
        rows = sorted(r for p in packs for r in p.rows.tolist())
        assert rows == list(range(12))
        for p in packs:
            real = int(lengths[p.rows].sum())
            assert p.input_ids_1S.shape[1] == real
            assert max_tokens is None or real <= max_tokens or len(p.rows) == 1
            assert max_rows is None or len(p.rows) <= max_rows
            assert (p.position_ids_1S[0] == 0).sum() == len(p.rows)  # positions restart once per row
    assert len(pack_micro_batches(batch, max_tokens=20)) < 12  # short rows do share packs
    with pytest.raises(ValueError, match="max_tokens"):
        pack_micro_batches(batch, max_tokens=0)


def test_models_that_may_ignore_packed_positions_are_refused(tiny_model):
    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = tiny_model.config

    check_packing_support(tiny_model)  # transformers' own Llama: fine
    with pytest.raises(ValueError, match="use_remove_padding=false"):
        check_packing_support(Custom())


def test_packed_update_equals_padded_update(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    batch = collate(_rollouts(len(tiny_tokenizer), n=8, seed=5, groups=4), pad_id=tiny_tokenizer.pad_token_id,
                    advantages_NT=torch.randn(8, 16, generator=torch.Generator().manual_seed(0)))
    params = []
    for pack in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        with torch.no_grad():
            old, _ = compute_logprobs(model, batch)
        opts = UpdateOptions(ppo_mini_batch_size=2, micro_batch_rows=3, layout="packed" if pack else "padded",
                             future_kl=True)
        ppo_update(model, torch.optim.SGD(model.parameters(), lr=0.1), with_fields(batch, old_logp_BR=old - 0.1), opts)
        params.append({k: p.detach() for k, p in model.named_parameters()})
    diff = max(float((params[0][k] - params[1][k]).abs().max()) for k in params[0])
    assert diff < 1e-6


def test_trainer_step_with_packing_and_token_budget(tmp_path):
    from safetensors.torch import load_file

    from appo.train.trainer import train

    base = tiny_base(tmp_path / "base")
    cfg = tiny_config(base, tmp_path / "run", "actor.use_remove_padding=true", "actor.use_dynamic_bsz=true",
                      "actor.ppo_max_token_len_per_gpu=96", "trainer.total_training_steps=1")
    result = train(cfg)
    before = load_file(base / "model.safetensors")
    after = load_file(tmp_path / "run" / "checkpoints" / "step_000001" / "model" / "model.safetensors")
    assert result.steps == 1 and any(not torch.equal(before[k], after[k]) for k in before)
