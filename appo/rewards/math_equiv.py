"""Math answer equivalence with math-verify (parse both sides to SymPy, then compare).

Both the prediction and the reference are wrapped as ``\\boxed{...}`` before parsing, so a bare
reference such as ``3\\sqrt{3} - 6`` or ``\\frac{1}{2}`` is read as LaTeX and compared symbolically:
``\\frac{1}{2} == 0.5``, ``1,000 == 1000``, ``x=5 == 5``, ``\\dfrac{3}{2} == 1.5``. What cannot be parsed
is compared as a stripped string (math-verify's own fallback).

Timeouts. math-verify bounds parsing and comparison with ``signal.alarm``, which only works in the main
thread of the main interpreter; anywhere else it raises. :func:`math_equal` therefore passes its
timeouts only when called from the main thread, and otherwise runs without them (math-verify's
``timeout=None`` mode). Off the main thread, pathological inputs are bounded instead by refusing
to parse answers longer than :data:`MAX_UNTIMED_CHARS` (those are compared as plain strings).
Left out: a process pool with hard kills (costly per call; the trainer scores in the main thread).
"""

from __future__ import annotations

import functools
import logging
import threading

DEFAULT_TIMEOUT_S = 5
"""Seconds math-verify may spend parsing one expression, and again comparing one pair (main thread)."""
MAX_UNTIMED_CHARS = 400
"""Longest answer parsed with SymPy when no timeout can be armed (off the main thread)."""

class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns when timeouts are off; appo turns them off on purpose off the main thread.
    Its other messages (e.g. "Timeout during parsing") still get through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def _timeouts_available() -> bool:
    return threading.current_thread() is threading.main_thread()


@functools.lru_cache(maxsize=8192)
def _parse_boxed(text: str, timeout_s: int | None) -> tuple:
    from math_verify import parse

    return tuple(parse("\\boxed{" + text + "}", parsing_timeout=timeout_s))


def math_equal(prediction: str | None, reference: str, timeout_s: int | None = DEFAULT_TIMEOUT_S) -> bool:
    """True when ``prediction`` is mathematically equivalent to ``reference`` (math-verify).

    ``prediction`` is the content of the final box (see :func:`~appo.rewards.extract.extract_answer`);
    None or blank is never equal. ``timeout_s`` (int seconds, None = no timeout) applies in the main
    thread only; see the module docstring for what happens elsewhere. Never raises on bad input.
    """
    from math_verify import verify

    if prediction is None or not prediction.strip():
        return False
    prediction, reference = prediction.strip(), str(reference).strip()
    if prediction == reference:
        return True
    if not _timeouts_available():
        if max(len(prediction), len(reference)) > MAX_UNTIMED_CHARS:
            return False
        timeout_s = None
    elif timeout_s is not None:
        timeout_s = max(1, int(timeout_s))
    try:
        gold = list(_parse_boxed(reference, timeout_s))
        pred = list(_parse_boxed(prediction, timeout_s))
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=timeout_s))
    except Exception:  # noqa: BLE001 - a reward must score, not crash the step
        return False
