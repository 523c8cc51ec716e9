"""Pool several analyses (``analysis.json`` files, e.g. runs on different ``--data-seed`` shards) into one
summary, so a measurement can be split over processes and still be judged with one set of intervals.

Positions are read back from the files; a rollout is keyed by (file, prompt, rollout), so the bootstrap
resamples whole rollouts across files. Everything else is :func:`appo.analysis.stats.summarize`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from appo.analysis.records import PositionRecord
from appo.analysis.stats import Summary, summarize

_TUPLES = ("branch_rewards", "keep_rewards", "branch_same")


def load_positions(path: str | Path) -> list[PositionRecord]:
    """The :class:`PositionRecord` s of one ``analysis.json`` (derived fields dropped, tuples restored)."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(PositionRecord)}
    out = []
    for d in data["positions"]:
        kw = {k: v for k, v in d.items() if k in names}
        for k in _TUPLES:
            kw[k] = tuple(kw.get(k) or ())
        kw["variant_scores"] = dict(kw.get("variant_scores") or {})
        out.append(PositionRecord(**kw))
    return out


def pooled_summaries(paths: Sequence[str | Path], *, bootstrap: int = 1000, seed: int = 0,
                     k: int | None = None, near_tool_tokens: int = 5) -> tuple[Summary, Summary | None]:
    """``(influence summary, token-effect summary or None)`` over the positions of every file in ``paths``,
    with bootstrap intervals over rollouts. The token-effect summary needs every file to be ``--paired``.
    Raises ``ValueError`` when ``paths`` is empty or the files score different Omega variants."""
    from appo.analysis.api import score_lists

    if not paths:
        raise ValueError("pooled_summaries: no analysis.json files given")
    ps, keys, variant_names = [], [], None
    for i, p in enumerate(paths):
        pos = load_positions(p)
        names = sorted(pos[0].variant_scores) if pos else []
        if variant_names is not None and pos and names != variant_names:
            raise ValueError(f"{p} scores Omega variants {names}, the first file {variant_names}; pool like runs only")
        variant_names = names if variant_names is None or not variant_names else variant_names
        ps += pos
        keys += [(i, q.group, q.rollout) for q in pos]
    scores = score_lists(ps)
    for name in variant_names or []:
        scores[name] = [q.variant_scores.get(name) for q in ps]
    common = dict(k=k, near_tool_tokens=near_tool_tokens, rollout=keys, bootstrap=bootstrap, seed=seed)
    dist, region = [q.tool_distance for q in ps], [q.region for q in ps]
    infl = summarize([q.influence for q in ps], scores, dist, region,
                     standard_error=[q.standard_error for q in ps], **common)
    paired = bool(ps) and all(q.keep_rewards for q in ps)
    effect = (summarize([q.token_effect for q in ps], scores, dist, region,
                        standard_error=[q.effect_standard_error for q in ps], **common) if paired else None)
    return infl, effect
