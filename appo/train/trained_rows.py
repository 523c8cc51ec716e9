"""Which rows of a step the loss trains on: one rule per algorithm, in one place.

Every row supplies reward signal to the advantage; this rule says which rows also get a loss mask.
References (docs/algorithm.md, "Which rows are trained"):

- ``grpo``: every row (all rows are independent samples).
- ``arpo``: every row, initial and forked; a fork copies its parent's loss mask, so it is trained on its
  whole response, shared prefix included, with its own GRPO advantage over all rows of the prompt.
- ``tree_grpo``: every leaf. A row here is one root-to-leaf path of the tree, so every row.
- ``appo``: initial rows only (branch rows supply the branch contrast only, the reference's default);
  ``algorithm.appo.train_on_branches=true`` trains branch rows too.
"""

from __future__ import annotations

from typing import Sequence

from appo.types import Rollout

TRAINS_EVERY_ROW = ("grpo", "arpo", "tree_grpo")
"""Algorithms whose reference trains on every row it samples."""


def trained_row_mask(algorithm: str, rows: Sequence[Rollout], train_on_branches: bool = False) -> list[bool]:
    """Per row, whether the loss trains on it (see the module docstring for the rule per algorithm).

    ``train_on_branches`` is APPO's option and is ignored by the other algorithms (they always train
    every row). Raises ``ValueError`` for an unknown algorithm name. Leaves out: which tokens of a row
    are trained (the row's own ``loss_mask``: model-written tokens).
    """
    if algorithm in TRAINS_EVERY_ROW:
        return [True] * len(rows)
    if algorithm == "appo":
        return [r.origin == "initial" or bool(train_on_branches) for r in rows]
    raise ValueError(f"trained_row_mask: unknown algorithm {algorithm!r}; known: appo, {', '.join(TRAINS_EVERY_ROW)}")
