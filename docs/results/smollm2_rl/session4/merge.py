"""Gather this session's evaluation JSON (several processes, see docs/results.md, issue 28, fourth session) into
one folder and write scripts/smollm2_demo.py's report of it. GSM8K rows of the RL and SFT models are kept where
all three have them (a paired comparison); base's GSM8K rows are last session's (rows 0-49, same protocol).

    python docs/results/smollm2_rl/session4/merge.py runs/smollm2 docs/results/smollm2_rl/session4
"""
import importlib.util
import json
import sys
from pathlib import Path

runs, dest = Path(sys.argv[1]), Path(sys.argv[2])
SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "smollm2_demo.py"
spec = importlib.util.spec_from_file_location("demo", SCRIPT)
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)
for m in ("sft160", "appo_s0", "grpo_s0", "appo_s1", "grpo_s1"):
    (dest / f"eval_{m}_wordnew.json").write_text((runs / f"eval_{m}_wordnew.json").read_text())
gsm = {}
for m in ("sft160", "appo_s0", "grpo_s0"):
    parts = [runs / f"eval_{m}_gsm8k.json", runs / "i28s4" / "gsm8k_100" / f"eval_{m}_gsm8k.json"]
    res = None
    for p in parts:
        if p.is_file():
            d = json.loads(p.read_text())
            if res is None:
                res = d
            else:
                res["rows"] += d["rows"]
                res["ids_checked"] += d["ids_checked"]
                res["id_mismatches"] += d["id_mismatches"]
    gsm[m] = res
common = set.intersection(*({r["id"] for r in res["rows"]} for res in gsm.values()))
for m, res in gsm.items():
    kept = [r for r in res["rows"] if r["id"] in common]
    res["rows_dropped_unpaired"] = len(res["rows"]) - len(kept)
    res["rows"] = kept
    (dest / f"eval_{m}_gsm8k.json").write_text(json.dumps(res, indent=1))
(dest / "eval_base_gsm8k.json").write_text((runs / "i28s4" / "prev_gsm8k50" / "eval_base_gsm8k.json").read_text())
demo.stage_report(dest, ("base", "sft160", "appo_s0", "grpo_s0", "appo_s1", "grpo_s1"))
