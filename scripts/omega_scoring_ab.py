"""Old (padded) against new (trie) Omega scoring on the demo, in one process (issue 26).

Runs the demo's APPO steps from ``SFT_MODEL`` with the trajectory following ``--side`` (the scoring whose
log-probs the strategy uses) and, at every step, scores the same initial rows with both
:func:`appo.engine.scoring.score_sequences` (this checkout, the trie) and the ``score_sequences`` of
``--old-scoring`` (a path to another checkout's ``appo/engine/scoring.py``, e.g. main's padded version).
Each APPO group's branch points are chosen from both and compared; per step it prints one JSON line: groups
whose points differ, the differing points with their Branching Scores under each scoring, the largest log-prob
and score differences, and whether the update's trie took the sparse path (``sparse_pays``).

    OMP_NUM_THREADS=1 python scripts/omega_scoring_ab.py runs/demo/sft/sft_model
        --old-scoring ../main/appo/engine/scoring.py --steps 4

Leaves out: anything but the ``appo`` strategy's default ``points=score``. The patches are local to this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json

import torch

import appo.agent.strategies as S
import appo.engine.scoring as new_scoring
import appo.models.tree_attention as TA
from appo.config import load_config
from appo.presets import shipped_config_path
from appo.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sft_model")
    ap.add_argument("--old-scoring", required=True, help="path to the other checkout's appo/engine/scoring.py")
    ap.add_argument("--side", choices=("old", "new"), default="old", help="whose log-probs the run follows")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("old_scoring", a.old_scoring)
    old_scoring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old_scoring)
    torch.set_num_threads(a.threads)

    other: dict[tuple[int, int], torch.Tensor] = {}  # (data_ptr, numel) of a used log-prob tensor -> the other's
    stat = {"logp": 0.0}
    new_fn, old_fn = new_scoring.score_sequences, old_scoring.score_sequences

    def both(model, seqs, starts, **kw):
        n, o = new_fn(model, seqs, starts, **kw), old_fn(model, seqs, starts, **kw)
        used, alt = (n, o) if a.side == "new" else (o, n)
        for (lu, _), (la, _) in zip(used, alt):
            other[(lu.data_ptr(), lu.numel())] = la
            if lu.numel():
                stat["logp"] = max(stat["logp"], float((lu - la).abs().max()))
        return used

    def alt_of(x):
        return other[(x.data_ptr(), x.numel())]

    lg0, nr0, bs0, sel0 = S.likelihood_gain, S.omega_noise_rows, S.branching_score, S.select_branch_points
    pending: dict = {}
    alt_bs: dict[int, object] = {}
    records: list[dict] = []

    def lg(cur, anc, valid, *args, **kw):
        pending["omega"] = lg0(alt_of(cur), alt_of(anc), valid, *args, **kw)
        return lg0(cur, anc, valid, *args, **kw)

    def nr(cur, anc, valid, *args, **kw):
        pending["noise"] = nr0(alt_of(cur), alt_of(anc), valid, *args, **kw)
        return nr0(cur, anc, valid, *args, **kw)

    def bs(ent, omega, valid, omega_noise=None, **kw):
        out = bs0(ent, omega, valid, omega_noise=omega_noise, **kw)
        if "omega" in pending:
            alt_bs[id(out.score)] = bs0(ent, pending.pop("omega"), valid, omega_noise=pending.pop("noise", None), **kw)
        return out

    def sel(scores, masks, k, strict=None):
        pts = sel0(scores, masks, k, strict)
        if isinstance(scores, list) and all(id(s) in alt_bs for s in scores):
            alt = [alt_bs[id(s)] for s in scores]
            pts2 = sel0([b.score for b in alt], masks, k, [b.strict for b in alt])
            diff = max((float((s - b.score)[torch.isfinite(s)].abs().max()) for s, b in zip(scores, alt)
                        if torch.isfinite(s).any()), default=0.0)
            moved = [{"used": p, "other": q, "bs_used_side": [float(scores[p[0]][p[1]]), float(scores[q[0]][q[1]])],
                      "bs_other_side": [float(alt[p[0]].score[p[1]]), float(alt[q[0]].score[q[1]])]}
                     for p, q in zip(pts, pts2) if p != q]
            records.append({"moved": moved, "score_diff": diff})
        return pts

    new_scoring.score_sequences = both  # teacher_forced_logp_fn imports it at call time
    S.likelihood_gain, S.omega_noise_rows, S.branching_score, S.select_branch_points = lg, nr, bs, sel
    pays0, pays = TA.sparse_pays, []
    TA.sparse_pays = lambda *args, **kw: pays.append(pays0(*args, **kw)) or pays[-1]

    cfg = load_config(shipped_config_path("demo"), [
        f"model.path={a.sft_model}", f"trainer.seed={a.seed}", f"trainer.num_threads={a.threads}",
        "trainer.resume_mode=disable", "trainer.dump_rollouts_freq=0", "trainer.logger=[jsonl]",
        f"trainer.default_local_dir=runs/omega_scoring_ab_{a.side}_s{a.seed}"])
    trainer = Trainer(cfg)
    try:
        for step in range(a.steps):
            records.clear(), pays.clear()
            stat["logp"] = 0.0
            m = trainer.train_step(step)
            print(json.dumps({"step": step + 1, "groups": len(records),
                              "groups_points_differ": sum(bool(r["moved"]) for r in records),
                              "moved": [r["moved"] for r in records if r["moved"]],
                              "max_logp_diff": stat["logp"],
                              "max_score_diff": max((r["score_diff"] for r in records), default=0.0),
                              "update_sparse": pays.count(True), "update_dense": pays.count(False),
                              "omega_degenerate_rate": m.get("appo/omega_degenerate_rate")}), flush=True)
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
