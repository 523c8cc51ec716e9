"""Files an analysis writes under its ``out_dir``.

==================================  ========================================================================
``analysis.json``                   config, rollouts and every analysed position (same seed -> same file)
``summary.json`` / ``summary.txt``  the statistics of :mod:`appo.analysis.stats` (also deterministic)
``timing.json``                     wall seconds per phase (not deterministic, hence its own file)
``plots/*.png``                     :mod:`appo.analysis.plots`
``rollouts/step_000000.json``       the rollouts as a trainer dump (``appo.dump``) whose rows carry a
                                    per-token ``influence`` list (None where not analysed), so that
                                    ``appo report OUT_DIR`` / :func:`appo.report.write_report` shows them
``report/``                         that report
==================================  ========================================================================
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch

from appo.analysis.records import PositionRecord
from appo.dump import TokenTexts, step_record, write_step
from appo.rewards.base import RewardOutput
from appo.types import Example, Rollout

DUMP_STEP = 0
"""Step number of the analysis dump (``rollouts/step_000000.json``): no training step was taken."""


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (NaN refused: callers write None), temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def influence_lists(rows: Sequence[Rollout], positions: Sequence[PositionRecord]) -> list[list[float | None]]:
    """Per row, its response-aligned influence (None where no position was analysed)."""
    out = []
    for r in rows:
        xs: list[float | None] = [None] * len(r.response_ids)
        for p in positions:
            if p.group == r.group and p.rollout == r.uid:
                xs[p.t] = round(p.influence, 4)
        out.append(xs)
    return out


def write_dump(out_dir: str | Path, rows: Sequence[Rollout], examples: Sequence[Example],
               rewards: Sequence[RewardOutput], positions: Sequence[PositionRecord], tokenizer,
               extra: dict | None = None) -> Path:
    """Write the analysed rollouts as ``out_dir/rollouts/step_000000.json`` in the trainer's dump format,
    each row with an ``influence`` list; advantages are None (no advantage was computed). Rows carry
    ``omega`` and ``scores`` (BS) as an APPO step would. The re-drawn continuations are not dumped."""
    T = max((len(r.response_ids) for r in rows), default=0)
    adv_NT = torch.full((len(rows), T), math.nan)
    record = step_record(DUMP_STEP, list(rows), list(examples), list(rewards), adv_NT, TokenTexts(tokenizer),
                         extra=extra)
    lists = {(r.group, r.uid): xs for r, xs in zip(rows, influence_lists(rows, positions))}
    for prompt in record["prompts"]:
        for row in prompt["rows"]:
            row["influence"] = lists[(prompt["group"], row["uid"])]
    return write_step(out_dir, record)
