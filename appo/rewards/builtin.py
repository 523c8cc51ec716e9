"""Built-in reward functions (batch, :class:`~appo.rewards.base.RewardFn`), registered in ``REWARDS``.

``default`` / ``arpo``: the reference work's reward (ARPO's ``compute_score``; docs/algorithm.md 11):

    R = -1                                  if the format check fails (see appo.rewards.format)
    R = s + 0.1 * [s > 0 and both tools]    otherwise,

where ``s`` is the answer score chosen by ``example.metric`` (``math_equiv``: 1/0 math-verify
equivalence; ``f1``: token F1, max over aliases; ``em``: exact match) on the final ``\\boxed{}`` of the
answer block, and "both tools" means the rollout made at least one ``python`` and one ``search`` call
that got a result. Differences from the reference code: the math branch uses math-verify on the boxed
answer instead of a string-normalising ``is_equiv``; QA normalisation also strips Unicode punctuation and
splits CJK characters (see :mod:`appo.rewards.qa`); a tool counts as used only when its call got a result.

Protocols: tag-protocol calls (``<python>``, ``<search>``, user tools) and Hermes ``<tool_call>`` blocks
are both read; the format gate still wants ``<think>`` and one ``<answer>`` block with a box, so with a
Hermes model whose final message is free text use ``answer`` (no gate) or a system prompt that asks for
the reference tags.

Metrics per row: ``acc`` (math equivalence, or EM for QA), ``answered`` (a box was found),
``format_ok`` and ``both_tools`` (format-checked rewards), and ``f1`` / ``em`` on QA rows only.
A key a row lacks is undefined for it, not zero. Answer metrics are computed even when the format
fails (the score is still -1), so a step's ``acc`` is the accuracy of the answers given.
"""

from __future__ import annotations

from typing import Sequence

from appo.rewards.base import RewardFn, RewardOutput
from appo.rewards.extract import extract_answer
from appo.rewards.format import DEFAULT_TOOL_TAGS, check_format
from appo.rewards.math_equiv import math_equal
from appo.rewards.qa import exact_match, f1_score
from appo.types import Example

TOOL_BONUS = 0.1
"""Added to a positive answer score when the rollout used both tools (reference value)."""
FORMAT_PENALTY = -1.0
"""Reward of a response that fails the format check (reference value)."""
BONUS_TOOLS = ("python", "search")
"""Tools that must both have been called for the bonus."""


def _check_batch(examples: Sequence[Example], responses: Sequence[str]) -> None:
    if len(examples) != len(responses):
        raise ValueError(
            f"reward got {len(examples)} examples and {len(responses)} responses; pass one response per "
            "example (repeat the example for each of its rollouts)"
        )


def answer_score(example: Example, prediction: str | None) -> tuple[float, dict[str, float]]:
    """Score an extracted answer by ``example.metric``; returns (score, metrics). No format gate."""
    metrics = {"answered": float(prediction is not None)}
    if example.metric == "math_equiv":
        acc = float(any(math_equal(prediction, ref) for ref in example.answers))
        metrics["acc"] = acc
        return acc, metrics
    f1, em = f1_score(prediction, example.answers), exact_match(prediction, example.answers)
    metrics.update(acc=em, em=em, f1=f1)
    if example.metric == "f1":
        return f1, metrics
    if example.metric == "em":
        return em, metrics
    raise ValueError(
        f"example {example.id!r} has metric {example.metric!r}; use 'math_equiv', 'f1' or 'em'"
    )


def reference_score(
    example: Example,
    response: str,
    tool_tags: tuple[str, ...] = DEFAULT_TOOL_TAGS,
    bonus: float = TOOL_BONUS,
    penalty: float = FORMAT_PENALTY,
) -> RewardOutput:
    """The reference reward of one response (module docstring); ``tool_tags`` are the call tags."""
    check = check_format(response, tool_tags)
    both = float(all(t in check.tools_used for t in BONUS_TOOLS))
    score, metrics = answer_score(example, extract_answer(response))
    if not check.ok:  # the answer metrics are still reported, so accuracy is not hidden by format
        return RewardOutput(penalty, {"format_ok": 0.0, "both_tools": both, **metrics})
    if score > 0 and both:
        score += bonus
    return RewardOutput(float(score), {"format_ok": 1.0, "both_tools": both, **metrics})


def arpo_reward(examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
    """Reference reward: -1 on bad format, else the answer score by metric, +0.1 for using both tools."""
    _check_batch(examples, responses)
    return [reference_score(ex, resp) for ex, resp in zip(examples, responses)]


def answer_reward(examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
    """Answer score by ``example.metric`` on the final box, with no format gate and no tool bonus."""
    _check_batch(examples, responses)
    out = []
    for ex, resp in zip(examples, responses):
        score, metrics = answer_score(ex, extract_answer(resp))
        out.append(RewardOutput(float(score), metrics))
    return out


def math_reward(examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
    """1.0 when the final box is math-verify-equivalent to any reference answer, else 0.0."""
    _check_batch(examples, responses)
    out = []
    for ex, resp in zip(examples, responses):
        pred = extract_answer(resp)
        acc = float(any(math_equal(pred, ref) for ref in ex.answers))
        out.append(RewardOutput(acc, {"acc": acc, "answered": float(pred is not None)}))
    return out


def _qa(examples: Sequence[Example], responses: Sequence[str], use_f1: bool) -> list[RewardOutput]:
    _check_batch(examples, responses)
    out = []
    for ex, resp in zip(examples, responses):
        pred = extract_answer(resp)
        f1, em = f1_score(pred, ex.answers), exact_match(pred, ex.answers)
        metrics = {"acc": em, "em": em, "f1": f1, "answered": float(pred is not None)}
        out.append(RewardOutput(f1 if use_f1 else em, metrics))
    return out


def qa_f1_reward(examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
    """Token F1 of the final box against the best alias (SQuAD normalisation)."""
    return _qa(examples, responses, use_f1=True)


def qa_em_reward(examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
    """Exact match of the final box against any alias (SQuAD normalisation)."""
    return _qa(examples, responses, use_f1=False)


def format_reward(examples: Sequence[Example], responses: Sequence[str]) -> list[RewardOutput]:
    """The format term alone: 0.0 when the format check passes, -1.0 when it fails (reference values)."""
    _check_batch(examples, responses)
    out = []
    for resp in responses:
        check = check_format(resp)
        out.append(RewardOutput(0.0 if check.ok else FORMAT_PENALTY, {"format_ok": float(check.ok)}))
    return out


BUILTIN_REWARDS: dict[str, RewardFn] = {
    "default": arpo_reward,
    "arpo": arpo_reward,
    "answer": answer_reward,
    "math": math_reward,
    "qa_f1": qa_f1_reward,
    "qa_em": qa_em_reward,
    "format": format_reward,
}
"""The built-in rewards by name; :mod:`appo.rewards.registry` starts ``REWARDS`` from them."""
