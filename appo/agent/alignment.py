"""The token-in/token-out check of the agent loop: a finished row's response must be exactly the ids the
engine sampled (with their log-probs and entropies) and the tool ids, nothing re-tokenised."""

from __future__ import annotations

from typing import Sequence

from appo.engine.base import Generation
from appo.types import Rollout


class TokenAlignmentError(AssertionError):
    """The response is not exactly the sampled ids and the tool ids (re-tokenisation drift)."""


def verify_token_alignment(rollout: Rollout, generations: Sequence[Generation], start: int = 0) -> None:
    """Check that ``rollout``'s response after position ``start`` is exactly the engine outputs.

    Walks the response: each generation's ids (with its logprobs and entropies) must appear verbatim
    with ``loss_mask`` 1, separated only by ``loss_mask`` 0 (tool) tokens, and together they must
    cover every model token after ``start``. ``generations`` are the kept engine outputs in order
    (the loop keeps a prefix when it cuts a turn at a stop string). Raises TokenAlignmentError.
    """
    ids, mask = rollout.response_ids, rollout.loss_mask
    p = start

    def skip_tool_tokens(p: int) -> int:
        while p < len(ids) and mask[p] == 0:
            if rollout.logprobs[p] != 0.0 or rollout.entropies[p] != 0.0:
                raise TokenAlignmentError(f"tool token at {p} has a nonzero logprob/entropy")
            p += 1
        return p

    for i, gen in enumerate(generations):
        p = skip_tool_tokens(p)
        n = len(gen.token_ids)
        if tuple(ids[p: p + n]) != tuple(gen.token_ids):
            raise TokenAlignmentError(f"generation {i}: response[{p}:{p + n}] != sampled ids "
                                      f"({list(ids[p:p + n])[:8]}... vs {list(gen.token_ids)[:8]}...)")
        if any(m != 1 for m in mask[p: p + n]):
            raise TokenAlignmentError(f"generation {i}: sampled tokens at {p}..{p + n} do not all have loss_mask 1")
        if (tuple(rollout.logprobs[p: p + n]) != tuple(gen.logprobs)
                or tuple(rollout.entropies[p: p + n]) != tuple(gen.entropies)):
            raise TokenAlignmentError(f"generation {i}: logprobs/entropies at {p}..{p + n} differ from the engine's")
        p += n
    p = skip_tool_tokens(p)
    if p != len(ids):
        raise TokenAlignmentError(f"response has {len(ids) - p} model tokens after position {p} that no "
                                  "generation accounts for")
