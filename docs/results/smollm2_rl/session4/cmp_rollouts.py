"""Compare two RL runs' rollout dumps of one step (``rollouts/step_NNNNNN.json``): same prompts, and how many rows
have equal tokens and rewards, and the largest advantage difference.

    python docs/results/smollm2_rl/session4/cmp_rollouts.py RUN_A/rollouts/step_000001.json RUN_B/rollouts/...
"""
import json
import sys


def rows(d: dict) -> list:
    return [(p["id"], r["uid"], r["tokens"], r["reward"], r["advantage"]) for p in d["prompts"] for r in p["rows"]]


ra = rows(json.load(open(sys.argv[1])))
rb = rows(json.load(open(sys.argv[2])))
print("rows", len(ra), len(rb), "same prompts", [x[0] for x in ra] == [x[0] for x in rb])
same_tok = sum(x[2] == y[2] for x, y in zip(ra, rb))
same_rew = sum(x[3] == y[3] for x, y in zip(ra, rb))
maxdadv = max(max((abs(p - q) for p, q in zip(x[4], y[4])), default=0) for x, y in zip(ra, rb))
print("rows with equal tokens", same_tok, "equal reward", same_rew, "max |adv diff|", maxdadv)
