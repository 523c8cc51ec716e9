#!/bin/bash
# Issue 24, fifth pass (integrator, 05:25 UTC): fill the seed gaps. usage: chain5.sh early|middle
cd /work/wt/i24
export OMP_NUM_THREADS=1
STOP=0550
if [ "$1" = early ]; then
  P="--out runs/study_depth_early --tasks depth_early"; SEEDS="4"
  ARMS="appo/fork=redraw appo/points=oracle,fork=redraw appo/points=entropy,fork=redraw appo/points=random,fork=redraw"
else
  P="--out runs/study_depth2 --tasks depth_middle"; SEEDS="2 3 4"
  ARMS="appo/points=entropy,fork=redraw appo/points=random,fork=redraw"
fi
P="$P --steps 8 --test-freq 4 --val-examples 48 --val-samples 2 --final-evals 2 --no-greedy --workers 1"
for s in $SEEDS; do for v in $ARMS; do
  if [ "$(date -u +%H%M)" -ge "$STOP" ]; then echo "== $(date -u +%H:%M:%S) stop: past $STOP before $v seed $s"; exit 0; fi
  echo "== $(date -u +%H:%M:%S) $v seed $s"
  nice -n 19 .venv/bin/python -m appo study $P --variants "$v" --seeds "$s"
done; done
echo "== $(date -u +%H:%M:%S) chain done"
