"""The fork record: where a row of the agent loop starts (:class:`LoopStart`: a prompt, optionally with a
response prefix copied from another row) and :func:`fork_start`, which cuts that prefix from a row at a
branch point."""

from __future__ import annotations

from dataclasses import dataclass

from appo.types import Rollout, RowOrigin, ToolSpan


@dataclass(frozen=True)
class LoopStart:
    """Where a row starts: a prompt, optionally with a response prefix (a fork)."""

    group: int
    """Prompt index of the row."""
    uid: int
    """Row index within its group."""
    prompt_ids: tuple[int, ...]
    """Prompt token ids (chat template applied)."""
    data_index: int = -1
    """Dataset index of the example."""
    response_ids: tuple[int, ...] = ()
    """Response prefix (a fork: the parent's ``response_ids[: split + 1]``)."""
    logprobs: tuple[float, ...] = ()
    """Token-level fields of the prefix, response-aligned."""
    entropies: tuple[float, ...] = ()
    """Entropies of the prefix tokens."""
    loss_mask: tuple[int, ...] = ()
    """Loss mask of the prefix tokens."""
    tool_spans: tuple[ToolSpan, ...] = ()
    """Completed tool calls inside the prefix (they count toward the tool-call limit)."""
    origin: RowOrigin = "initial"
    """``initial`` or ``branch``."""
    parent: int | None = None
    """uid of the row forked from."""
    split: int | None = None
    """Fork position in the parent's response."""
    root: int | None = None
    """uid of the tree root."""
    branch_score: float | None = None
    """Branching Score at the fork (APPO)."""

    def __post_init__(self) -> None:
        n = len(self.response_ids)
        if not (len(self.logprobs) == len(self.entropies) == len(self.loss_mask) == n):
            raise ValueError("LoopStart: logprobs, entropies and loss_mask must match response_ids in length")
        if not self.prompt_ids:
            raise ValueError(f"LoopStart(group={self.group}, uid={self.uid}): prompt_ids is empty")


def fork_start(
    row: Rollout | LoopStart, t: int, uid: int, *, branch_score: float | None = None
) -> LoopStart:
    """A start that continues ``row`` after response position ``t`` (prefix ``response_ids[: t + 1]``).

    ``t`` must be a model-sampled token (``loss_mask[t] == 1``) or the last token of a tool result (a
    step boundary); a prefix ending inside a result would have the model write tool text. Tool spans
    completed inside the prefix are carried over; a call whose text is cut stays open and is
    completed by the continuation. The fork's ``root`` is ``row``'s tree root, its parent ``row.uid``.
    """
    n = len(row.response_ids)
    if not 0 <= t < n:
        raise ValueError(f"fork_start: t={t} is outside the response (0..{n - 1})")
    spans = tuple(s for s in row.tool_spans if s.result_end <= t + 1)
    if row.loss_mask[t] != 1 and not any(s.result_end == t + 1 for s in row.tool_spans):
        raise ValueError(f"fork_start: position {t} is inside a tool result; fork at a model token or at the "
                         "last token of a result")
    root = row.root if row.root is not None else row.uid
    return LoopStart(
        group=row.group, uid=uid, prompt_ids=tuple(row.prompt_ids), data_index=row.data_index,
        response_ids=tuple(row.response_ids[: t + 1]), logprobs=tuple(row.logprobs[: t + 1]),
        entropies=tuple(row.entropies[: t + 1]), loss_mask=tuple(row.loss_mask[: t + 1]), tool_spans=spans,
        origin="branch", parent=row.uid, split=t, root=root, branch_score=branch_score,
    )
