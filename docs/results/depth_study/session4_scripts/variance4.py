"""Per depth: paired differences vs GRPO of every redraw arm, the sd across seeds of the per-seed mean difference
and the mean within-seed SE (48 problems x 2 samples x 2 evaluations), and per-seed finals. Reads only.
usage: variance4.py <out> <task> <seeds, e.g. 0,1,2>"""
import statistics
import sys

from appo.study.analysis import bootstrap, differences, load_results
from appo.study.runner import StudySettings

out, task, seeds = sys.argv[1], sys.argv[2], tuple(int(s) for s in sys.argv[3].split(","))
arms = ("grpo", "appo/fork=redraw", "appo/points=oracle,fork=redraw", "appo/points=entropy,fork=redraw",
        "appo/points=random,fork=redraw")
s = StudySettings(tasks=(task,), seeds=seeds, steps=8, test_freq=4, val_examples=48, val_samples=2,
                  val_greedy=False, final_evals=2, workers=1, variants=arms)
res = load_results(out, s)
for a in arms:
    rs = sorted((r for r in res if r.variant == a), key=lambda r: r.seed)
    print(f"{a}: " + " ".join(f"s{r.seed}={100 * r.final:.1f}" for r in rs))
    if rs:
        gain = [100 * (r.final - r.curve[0]) for r in rs]
        print(f"  final - step-0 accuracy (same held-out draws): mean {statistics.fmean(gain):+.1f} pts, per seed "
              + " ".join(f"{g:+.1f}" for g in gain))
for a in arms[1:]:
    d = differences([r for r in res if r.variant == a], [r for r in res if r.variant == "grpo"])
    if not d:
        continue
    diff, lo, hi = bootstrap(d)
    means = [statistics.fmean(v) for v in d.values()]
    se = statistics.fmean(statistics.pstdev(v) / len(v) ** 0.5 for v in d.values())
    sd = 100 * statistics.stdev(means) if len(means) > 1 else float("nan")
    print(f"{a} - grpo: seeds {len(d)}, {100 * diff:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] "
          f"width {100 * (hi - lo):.1f}; sd of per-seed means {sd:.1f} pts, mean within-seed SE {100 * se:.1f} pts")
