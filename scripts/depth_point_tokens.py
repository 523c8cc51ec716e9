"""Which tokens an APPO arm branched after on the ``depth`` task, and the entropy at and before the decisive
operator, from a run's rollout dump (issue 24).

    python scripts/depth_point_tokens.py runs/depth_probe/depth_middle/runs/appo/seed0/rollouts/step_000001.json

The decisive operator is the ``occurrence``-th match of ``DECISIVE_PATTERN`` (the dump's rows carry token
strings, so the character offset is mapped by summing their lengths).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import Counter

from appo.data.procedural.depth import DECISIVE_PATTERN


def decisive_index(tokens: list[str], occurrence: int) -> int | None:
    """Index of the token holding the decisive operator, or None when the row has no such call."""
    matches = list(re.finditer(DECISIVE_PATTERN, "".join(tokens)))
    if occurrence >= len(matches):
        return None
    c, end = matches[occurrence].start(1), 0
    for i, t in enumerate(tokens):
        end += len(t)
        if end > c:
            return i
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="+")
    ap.add_argument("--step", type=int, default=3, help="the decisive step (1-based) of the run's task")
    args = ap.parse_args()
    at_prev, at_op, forked_after = [], [], Counter()
    for path in args.dumps:
        for p in json.load(open(path))["prompts"]:
            rows = {r["uid"]: r for r in p["rows"]}
            for r in p["rows"]:
                if r["origin"] == "initial":
                    q = decisive_index(r["tokens"], args.step - 1)
                    if q is not None and q > 0:
                        at_prev.append(r["entropy"][q - 1])
                        at_op.append(r["entropy"][q])
                else:
                    forked_after[rows[r["parent"]]["tokens"][r["split"]]] += 1
    print(f"initial rows with the decisive call: {len(at_op)}; mean entropy at the operator "
          f"{statistics.fmean(at_op):.3f} nats, at the token before it {statistics.fmean(at_prev):.3f}")
    print("branches forked after these tokens:", forked_after.most_common(12))


if __name__ == "__main__":
    main()
