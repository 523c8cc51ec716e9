"""Per-step rollout dumps: every row with its tokens and token-level signals, for ``appo report``.

``run_dir/rollouts/step_XXXXXX.json`` (XXXXXX = steps completed, as in ``metrics.jsonl``: the rollouts
of the first training step are ``step_000001``) holds, per prompt, its question and answers, and per row: tree
links (uid, parent, split, root, origin), whether the loss trained on it (``trained``), the stop reason, the
reward and its metrics, tool spans, and per response token its text, loss mask, entropy, Omega, Branching
Score and advantage. Values are rounded to 4 decimals; -inf scores are written as null.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from appo.rewards.base import RewardOutput
from appo.types import Example, Rollout

DUMP_DIR = "rollouts"


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def _nums(xs: Sequence[float] | None) -> list | None:
    return None if xs is None else [_num(x) for x in xs]


class TokenTexts:
    """Decodes single token ids to text once per id (byte-level BPE pieces may be partial characters)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        out = []
        for t in ids:
            if t not in self.cache:
                self.cache[t] = self.tokenizer.decode([t], skip_special_tokens=False)
            out.append(self.cache[t])
        return out


def step_record(step: int, rows: Sequence[Rollout], examples: Sequence[Example], scored: Sequence[RewardOutput],
                adv_NT: torch.Tensor, texts: TokenTexts, extra: dict | None = None,
                trained: Sequence[bool] | None = None) -> dict:
    """The JSON-ready record of one step (see the module docstring). ``rows[i]`` belongs to
    ``examples[rows[i].group]`` and is scored by ``scored[i]``; ``adv_NT`` and ``trained`` (per row, whether
    the loss trained on it, :meth:`appo.algorithms.Algorithm.trained_rows`) are row-aligned; ``trained``
    None writes null (not known)."""
    if trained is not None and len(trained) != len(rows):
        raise ValueError(f"trained has {len(trained)} entries for {len(rows)} rows")
    prompts: dict[int, dict] = {}
    for i, r in enumerate(rows):
        ex = examples[r.group]
        p = prompts.setdefault(r.group, {"group": r.group, "id": ex.id, "question": ex.question,
                                         "answers": list(ex.answers), "source": ex.data_source,
                                         "prompt": "".join(texts(r.prompt_ids)), "rows": []})
        n = len(r.response_ids)
        p["rows"].append({
            "uid": r.uid, "origin": r.origin, "parent": r.parent, "split": r.split, "root": r.tree,
            "trained": None if trained is None else bool(trained[i]),
            "stop_reason": r.stop_reason, "reward": _num(scored[i].score),
            "metrics": {k: _num(v) for k, v in scored[i].metrics.items()},
            "branch_score": _num(r.branch_score) if r.branch_score is not None else None,
            "tool_spans": [asdict(s) for s in r.tool_spans],
            "tokens": texts(r.response_ids), "loss_mask": list(r.loss_mask),
            "entropy": _nums(r.entropies), "logprob": _nums(r.logprobs), "omega": _nums(r.omega),
            "score": _nums(r.scores), "advantage": _nums(adv_NT[i, :n].tolist()),
        })
    return {"step": step, **(extra or {}), "prompts": [prompts[g] for g in sorted(prompts)]}


def write_step(run_dir: str | Path, record: dict) -> Path:
    """Write a step record to ``run_dir/rollouts/step_XXXXXX.json`` (temp file + rename)."""
    out = Path(run_dir) / DUMP_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"step_{record['step']:06d}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    tmp.replace(path)
    return path
