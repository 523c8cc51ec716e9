"""Where a row's decisive token is, for tasks that know it by construction (issue 24).

A task records ``extra_info["decisive"] = {"pattern", "occurrence", "group"}``: the decisive token is the
token of the response that holds the first character of regex group ``group`` of the ``occurrence``-th
(0-based) match of ``pattern`` in the response text (e.g. :mod:`appo.data.procedural.depth`: the operator
of the decisive Python call). :func:`decisive_token` maps that character to a token position;
:func:`oracle_point` turns it into the branch point whose fork re-samples the token; :func:`point_precision`
scores any arm's chosen points against those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class DecisiveSpec:
    """Where a task's decisive token sits in a response (from ``Example.extra_info["decisive"]``)."""

    pattern: str
    """Regular expression searched in the decoded response text."""
    occurrence: int = 0
    """Which match (0-based)."""
    group: int = 0
    """Which group of the match: the decisive token holds its first character."""

    @classmethod
    def from_info(cls, info: Mapping[str, Any] | None) -> DecisiveSpec | None:
        """The spec of an example's ``extra_info["decisive"]`` (None when the task records none)."""
        if not info:
            return None
        return cls(str(info["pattern"]), int(info.get("occurrence", 0)), int(info.get("group", 0)))


def decisive_token(tokenizer, response_ids: Sequence[int], spec: DecisiveSpec) -> int | None:
    """Position (0-based, in ``response_ids``) of the token holding the decisive character, or None when the
    response has no such match (e.g. the row stopped before the decisive step).

    The character offset ``c`` is found in ``tokenizer.decode(response_ids)``; the token is the smallest
    ``t`` with ``len(decode(response_ids[: t + 1])) > c`` (binary search; prefix decodes are monotone in
    length for the byte-level BPE tokenizers used here). Leaves out: tokenizers whose prefix decodes are
    not prefixes of the full text (then the result is the nearest such token)."""
    ids = list(response_ids)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    matches = list(re.finditer(spec.pattern, text))
    if spec.occurrence >= len(matches):
        return None
    c = matches[spec.occurrence].start(spec.group)
    lo, hi = 0, len(ids) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[: mid + 1], skip_special_tokens=False)) > c:
            hi = mid
        else:
            lo = mid + 1
    return lo


def oracle_point(decisive: int | None, fork: str = "after") -> int | None:
    """The branch point whose fork re-samples the decisive token at ``decisive``: ``decisive - 1`` for
    ``fork=after`` (the fork keeps token t and samples from t + 1), ``decisive`` for ``fork=redraw``
    (the fork re-samples token t). None when there is no decisive token or it is the first token (``after``
    cannot re-sample position 0)."""
    if decisive is None:
        return None
    t = decisive - 1 if fork == "after" else decisive
    return t if t >= 0 else None


def point_precision(points: Sequence[tuple[int, int]], oracle: Sequence[int | None],
                    decisive: Sequence[int | None]) -> tuple[float, float, int]:
    """How many of an arm's chosen ``(row, position)`` points are the oracle's.

    Returns ``(precision, decisive_rate, n)``: the share of points equal to their row's oracle point (the
    fork re-samples the decisive token), the share whose position is the decisive token itself (the
    token the score ranked is the decisive one; with ``fork=after`` its fork does not re-sample it), and
    the number of points counted (those whose row has a decisive token). (nan, nan, 0) when none counts.
    """
    counted = [(i, t) for i, t in points if decisive[i] is not None]
    if not counted:
        return float("nan"), float("nan"), 0
    hit = sum(oracle[i] == t for i, t in counted)
    on = sum(decisive[i] == t for i, t in counted)
    return hit / len(counted), on / len(counted), len(counted)
