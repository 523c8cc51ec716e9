"""The fork record: where a row of the agent loop starts (:class:`LoopStart`: a prompt, optionally with a
response prefix copied from another row) and :func:`fork_start`, which cuts that prefix from a row at a
branch point."""

from __future__ import annotations

from dataclasses import dataclass

from appo.types import Rollout, StopReason


@dataclass(frozen=True)
class LoopStart(Rollout):
    """Where a row starts: a :class:`~appo.types.Rollout` the loop has not run yet, with every field (and its
    meaning) inherited: a prompt, and for a fork the response prefix copied from another row with its
    token-level fields, tool spans and tree links (``origin``, ``parent``, ``split``, ``root``,
    ``branch_score``). Only the defaults differ: an empty response and ``stop_reason="no_action"`` (not run);
    the prompt must not be empty."""

    response_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    entropies: tuple[float, ...] = ()
    loss_mask: tuple[int, ...] = ()
    stop_reason: StopReason = "no_action"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prompt_ids:
            raise ValueError(f"LoopStart(group={self.group}, uid={self.uid}): prompt_ids is empty")


def fork_start(row: Rollout, t: int, uid: int, *, branch_score: float | None = None) -> LoopStart:
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
