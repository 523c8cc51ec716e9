"""Helpers shared by the engine tests (imported by name: the tests folders are not packages)."""

from __future__ import annotations

import torch


def sharpen(model, scale: float = 4.0):
    """Scale every non-norm weight in place: the random-init model's near-uniform logits become peaked."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(scale)
    return model


def full_logits(model, ids) -> torch.Tensor:
    """Logits ``[T, V]`` (float32) of one full forward over ``ids`` with no cache."""
    with torch.inference_mode():
        return model(torch.tensor([list(ids)])).logits[0].float()


def teacher_forced(model, prefix, tokens, temperature: float = 1.0):
    """Reference log-probs and entropies of ``tokens`` after ``prefix`` from one full forward."""
    logits = full_logits(model, list(prefix) + list(tokens))
    T = temperature if temperature > 0 else 1.0
    lp = torch.log_softmax(logits[len(prefix) - 1 : len(prefix) - 1 + len(tokens)] / T, -1)
    ent = -(lp.exp() * lp).sum(-1)
    got = lp.gather(-1, torch.tensor(list(tokens))[:, None]).squeeze(-1)
    return got, ent, logits[len(prefix) - 1 : len(prefix) - 1 + len(tokens)]
