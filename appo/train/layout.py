"""The log-prob layout: how a batch's rows reach the model, chosen once per step and carried as one value.

Three layouts compute the same per-token log-probs and entropies (to float rounding; the tests check 1e-5):

- ``padded``: length-grouped micro-batches of left/right-padded rows (:mod:`appo.train.batching`,
  :func:`appo.train.logprobs.compute_logprobs`); ``max_tokens`` counts padded tokens.
- ``packed``: each micro-batch's rows as one padding-free sequence (``actor.use_remove_padding``,
  :mod:`appo.train.packing`); ``max_tokens`` counts real tokens.
- ``tree``: each group's rows as one token trie (``actor.shared_prefix``, :mod:`appo.train.shared_prefix`);
  ``max_tokens`` counts real tokens.

The trainer picks the layout with :func:`choose_layout` at each step, runs the old/reference pass with
:func:`batched_logprobs` and hands the same value to the update (``UpdateOptions.layout``), which builds its
micro-batches with :func:`layout_micro_batches`. A micro-batch carries the layout that built it
(``MicroBatch.layout``), so :func:`micro_logprobs` dispatches on that value and nothing downstream derives
the layout again. Left out: switching layout inside a step (old log-probs and update always share one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, get_args

import torch

from appo.train.batching import Layout, MicroBatch, merge_micro_outputs, split_micro_batches
from appo.train.logprobs import compute_logprobs
from appo.train.packing import check_packing_support, pack_micro_batches, packed_logprobs
from appo.train.shared_prefix import check_tree_support, tree_logprobs, tree_micro_batches, tree_wins
from appo.types import Batch

LAYOUTS: tuple[Layout, ...] = get_args(Layout)


@dataclass(frozen=True)
class LayoutOps:
    """What one layout does: split a batch, compute one micro-batch, refuse a model it cannot run on."""

    split: Callable[..., list[MicroBatch]]
    """``split(batch, max_tokens=..., max_rows=...)`` -> the layout's micro-batches."""
    logprobs: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    """``logprobs(model, micro, temperature, with_entropy, entropy_grad)`` -> ``(logp_bR, entropy_bR)``."""
    check: Callable[[torch.nn.Module], None] | None
    """Raise, naming the fix, when the model's attention cannot run the layout (None: any model)."""


_OPS: dict[str, LayoutOps] = {
    "padded": LayoutOps(split_micro_batches, compute_logprobs, None),
    "packed": LayoutOps(pack_micro_batches, packed_logprobs, check_packing_support),
    "tree": LayoutOps(tree_micro_batches, tree_logprobs, check_tree_support),
}


def _ops(layout: Layout) -> LayoutOps:
    if layout not in _OPS:
        raise ValueError(f"log-prob layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return _OPS[layout]


def choose_layout(shared_prefix: bool | str, use_remove_padding: bool, model: torch.nn.Module,
                  batch: Batch) -> Layout:
    """The step's layout from ``actor.shared_prefix`` and ``actor.use_remove_padding``: ``tree`` when
    ``shared_prefix`` is true, or ``auto`` and the trie's estimated cost wins on ``batch``
    (:func:`appo.train.shared_prefix.tree_wins`) on a model whose attention takes a 4D mask (sdpa/eager);
    else ``packed`` with ``use_remove_padding``; else ``padded``. The tree takes precedence over packing."""
    if shared_prefix == "auto":
        config = getattr(model, "config", None)
        impl = getattr(config, "_attn_implementation", None) or "eager"
        tree = impl in ("sdpa", "eager") and tree_wins(batch, config)
    else:
        tree = bool(shared_prefix)
    if tree:
        return "tree"
    return "packed" if use_remove_padding else "padded"


def check_layout_support(model: torch.nn.Module, layout: Layout) -> None:
    """Raise, naming the fix, unless ``model`` can run ``layout`` (packed: transformers' own attention code;
    tree: sdpa or eager attention; padded: any model)."""
    check = _ops(layout).check
    if check is not None:
        check(model)


def layout_micro_batches(batch: Batch, layout: Layout, max_tokens: int | None = None,
                         max_rows: int | None = None) -> list[MicroBatch]:
    """``batch``'s rows as ``layout``'s micro-batches: padded and length-grouped (``max_tokens`` padded tokens),
    packed (first-fit decreasing, ``max_tokens`` real tokens) or tries (groups kept together, ``max_tokens``
    real tokens); at most ``max_rows`` rows each. Neither budget: one micro-batch."""
    return _ops(layout).split(batch, max_tokens=max_tokens, max_rows=max_rows)


def micro_logprobs(model: torch.nn.Module, micro: MicroBatch, temperature: float = 1.0, with_entropy: bool = False,
                   entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logp_bR, entropy_bR or None)`` of one micro-batch in its trimmed ``[b, R']`` response layout, computed
    by the layout that built it (``micro.layout``); differentiable when grad is enabled (the update)."""
    return _ops(micro.layout).logprobs(model, micro, temperature, with_entropy, entropy_grad)


@torch.no_grad()
def batched_logprobs(
    model: torch.nn.Module,
    batch: Batch,
    layout: Layout = "padded",
    temperature: float = 1.0,
    with_entropy: bool = False,
    max_tokens: int | None = None,
    max_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """No-grad log-probs (old / reference policy) of a whole batch: ``logp_BR[b, t] = log softmax(z / T)
    [responses_BR[b, t]]`` computed through ``layout``'s micro-batches (:func:`layout_micro_batches`) and put
    back in row order, ``(logp_BR, entropy_BR or None)`` on the model's device, 0 at response padding. The
    model must support the layout (:func:`check_layout_support`)."""
    check_layout_support(model, layout)
    micro = layout_micro_batches(batch, layout, max_tokens=max_tokens, max_rows=max_rows)
    outs = [micro_logprobs(model, m, temperature, with_entropy) for m in micro]
    like = torch.zeros(batch.responses_BR.shape, device=next(model.parameters()).device)
    logp = merge_micro_outputs([o[0] for o in outs], micro, like)
    ent = merge_micro_outputs([o[1] for o in outs], micro, like) if with_entropy else None
    return logp, ent
