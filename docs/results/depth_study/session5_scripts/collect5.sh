#!/bin/bash
# Session 5 (seed gaps filled): regenerate the depth_early and depth_late tables with session 4's collect4.sh (seeds
# 0-4), copy the report plots, and write depth_middle's entropy/random-redraw figures at seeds 0-4. Reads runs only.
cd /work/wt/i24
O=docs/results/depth_study
nice -n 19 $O/session4_scripts/collect4.sh 0,1,2,3,4
for d in early late; do cp runs/study_depth4/report_$d/* $O/report_$d/; done
runs/study_depth5/summarize5_middle.sh > runs/study_depth5/summary_middle.txt 2>&1
mkdir -p $O/report_middle
cp runs/study_depth5/report_middle/* $O/report_middle/
cp runs/study_depth5/report_middle.md $O/session5_depth_middle_results.md
{ echo "# depth_middle, entropy- and random-redraw arms at seeds 0-4 (runs/study_depth5/summarize5_middle.sh)"; echo '```'
  sed 's#runs/study_depth2/depth_middle/runs/##' runs/study_depth5/summary_middle.txt; echo '```'
} > $O/session5_depth_middle_details.md
