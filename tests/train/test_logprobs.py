"""compute_logprobs against a naive per-row computation on unpadded sequences."""

from __future__ import annotations

import random

import pytest
import torch

from appo.train.batching import collate, split_micro_batches
from appo.train.layout import batched_logprobs
from appo.train.logprobs import compute_logprobs
from appo.types import Rollout


def _rollouts(tok, n=6, seed=0):
    rng = random.Random(seed)
    V = len(tok)
    out = []
    for i in range(n):
        p, r = rng.randint(1, 9), rng.randint(1, 14)
        resp = [rng.randrange(V) for _ in range(r)]
        mask = tuple(int(rng.random() < 0.8) for _ in range(r))
        out.append(Rollout(group=0, uid=i, prompt_ids=tuple(rng.randrange(V) for _ in range(p)),
                           response_ids=tuple(resp), logprobs=(0.0,) * r, entropies=(0.0,) * r,
                           loss_mask=mask, stop_reason="eos"))
    return out


def _naive(model, r: Rollout, temperature: float):
    ids = torch.tensor([list(r.prompt_ids) + list(r.response_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double() / temperature
    logp_all = torch.log_softmax(logits, -1)
    P = len(r.prompt_ids)
    logp = [logp_all[P - 1 + t, tok].item() for t, tok in enumerate(r.response_ids)]
    ent = [-(logp_all[P - 1 + t].exp() * logp_all[P - 1 + t]).sum().item() for t in range(len(r.response_ids))]
    return torch.tensor(logp, dtype=torch.float64), torch.tensor(ent, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_naive_per_row(tiny_model, tiny_tokenizer, temperature):
    rows = _rollouts(tiny_tokenizer, seed=int(temperature * 10))
    batch = collate(rows, pad_id=tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        logp, ent = compute_logprobs(tiny_model, batch, temperature=temperature, with_entropy=True)
    assert logp.dtype == torch.float32 and logp.shape == batch.responses_BR.shape
    for i, r in enumerate(rows):
        n = len(r.response_ids)
        ref_logp, ref_ent = _naive(tiny_model, r, temperature)
        torch.testing.assert_close(logp[i, :n].double(), ref_logp, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(ent[i, :n].double(), ref_ent, atol=2e-5, rtol=1e-5)
        assert (logp[i, n:] == 0).all() and (ent[i, n:] == 0).all()
    # length-grouped micro-batches put back in order give the same numbers
    logp2, ent2 = batched_logprobs(tiny_model, batch, "padded", temperature, with_entropy=True, max_rows=2)
    torch.testing.assert_close(logp2, logp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent2, ent, atol=2e-5, rtol=1e-5)


def test_full_logits_fallback_gives_the_same(tiny_model, tiny_tokenizer, monkeypatch):
    from appo.models import lm_logits as L

    batch = collate(_rollouts(tiny_tokenizer, seed=3), pad_id=tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        kept, _ = compute_logprobs(tiny_model, batch)
        monkeypatch.setitem(L._ACCEPTS, type(tiny_model), False)
        full, _ = compute_logprobs(tiny_model, batch)
    torch.testing.assert_close(kept, full)


def test_gradients_flow_only_through_logp_and_micro_batch_works(tiny_model, tiny_tokenizer):
    batch = collate(_rollouts(tiny_tokenizer, seed=4), pad_id=tiny_tokenizer.pad_token_id)
    micro = split_micro_batches(batch, max_rows=3)[0]
    logp, ent = compute_logprobs(tiny_model, micro, with_entropy=True)
    assert logp.requires_grad and not ent.requires_grad
    (logp * micro.batch.loss_mask_BR).sum().backward()
    assert tiny_model.lm_head.weight.grad is not None and tiny_model.lm_head.weight.grad.abs().sum() > 0
    _, ent = compute_logprobs(tiny_model, micro, with_entropy=True, entropy_grad=True)
    assert ent.requires_grad
    with pytest.raises(ValueError, match="temperature"):
        compute_logprobs(tiny_model, micro, temperature=0)
