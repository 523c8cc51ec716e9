#!/bin/bash
# Collect the session-4 figures into docs/results/depth_study/ (reads runs only). usage: collect4.sh <seeds csv>
cd /work/wt/i24
S=$1
O=docs/results/depth_study
for d in early late; do
  runs/study_depth4/summarize4.sh $d $S > runs/study_depth4/summary_$d.txt 2>&1
  cp runs/study_depth4/report_$d.md $O/session4_depth_${d}_results.md
  { echo "# depth_$d: per-seed finals and paired differences vs GRPO (runs/study_depth4/variance4.py)"; echo '```'
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python runs/study_depth4/variance4.py runs/study_depth_$d depth_$d $S; echo '```'
    echo; echo "# start model profile (scripts/depth_profile.py, 64 problems x 2 samples, temperature 1)"; echo '```'
    tail -n 1 runs/study_depth4/profile_$d.log; echo '```'
    echo; echo "# thought vs call operator at the decisive step, first training step's rollouts (scripts/depth_thought_vs_call.py)"; echo '```'
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/depth_thought_vs_call.py runs/study_depth_$d/depth_$d/runs/grpo/seed*/rollouts/step_000001.json | sed 's#runs/study_depth_[a-z]*/depth_[a-z]*/runs/##'
    echo '```'; echo; echo "# branch contrast and decisive-token credit (runs/study_depth4/summarize4.sh)"; echo '```'
    sed 's#runs/study_depth_[a-z]*/depth_[a-z]*/runs/##' runs/study_depth4/summary_$d.txt; echo '```'
  } > $O/session4_depth_${d}_details.md
done
