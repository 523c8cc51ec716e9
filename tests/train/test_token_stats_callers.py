"""Every caller of the log-prob/entropy kernel gives the same numbers on the tiny Llama: the engine's
sampler, the teacher-forced scorer, the padded and the packed trainer paths, against a naive full-forward
reference (APPO's ratios compare these numbers with each other)."""

from __future__ import annotations

import random

import pytest
import torch

from appo.engine.sampling import sample_next
from appo.engine.scoring import score_sequences
from appo.train.batching import collate
from appo.train.logprobs import compute_logprobs
from appo.train.packing import pack_rows, packed_logprobs
from appo.types import Rollout


def _reference(model, seq: list[int], start: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One unbatched full forward, log_softmax over the whole vocabulary, entropy as -sum p log p."""
    with torch.no_grad():
        z = model(input_ids=torch.tensor([seq])).logits[0].double() / temperature
    logp_TV = torch.log_softmax(z, -1)
    t = torch.tensor(seq[start:])
    logp = logp_TV[start - 1 : len(seq) - 1].gather(-1, t[:, None]).squeeze(-1)
    ent = -(logp_TV.exp() * logp_TV)[start - 1 : len(seq) - 1].sum(-1)
    return logp.float(), ent.float()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_all_callers_agree(tiny_model, tiny_tokenizer, temperature):
    rng = random.Random(3)
    V = len(tiny_tokenizer)
    rows = []
    for g in range(5):
        p, n = rng.randint(2, 9), rng.randint(1, 12)
        rows.append(Rollout(group=g, uid=0, prompt_ids=tuple(rng.randrange(V) for _ in range(p)),
                            response_ids=tuple(rng.randrange(V) for _ in range(n)), logprobs=(0.0,) * n,
                            entropies=(0.0,) * n, loss_mask=(1,) * n, stop_reason="eos"))
    seqs = [list(r.prompt_ids + r.response_ids) for r in rows]
    starts = [len(r.prompt_ids) for r in rows]
    refs = [_reference(tiny_model, s, st, temperature) for s, st in zip(seqs, starts)]
    scored = score_sequences(tiny_model, seqs, starts, temperature, batch_size=3)
    batch = collate(rows, pad_id=tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        padded = compute_logprobs(tiny_model, batch, temperature, with_entropy=True)
        packed = packed_logprobs(tiny_model, pack_rows(batch, list(range(len(rows)))), temperature, with_entropy=True)
    for i, (ref_logp, ref_ent) in enumerate(refs):
        n = len(ref_logp)
        for logp, ent in (scored[i], (padded[0][i, :n], padded[1][i, :n]), (packed[0][i, :n], packed[1][i, :n])):
            torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=0)
            torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=0)
    # the sampler reports the same kernel's numbers for the token it draws, from the same logits
    with torch.no_grad():
        last = torch.stack([tiny_model(input_ids=torch.tensor([s])).logits[0, -1] for s in seqs])
    tok, logp, ent = sample_next(last, temperature, generator=torch.Generator().manual_seed(0))
    full = torch.log_softmax(last.double() / temperature, -1)
    torch.testing.assert_close(logp, full.gather(-1, tok[:, None]).squeeze(-1).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, -(full.exp() * full).sum(-1).float(), atol=1e-5, rtol=0)
