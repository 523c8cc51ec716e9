#!/bin/bash
# Issue 24, session 4: one depth's chain (one process at a time): wait for its start model's SFT, measure the
# start model's error profile, then the study seed by seed across all five arms (GRPO and the two main redraw
# arms first within a seed), one run per `appo study` call; no run starts at or after $STOP (HHMM UTC).
# usage: chain.sh <early|late> <sft pid> <first seed> <last seed> [STOP]
cd /work/wt/i24
D=$1; SFTPID=$2; S0=$3; S1=$4; STOP=${5:-0511}
export OMP_NUM_THREADS=1
while kill -0 "$SFTPID" 2>/dev/null; do sleep 5; done
M=runs/study_depth_$D/depth_$D/sft/sft_model
[ -f $M/config.json ] || { echo "no start model $M"; exit 1; }
case $D in early) K=1;; late) K=5;; esac
if [ ! -f runs/study_depth4/profile_$D.json ]; then
  echo "== $(date -u +%H:%M:%S) profile"
  nice -n 19 .venv/bin/python scripts/depth_profile.py $M --depths $K --problems 64 --samples 2 \
    --json runs/study_depth4/profile_$D.json > runs/study_depth4/profile_$D.log 2>&1
  tail -n 2 runs/study_depth4/profile_$D.log
fi
P="--out runs/study_depth_$D --tasks depth_$D --steps 8 --test-freq 4 --val-examples 48 --val-samples 2 --final-evals 2 --no-greedy --workers 1"
for s in $(seq $S0 $S1); do
  for v in grpo appo/fork=redraw appo/points=oracle,fork=redraw appo/points=entropy,fork=redraw appo/points=random,fork=redraw; do
    if [ "$(date -u +%H%M)" -ge "$STOP" ]; then echo "== $(date -u +%H:%M:%S) stop: past $STOP before $v seed $s"; exit 0; fi
    echo "== $(date -u +%H:%M:%S) $v seed $s"
    nice -n 19 .venv/bin/python -m appo study $P --variants "$v" --seeds "$s"
  done
done
echo "== $(date -u +%H:%M:%S) chain done"
