"""Synthetic step dumps for the report tests, written through the trainer's own dump code
(``appo.dump.step_record``) from hand-built ``Rollout`` records."""

from __future__ import annotations

import json
import math
import random

import torch

from appo.dump import TokenTexts, step_record
from appo.rewards.base import RewardOutput
from appo.types import Example, Rollout, ToolSpan

INJECTION = "<script>alert(1)</script>"


class VocabTokenizer:
    """``decode([id])`` -> ``vocab[id]``: enough for ``TokenTexts``."""

    def __init__(self, vocab: list[str]):
        self.vocab = vocab

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.vocab[i] for i in ids)


def _row(vocab: list[str], group: int, uid: int, pieces: list[str], mask: list[int], **kw) -> Rollout:
    ids = []
    for p in pieces:
        if p not in vocab:
            vocab.append(p)
        ids.append(vocab.index(p))
    n = len(ids)
    ent = kw.pop("entropies", None) or [0.1 + 0.3 * (t % 5) if mask[t] else 0.0 for t in range(n)]
    return Rollout(group=group, uid=uid, prompt_ids=(0,), response_ids=tuple(ids), logprobs=tuple(-0.5 for _ in ids),
                   entropies=tuple(ent), loss_mask=tuple(mask), stop_reason=kw.pop("stop_reason", "answer"),
                   response_text="".join(pieces), **kw)


# Prompt 0: row 0 calls python (tokens 5..7 the call, 8..10 tool output); branches 2 (t=2) and 3 (t=6)
# fork from it, branch 4 forks from branch 2 (depth 2, t=5); row 1 carries the injection; branch 5 of row 1.
BASE0 = ["<think>", "I", " will", " compute", "</think>", "<python>", "print(6*7)", "</python>",
         "\n<result>\n", "42", "\n</result>\n", "<answer>", "\\boxed{42}", "</answer>"]
MASK0 = [1] * 8 + [0] * 3 + [1] * 3
SPAN0 = (ToolSpan(call_start=5, call_end=8, result_end=11, name="python", ok=True),)
ROW1 = ["Hmm", " ", INJECTION, " & \"quotes\"", "\n", "\x0b", "", "<answer>", "\\boxed{41}", "</answer>"]


def small_records() -> tuple[list[dict], list[str]]:
    """Two step records (steps 0 and 1) of two prompts each; returns (records, vocab)."""
    vocab = ["<pad>"]
    examples = [Example(id="toy/0", question="What is 6 * 7? <b>bold</b>", answers=("42", "forty-two"),
                        kind="math", metric="math_equiv", data_source="toy"),
                Example(id="toy/1", question="Capital of France?", answers=("Paris",), kind="qa",
                        metric="f1", data_source="toyqa")]
    omega0 = tuple(1.0 + 0.01 * t for t in range(14))
    score0 = tuple(-math.inf if m == 0 else 0.5 * t - 2 for t, m in enumerate(MASK0))
    records = []
    for step in (0, 1):
        rows = [
            _row(vocab, 0, 0, BASE0, MASK0, tool_spans=SPAN0, omega=omega0, scores=score0),
            _row(vocab, 0, 1, ROW1, [1] * len(ROW1), omega=tuple(1.0 for _ in ROW1),
                 scores=tuple(0.1 * t for t in range(len(ROW1))), stop_reason="eos"),
            _row(vocab, 0, 2, BASE0[:3] + [" guess", " 41", "</think>", "<answer>", "41", "</answer>"], [1] * 9,
                 origin="branch", parent=0, split=2, root=0, branch_score=1.5),
            _row(vocab, 0, 3, BASE0[:7] + ["</python>", "\n<result>\n", "oops", "\n</result>\n", "<answer>"],
                 [1] * 8 + [0] * 3 + [1], origin="branch", parent=0, split=6, root=0, branch_score=0.75,
                 tool_spans=(ToolSpan(call_start=5, call_end=8, result_end=11, name="python", ok=False),),
                 stop_reason="max_length"),
            _row(vocab, 0, 4, BASE0[:3] + [" guess", " 41", "</think>", " no", " 42"], [1] * 8,
                 origin="branch", parent=2, split=5, root=0, branch_score=0.25),
            _row(vocab, 0, 5, ROW1[:2] + ["Paris?"], [1] * 3, origin="branch", parent=1, split=1, root=1,
                 branch_score=0.5, stop_reason="no_action"),
            _row(vocab, 1, 0, ["<answer>", "Paris", "</answer>"], [1, 1, 1]),
            _row(vocab, 1, 1, ["<answer>", "Lyon", "</answer>"], [1, 1, 1]),
        ]
        rewards = [1.0, 0.0, -1.0, 0.5, 1.1, 0.0, 1.0, 0.0]
        scored = [RewardOutput(r, {"acc": float(r > 0), "format_ok": 1.0}) for r in rewards]
        T = max(len(r.response_ids) for r in rows)
        adv = torch.zeros(len(rows), T)
        for i, r in enumerate(rows):
            adv[i, : len(r.response_ids)] = (rewards[i] - 0.3) * (1 + 0.1 * torch.arange(len(r.response_ids)))
        rec = step_record(step, rows, examples, scored, adv, TokenTexts(VocabTokenizer(vocab)), {"algorithm": "appo"},
                          trained=[r.origin == "initial" for r in rows])  # APPO's default rule
        records.append(rec)
    return records, vocab


