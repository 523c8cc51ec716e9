#!/bin/bash
# Tables, branch contrast and decisive credit of the session-4 runs at depth_early and depth_late (reads only).
# usage: summarize4.sh <early|late> <seeds, e.g. 0-5>
cd /work/wt/i24
D=$1; S=$2
R=runs/study_depth_$D/depth_$D/runs
OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m appo study --report-only --out runs/study_depth_$D --tasks depth_$D --seeds $S --steps 8 --test-freq 4 --val-examples 48 --val-samples 2 --final-evals 2 --no-greedy --workers 1 --variants grpo,appo/fork=redraw,appo/points=oracle,fork=redraw,appo/points=entropy,fork=redraw,appo/points=random,fork=redraw --doc runs/study_depth4/report_$D.md > /dev/null
echo "## branch rows whose reward differs from their parent's (per run: pooled over the dumped steps, then per step)"
for a in appo__fork=redraw appo__points=oracle,fork=redraw appo__points=entropy,fork=redraw appo__points=random,fork=redraw; do
  t_all=0; d_all=0
  for s in $(ls -d "$R/$a"/seed* 2>/dev/null | grep -v log); do
    [ -d "$s/rollouts" ] || continue
    .venv/bin/python scripts/depth_branch_contrast.py "$s"/rollouts/*.json | awk -v r="$s" '{split($2,x,"/"); d+=x[1]; t+=x[2]; p=p" "$NF} END {if (t) printf "%s: %d/%d = %.0f%% (%s)\n", r, d, t, 100*d/t, p}'
  done
done
echo "## decisive-token credit per arm"
cd $R && nice -n 10 /work/wt/i24/.venv/bin/python /work/wt/i24/scripts/depth_decisive_credit.py $(ls -d */seed* | grep -v log)
