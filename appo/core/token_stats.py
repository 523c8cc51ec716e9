"""Logits -> chosen-token log-prob and entropy: the one kernel the engine, the scorer and the trainer share.

For logits ``l`` over a vocabulary, temperature ``T > 0`` and a chosen token ``a``, with ``z = l / T`` (float32):

- ``lse = logsumexp(z)``;
- ``logp(a) = z_a - lse``  (``log softmax(z)[a]``, without materialising the full log-softmax);
- ``H = lse - sum_v softmax(z)_v z_v``  (``-sum_v p_v log p_v``; entries at ``-inf`` contribute 0).

APPO's ratios compare numbers produced in the engine (sampling), the scorer (Omega's teacher-forced
log-probs) and the trainer (old and current log-probs); computing them with one formula keeps them
bit-for-bit consistent where the logits are. Temperature 0 (greedy) is the caller's choice to map to 1.

Memory: without gradient, the tokens are processed in chunks of at most ``chunk_elements`` logits
(``tokens x vocab``), so the float32 temporaries stay bounded for big vocabularies (SmolLM2's 49,152).
With gradient, one piece (autograd keeps the softmax either way). Left out: fusing the LM head
(liger-style); the caller computes the logits.
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 24
"""Default no-grad chunk: 16M float32 logits (64 MB) per temporary."""


def token_stats(
    logits_BTV: torch.Tensor,
    targets_BT: torch.Tensor,
    temperature: float = 1.0,
    *,
    with_entropy: bool = True,
    entropy_grad: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logp_BT, entropy_BT or None)`` float32 for logits ``[..., V]`` and chosen tokens ``[...]``.

    See the module docstring for the formulas. Differentiable w.r.t. ``logits_BTV`` when grad is
    enabled; the entropy then carries gradient only with ``entropy_grad`` (an entropy bonus). Leading
    dimensions are free (``[B, V]``, ``[B, T, V]``, ``[K, V]``).
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (map greedy decoding to 1 before calling)")
    if logits_BTV.shape[:-1] != targets_BT.shape:
        raise ValueError(f"logits {tuple(logits_BTV.shape)} and targets {tuple(targets_BT.shape)} disagree: "
                         "logits need one more (vocabulary) dimension than targets")
    lead, V = targets_BT.shape, logits_BTV.shape[-1]
    z_NV = logits_BTV.reshape(-1, V)
    t_N = targets_BT.reshape(-1)
    N = t_N.numel()
    step = max(1, chunk_elements // max(V, 1))
    if torch.is_grad_enabled() and logits_BTV.requires_grad or N <= step:
        logp, ent = _stats(z_NV, t_N, temperature, with_entropy, entropy_grad)
    else:
        parts = [_stats(z_NV[i : i + step], t_N[i : i + step], temperature, with_entropy, entropy_grad)
                 for i in range(0, N, step)]
        logp = torch.cat([p[0] for p in parts])
        ent = torch.cat([p[1] for p in parts]) if with_entropy else None
    return logp.reshape(lead), ent.reshape(lead) if ent is not None else None


def _stats(logits_NV, t_N, temperature, with_entropy, entropy_grad):
    z_NV = logits_NV.float()
    if temperature != 1.0:
        z_NV = z_NV / temperature
    lse_N = torch.logsumexp(z_NV, dim=-1)
    logp_N = z_NV.gather(-1, t_N.unsqueeze(-1)).squeeze(-1) - lse_N
    ent_N = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            p_NV = torch.exp(z_NV - lse_N.unsqueeze(-1))
            ent_N = lse_N - (p_NV * z_NV).nansum(-1)  # nansum: 0 * -inf = 0 for masked entries
    return logp_N, ent_N
