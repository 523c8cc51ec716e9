"""The log-prob/entropy kernel against a naive per-token reference: temperatures, -inf entries,
chunking, gradients, shape errors."""

from __future__ import annotations

import math

import pytest
import torch

from appo.core.token_stats import token_stats


def naive(logits_NV: torch.Tensor, t_N: torch.Tensor, temperature: float) -> tuple[list[float], list[float]]:
    """Plain Python: p = softmax(l / T); logp = log p[a]; H = -sum p log p (0 log 0 = 0)."""
    logp, ent = [], []
    for row, a in zip(logits_NV.double().tolist(), t_N.tolist()):
        z = [x / temperature for x in row]
        m = max(z)
        s = sum(math.exp(x - m) for x in z)
        p = [math.exp(x - m) / s for x in z]
        logp.append(math.log(p[a]))
        ent.append(-sum(q * math.log(q) for q in p if q > 0))
    return logp, ent


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_matches_naive_reference(temperature):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 4
    targets = torch.randint(0, 11, (3, 5), generator=g)
    logp, ent = token_stats(logits, targets, temperature)
    ref_logp, ref_ent = naive(logits.reshape(-1, 11), targets.reshape(-1), temperature)
    assert logp.shape == ent.shape == (3, 5) and logp.dtype == torch.float32
    torch.testing.assert_close(logp.reshape(-1), torch.tensor(ref_logp, dtype=torch.float32), atol=1e-5, rtol=0)
    torch.testing.assert_close(ent.reshape(-1), torch.tensor(ref_ent, dtype=torch.float32), atol=1e-5, rtol=0)


def test_masked_entries_contribute_nothing():
    logits = torch.tensor([[0.0, float("-inf"), 1.0, float("-inf")]])
    logp, ent = token_stats(logits, torch.tensor([2]))
    ref_logp, ref_ent = naive(torch.tensor([[0.0, -1e30, 1.0, -1e30]]), torch.tensor([2]), 1.0)
    assert torch.isfinite(ent).all()
    assert logp.item() == pytest.approx(ref_logp[0], abs=1e-6)
    assert ent.item() == pytest.approx(ref_ent[0], abs=1e-6)


def test_chunking_without_grad_gives_the_same_numbers():
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(7, 9, 13, generator=g), torch.randint(0, 13, (7, 9), generator=g)
    whole = token_stats(logits, targets, 0.8)
    with torch.no_grad():
        chunked = token_stats(logits, targets, 0.8, chunk_elements=13 * 5)  # 5 tokens per chunk, 63 tokens
    torch.testing.assert_close(chunked[0], whole[0], atol=0, rtol=0)
    torch.testing.assert_close(chunked[1], whole[1], atol=0, rtol=0)


def test_gradients_and_entropy_grad_switch():
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(4, 6, generator=g) * 2).requires_grad_()
    targets = torch.randint(0, 6, (4,), generator=g)
    logp, ent = token_stats(logits, targets, 1.0, entropy_grad=False)
    assert logp.requires_grad and not ent.requires_grad
    logp.sum().backward()
    p = torch.softmax(logits.detach(), -1)
    expected = torch.nn.functional.one_hot(targets, 6).float() - p  # d log p_a / d z = 1[a] - p
    torch.testing.assert_close(logits.grad, expected, atol=1e-6, rtol=0)
    _, ent = token_stats(logits, targets, 1.0, entropy_grad=True)
    assert ent.requires_grad
    _, no_ent = token_stats(logits, targets, 1.0, with_entropy=False)
    assert no_ent is None


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        token_stats(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match="disagree"):
        token_stats(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
