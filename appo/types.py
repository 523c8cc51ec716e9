"""Typed records that flow through appo: examples (prompts) -> rollouts -> rewards -> advantages -> loss.

Every record is a frozen dataclass with a docstring per field. Token-level fields of a rollout are
response-aligned: index t is the t-th token after the prompt, whether the model sampled it
(``loss_mask[t] == 1``) or a tool wrote it (``loss_mask[t] == 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

StopReason = Literal["answer", "eos", "max_tool_calls", "max_length", "no_action"]
"""Why a rollout ended.

- ``answer``: the model closed an answer block (``</answer>``, or a final message without a tool call).
- ``eos``: the model emitted end-of-sequence / end-of-turn without an answer.
- ``max_tool_calls``: the tool-call limit was reached and the model asked for another call.
- ``max_length``: the response length budget ran out (a truncation).
- ``no_action``: the turn ended with text that is neither a tool call nor an answer.
"""

RowOrigin = Literal["initial", "branch"]


TaskKind = Literal["math", "qa"]
Metric = Literal["math_equiv", "f1", "em"]


@dataclass(frozen=True)
class Example:
    """A question with its reference answers, normalised across verl parquet, benchmarks and generators."""

    id: str
    """Stable id: ``<source>/<row index>`` for files, ``<task>/<seed>/<index>`` for generated tasks."""
    question: str
    """The user question, without any system prompt."""
    answers: tuple[str, ...]
    """Reference answers; QA lists aliases, math has one canonical answer (LaTeX or plain)."""
    kind: TaskKind
    """``math`` (scored by equivalence) or ``qa`` (scored by F1 / EM against aliases)."""
    metric: Metric
    """The headline metric for this example."""
    data_source: str
    """Dataset name (``gsm8k``, ``hotpotqa``, ``proc_arith``, ...), as verl's ``data_source``."""
    messages: tuple[dict, ...] | None = None
    """Prompt messages when the data carries its own (verl rows: system + user); None = build from question."""
    extra_info: dict = field(default_factory=dict)
    """Anything else the source provides (verl ``extra_info``, difficulty knobs, ...)."""


@dataclass(frozen=True)
class ToolCall:
    """A tool call parsed from model text."""

    name: str
    """Tool name (``python``, ``search`` or a user function's name)."""
    arguments: dict
    """Keyword arguments for the tool; the tag protocol maps the tag body to the tool's main argument."""
    raw: str = ""
    """The call exactly as the model wrote it."""


@dataclass(frozen=True)
class ToolResult:
    """What a tool gives back to the agent. Tools never raise: failures are ``ok=False`` results."""

    text: str
    """Text shown to the model inside the result block (already truncated by the tool)."""
    ok: bool = True
    """False when the call failed (bad arguments, timeout, crash, backend down)."""
    error: str | None = None
    """Short machine-readable failure class (``timeout``, ``parse``, ``unknown_tool``, ...)."""


@dataclass(frozen=True)
class ToolSpan:
    """Where one tool call and its result sit in a rollout's response (response positions)."""

    call_start: int
    """First response position of the model-written call text."""
    call_end: int
    """One past the last model-written token of the call (the token that closed it)."""
    result_end: int
    """One past the last tool-written result token; the result occupies ``[call_end, result_end)``."""
    name: str
    """Tool name, or the name the model asked for when it was unknown."""
    ok: bool
    """Whether the tool call succeeded."""


@dataclass(frozen=True)
class Rollout:
    """One row: a prompt and a multi-turn response, possibly forked from another row (a tree).

    A branch row forked from ``parent`` at ``split = t`` shares the parent's response tokens
    ``[0, t]`` (``response_ids[: t + 1]``) and continues after them.
    """

    group: int
    """Index of the prompt within the step; rows of one prompt form one group."""
    uid: int
    """Row index within its group (0..n-1); ``parent`` refers to it."""
    prompt_ids: tuple[int, ...]
    """Prompt token ids (chat template applied), exactly as fed to the engine."""
    response_ids: tuple[int, ...]
    """All tokens after the prompt: sampled tokens and tool-result tokens, in order."""
    logprobs: tuple[float, ...]
    """Behaviour-policy log-prob of each response token; 0.0 where ``loss_mask`` is 0."""
    entropies: tuple[float, ...]
    """Entropy of the next-token distribution at each sampled token; 0.0 where ``loss_mask`` is 0."""
    loss_mask: tuple[int, ...]
    """1 for tokens the model sampled, 0 for tool-written tokens."""
    stop_reason: StopReason
    """Why the rollout ended."""
    response_text: str = ""
    """Decoded response (model and tool text), for rewards and reports."""
    tool_spans: tuple[ToolSpan, ...] = ()
    """Tool calls in the response, in order."""
    origin: RowOrigin = "initial"
    """``initial`` for rows sampled from the prompt, ``branch`` for forked continuations."""
    parent: int | None = None
    """``uid`` of the row this one forked from; None for initial rows."""
    split: int | None = None
    """Response position t of the fork in the parent; the branch shares ``parent.response_ids[: t + 1]``."""
    root: int | None = None
    """``uid`` of the initial row at the root of this row's tree; None means the row is its own root."""
    branch_score: float | None = None
    """Branching Score of the parent at ``split`` (APPO); used by branch-proximity scaling."""
    omega: tuple[float, ...] | None = None
    """Likelihood gain Omega per response token (APPO initial rows), for reports."""
    scores: tuple[float, ...] | None = None
    """Branching Score per response token (APPO initial rows; -inf where invalid), for reports."""
    data_index: int = -1
    """Index of the example in its dataset, so rewards and reports can find the ground truth."""

    def __post_init__(self) -> None:
        n = len(self.response_ids)
        for name in ("logprobs", "entropies", "loss_mask"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{type(self).__name__}.{name} has {len(getattr(self, name))} entries for {n} response "
                    "tokens; every token-level field must match response_ids in length (response-aligned)"
                )
        if (self.parent is None) != (self.split is None):
            raise ValueError("Rollout.parent and Rollout.split must be set together (a branch) or both None")

    @property
    def num_tool_calls(self) -> int:
        """Number of tool calls the model made."""
        return len(self.tool_spans)

    @property
    def tree(self) -> int:
        """The uid of this row's tree root."""
        return self.uid if self.root is None else self.root


