#!/bin/bash
# Session 5: depth_middle with the entropy- and random-redraw arms at seeds 0-4 (reads only): the report over every
# finished run (GRPO, BS and oracle at 12 seeds), per-seed finals and paired differences vs GRPO, branch contrast of
# the two arms, decisive-token credit (the two arms and GRPO).
cd /work/wt/i24
R=runs/study_depth2/depth_middle/runs
O=runs/study_depth5
OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m appo study --report-only --out runs/study_depth2 --tasks depth_middle --seeds 0-11 --steps 8 --test-freq 4 --val-examples 48 --val-samples 2 --final-evals 2 --no-greedy --workers 1 --variants grpo,appo/fork=redraw,appo/points=oracle,fork=redraw,appo/points=entropy,fork=redraw,appo/points=random,fork=redraw --doc $O/report_middle.md > /dev/null
echo "## per-seed finals and paired differences vs GRPO, seeds 0-4 (variance4.py)"
OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python docs/results/depth_study/session4_scripts/variance4.py runs/study_depth2 depth_middle 0,1,2,3,4
echo "## branch rows whose reward differs from their parent's (per run: pooled over the dumped steps, then per step)"
for a in appo__points=entropy,fork=redraw appo__points=random,fork=redraw; do
  for s in $(ls -d "$R/$a"/seed* 2>/dev/null | grep -v log); do
    [ -d "$s/rollouts" ] || continue
    nice -n 19 .venv/bin/python scripts/depth_branch_contrast.py "$s"/rollouts/*.json | awk -v r="$s" '{split($2,x,"/"); d+=x[1]; t+=x[2]; p=p" "$NF} END {if (t) printf "%s: %d/%d = %.0f%% (%s)\n", r, d, t, 100*d/t, p}'
  done
done
echo "## decisive-token credit per arm (GRPO: seeds 0-11)"
cd $R && nice -n 19 /work/wt/i24/.venv/bin/python /work/wt/i24/scripts/depth_decisive_credit.py $(ls -d grpo/seed* appo__points=entropy,fork=redraw/seed* appo__points=random,fork=redraw/seed* | grep -v log)