def write_metrics(run_dir, steps: int = 5) -> None:
    """A metrics.jsonl in the trainer's shape: validation at step 0, training metrics from step 1."""
    lines = [{"step": 0, "time": 0.0, "val/all/acc": 0.1, "val/toy/acc": 0.1}]
    for s in range(1, steps + 1):
        lines.append({"step": s, "time": float(s), "critic/score/mean": 0.1 * s, "critic/score/min": -1.0,
                      "critic/score/max": 1.0, "reward/acc": 0.05 * s, "response_length/mean": 100.0 + s,
                      "rollout/tool_calls_per_rollout": 0.5, "rollout/branches_per_prompt": 8.0,
                      "actor/pg_clipfrac": 0.01 * s, "actor/grad_norm": 1.0 / s, "timing_s/gen": 2.0,
                      "timing_s/step": 3.0, "note": "text values are skipped"})
        if s % 2 == 0:
            lines[-1]["val/all/acc"] = 0.1 + 0.05 * s
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


WORDS = ["the", " answer", " is", " we", " need", " to", " compute", " first", " then", " check", " value", ",",
         ".", " 12", " 7", " x", " +", " =", "\n", " so", " let", " me", " think", " about", " it"]


def big_record(step: int = 0, n_prompts: int = 8, n_initial: int = 8, n_branch: int = 8, n_tokens: int = 200,
               seed: int = 0) -> dict:
    """A realistic-size step: ``n_prompts`` x (``n_initial`` + ``n_branch``) rows x about ``n_tokens``
    tokens, each initial row with one python call, branches at the top-BS points."""
    rng = random.Random(seed)
    vocab = ["<pad>"]
    examples = [Example(id=f"big/{g}", question=f"Question {g}: what is {g} * 7 + 3?", answers=(str(g * 7 + 3),),
                        kind="math", metric="math_equiv", data_source="big") for g in range(n_prompts)]
    rows, rewards = [], []
    for g in range(n_prompts):
        initial = []
        for u in range(n_initial):
            pieces = ["<think>"] + [rng.choice(WORDS) for _ in range(n_tokens // 2 - 10)] + ["</think>", "<python>",
                      f"print({g}*7+3)", "</python>"]
            n_model = len(pieces)
            pieces += ["\n<result>\n", str(g * 7 + 3), "\n</result>\n"]
            answer = f"\\boxed{{{g * 7 + rng.choice([3, 4])}}}"
            pieces += [rng.choice(WORDS) for _ in range(n_tokens - len(pieces) - 3)] + ["<answer>", answer, "</answer>"]
            mask = [1] * n_model + [0] * 3 + [1] * (len(pieces) - n_model - 3)
            ent = [rng.random() * 3 if m else 0.0 for m in mask]
            omega = [0.8 + 0.4 * rng.random() for _ in pieces]
            scores = [rng.gauss(0, 1) if m else -math.inf for m in mask]
            span = (ToolSpan(n_model - 3, n_model, n_model + 3, "python", True),)
            initial.append(_row(vocab, g, u, pieces, mask, entropies=ent, omega=tuple(omega), scores=tuple(scores),
                                tool_spans=span))
            rows.append(initial[-1])
            rewards.append(rng.choice([0.0, 1.0, 1.1, -1.0]))
        for b in range(n_branch):
            par = initial[b % n_initial]
            split = rng.randrange(1, len(par.response_ids) // 2)
            ids = list(par.response_ids[: split + 1])
            tail = [rng.choice(WORDS) for _ in range(n_tokens - split - 4)] + ["<answer>", "7", "</answer>"]
            pieces = [vocab[i] for i in ids] + tail
            rows.append(_row(vocab, g, n_initial + b, pieces, [1] * len(pieces), origin="branch", parent=par.uid,
                             split=split, root=par.uid, branch_score=round(rng.uniform(0.5, 4), 3)))
            rewards.append(rng.choice([0.0, 1.0]))
    scored = [RewardOutput(r, {"acc": float(r > 0)}) for r in rewards]
    T = max(len(r.response_ids) for r in rows)
    adv = torch.randn(len(rows), T, generator=torch.Generator().manual_seed(seed))
    return step_record(step, rows, examples, scored, adv, TokenTexts(VocabTokenizer(vocab)), {"algorithm": "appo"})