@dataclass(frozen=True)
class AdvantageInputs:
    """Everything an advantage estimator may look at, as tensors over N rows and T response tokens."""

    rewards_N: torch.Tensor
    """Scalar reward per row, float [N]."""
    group_N: torch.Tensor
    """Prompt index per row, long [N]."""
    mask_NT: torch.Tensor
    """Response token mask, float [N, T] (1 = real response token, 0 = padding)."""
    is_branch_N: torch.Tensor | None = None
    """True for branch rows, bool [N]. None means all rows are initial."""
    parent_N: torch.Tensor | None = None
    """Row index (into these N rows) of each row's parent, -1 for roots, long [N]."""
    split_N: torch.Tensor | None = None
    """Fork position in the parent's response, -1 for roots, long [N]."""
    tree_N: torch.Tensor | None = None
    """Row index of each row's tree root (itself for roots), long [N]."""
    branch_score_N: torch.Tensor | None = None
    """Branching Score at each branch row's split point, float [N] (NaN for initial rows)."""


@dataclass(frozen=True)
class Batch:
    """Collated training rows in verl's layout: left-padded prompts, right-padded responses.

    ``input_ids_BL = cat(prompt_BP, response_BR)`` with L = P + R; response-level tensors are [B, R].
    """

    input_ids_BL: torch.Tensor
    """Token ids, long [B, P + R]; pad positions hold the pad id."""
    attention_mask_BL: torch.Tensor
    """1 for real tokens, long [B, P + R]."""
    position_ids_BL: torch.Tensor
    """Positions counted over real tokens only, long [B, P + R]."""
    responses_BR: torch.Tensor
    """Response token ids, long [B, R]."""
    response_mask_BR: torch.Tensor
    """1 for real response tokens (model or tool), float [B, R]."""
    loss_mask_BR: torch.Tensor
    """1 for tokens trained on (model-sampled, in a trained row), float [B, R]."""
    old_logp_BR: torch.Tensor
    """Log-probs of the policy that generated the data (recomputed by the trainer), float [B, R]."""
    advantages_BR: torch.Tensor
    """Token-level advantages, float [B, R]."""
    ref_logp_BR: torch.Tensor | None = None
    """Reference-policy log-probs for the KL penalty, float [B, R]; None without a reference."""
    group_B: torch.Tensor | None = None
    """Prompt index of each row, long [B]: the update keeps a prompt's rows in one mini-batch. None only in
    hand-built batches that are never updated on."""
    trained_B: torch.Tensor | None = None
    """Whether the loss trains on each row (the algorithm's rule), bool [B]; None in hand-built batches."""
    is_branch_B: torch.Tensor | None = None
    """True for rows forked from another row, bool [B]; None in hand-built batches."""
    num_tool_calls_B: torch.Tensor | None = None
    """Tool calls each row made, long [B] (the ``tool_calls/mean`` metric); None in hand-built batches."""
    model_mask_BR: torch.Tensor | None = None
    """1 for model-written response tokens whether or not the row is trained (the rollout's own loss mask),
    float [B, R]; None in hand-built batches."""
    rollout_logp_BR: torch.Tensor | None = None
    """The engine's behaviour log-probs, float [B, R]: the rollout/trainer mismatch metrics and the truncated
    IS correction compare them with ``old_logp_BR``; None in hand-built batches (then neither runs)."""

    @property
    def prompt_len_B(self) -> torch.Tensor:
        """Real prompt tokens per row (from ``attention_mask_BL``), long [B]."""
        P = self.input_ids_BL.shape[1] - self.responses_BR.shape[1]
        return self.attention_mask_BL[:, :P].sum(1).long()

    @property
    def response_len_B(self) -> torch.Tensor:
        """Real response tokens per row (from ``response_mask_BR``), long [B]."""
        return self.response_mask_BR.sum(1).long()
