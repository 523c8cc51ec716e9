"""Sizes of the departures from the APPO reference code that docs/algorithm.md 11 lists (issue 24), on seeded
random rows shaped like the study's (T = 120 model tokens, 15% whitespace-only tokens, K = 4 points per prompt
from 4 rows). Prints one line per departure. Run: ``python scripts/departure_sizes.py``.

- whitespace: ours z-scores H and Omega over non-whitespace model tokens; the reference over every model token
  (whitespace skipped only as a candidate). Share of chosen points that differ.
- std + 1e-6: the reference divides by ``std + 1e-6``; ours by ``std``. Largest absolute change of a BS value
  and share of chosen points that differ.
- zero-variance Omega: where Omega is constant (the first step with the ``previous`` anchor) the reference's BS
  is 0 everywhere and it forks at the first K non-whitespace tokens of the prompt's first rollout; ours falls
  back to Z(H). Share of the reference's points that ours also picks.
"""

from __future__ import annotations

import torch

from appo.core import branching_score, select_branch_points


def z_ref(x, m, eps=1e-6):
    v = x[m]
    return torch.where(m, (x - v.mean()) / (v.std(unbiased=False) + eps), torch.zeros_like(x))


def main(prompts: int = 2000, rows: int = 4, T: int = 120, k: int = 4, ws_share: float = 0.15) -> None:
    g = torch.Generator().manual_seed(0)
    diff_ws = diff_eps = overlap_deg = 0
    max_rel = 0.0
    for _ in range(prompts):
        ours, ref_ws, ref_eps, ents, masks = [], [], [], [], []
        for _ in range(rows):
            ws = torch.rand(T, generator=g) < ws_share
            ent = torch.rand(T, generator=g).pow(3) * 2 * torch.where(ws, 0.2, 1.0)  # whitespace: low entropy
            omega = 1 + 0.05 * torch.randn(T, generator=g).cumsum(0) / T ** 0.5
            valid = ~ws
            bs = branching_score(ent, omega, valid)
            ours.append(bs.score)
            model = torch.ones(T, dtype=torch.bool)
            s_ws = z_ref(ent, model, 0.0) * z_ref(omega, model, 0.0)
            ref_ws.append(torch.where(valid, s_ws, torch.full_like(s_ws, -torch.inf)))
            s_eps = z_ref(ent, valid) * z_ref(omega, valid)
            ref_eps.append(torch.where(valid, s_eps, torch.full_like(s_eps, -torch.inf)))
            max_rel = max(max_rel, float((s_eps - bs.score).abs()[valid].max()))
            ents.append(ent)
            masks.append(valid)
        pick = set(select_branch_points(ours, masks, k))
        diff_ws += len(pick - set(select_branch_points(ref_ws, masks, k)))
        diff_eps += len(pick - set(select_branch_points(ref_eps, masks, k)))
        # zero-variance Omega: ours = Z(H) ranking; the reference: the first k non-whitespace tokens of row 0
        zh = [branching_score(e, torch.ones_like(e), m).score for e, m in zip(ents, masks)]
        first = [(0, int(t)) for t in torch.nonzero(masks[0]).flatten()[:k]]
        overlap_deg += len(set(select_branch_points(zh, masks, k)) & set(first))
    n = prompts * k
    print(f"whitespace in the z-scores: {100 * diff_ws / n:.1f}% of chosen points differ")
    print(f"std + 1e-6: largest |BS change| {max_rel:.1e}; {100 * diff_eps / n:.2f}% of chosen points differ")
    print(f"zero-variance Omega: ours picks {100 * overlap_deg / n:.1f}% of the reference's points")


if __name__ == "__main__":
    main()
