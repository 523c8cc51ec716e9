"""Per-token log-probs (and entropies) of response tokens under a causal LM, from a collated batch.

``logp[b, t] = log softmax(z[b, P - 1 + t] / temperature)[responses[b, t]]`` where z are the logits and
P the batch's prompt width (responses start at column P, verl layout); ``H[b, t] = logsumexp(z') -
sum softmax(z') * z'`` with ``z' = z / temperature`` is the entropy of the same next-token distribution.

Memory: the model is asked for the logits of the last R + 1 positions only (``logits_to_keep``, when its
forward accepts it: :func:`appo.models.lm_logits.keep_logits`), so prompt positions never reach the LM
head; log-prob and entropy come from :func:`appo.core.token_stats.token_stats` (fp32, ``gather(z') -
logsumexp(z')``), the kernel the engine and the scorer use too. The entropy is computed without gradient
unless ``entropy_grad`` (an entropy bonus).
Left out: chunking the vocabulary projection over the sequence (liger/verl's fused kernels); for long
responses with big vocabularies, use smaller micro-batches (:func:`appo.train.batching.split_micro_batches`).
"""

from __future__ import annotations

import torch

from appo.core.token_stats import token_stats
from appo.models.lm_logits import keep_logits
from appo.train.batching import MicroBatch
from appo.types import Batch


def compute_logprobs(
    model: torch.nn.Module,
    batch: Batch | MicroBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logp_BR, entropy_BR or None)``, float32 on the model's device, 0 at response padding.

    Differentiable w.r.t. the model when called with grad enabled (the update), or wrap the call in
    ``torch.no_grad()`` for old/reference log-probs (see :func:`appo.train.layout.batched_logprobs`). The model's
    train/eval mode is left as it is (dropout stays on in train mode).
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (log-probs of greedy decoding are undefined)")
    b = batch.batch if isinstance(batch, MicroBatch) else batch
    device = next(model.parameters()).device
    R = b.responses_BR.shape[1]
    logits = keep_logits(model, R + 1, input_ids=b.input_ids_BL.to(device),
                         attention_mask=b.attention_mask_BL.to(device),
                         position_ids=b.position_ids_BL.to(device), use_cache=False)
    mask = b.response_mask_BR.to(device)
    # position P - 1 + t predicts response token t
    logp_BR, entropy_BR = token_stats(logits[:, :-1], b.responses_BR.to(device), temperature, with_entropy=with_entropy,
                                      entropy_grad=entropy_grad)
    logp_BR = logp_BR * mask
    entropy_BR = entropy_BR * mask if entropy_BR is not None else None
    return logp_BR, entropy_BR


def scatter_response_stats(z_KV: torch.Tensor, responses_BR: torch.Tensor, rows_K: torch.Tensor,
                           cols_K: torch.Tensor, temperature: float, with_entropy: bool,
                           entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob (and entropy) of the K response tokens ``responses_BR[rows_K, cols_K]`` from the logits
    ``z_KV`` that predict them (:func:`appo.core.token_stats.token_stats`), scattered into zeros of the
    ``[B, R]`` response layout: the shared tail of the packed and shared-prefix layouts, whose forwards
    keep only those K logits."""
    responses_BR = responses_BR.to(z_KV.device)
    targets_K = responses_BR[rows_K, cols_K]
    logp_K, ent_K = token_stats(z_KV, targets_K, temperature, with_entropy=with_entropy, entropy_grad=entropy_grad)
    zeros_BR = torch.zeros(responses_BR.shape, device=z_KV.device, dtype=logp_K.dtype)
    logp_BR = zeros_BR.index_put((rows_K, cols_K), logp_K)
    entropy_BR = zeros_BR.index_put((rows_K, cols_K), ent_K) if ent_K is not None else None
    return logp_BR, entropy_BR

