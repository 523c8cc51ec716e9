"""How much training signal the decisive token gets in each arm of the depth study (issue 24), read from the
rollout dumps (``rollouts/step_*.json``, which hold every row's per-token advantage).

For each prompt, over its trained rows that reach the decisive call: ``A_dec`` is the row's advantage at the
decisive token (the operator of the decisive ``print(<value> <op>`` call,
:data:`appo.data.procedural.depth.DECISIVE_PATTERN`), ``s`` is +1 when that operator is the question's
(``Check <op>``) and -1 when not. Printed per arm (the run folder's parent):

- ``rows``: trained rows with a decisive token, per prompt;
- ``credit``: ``sum(s * A_dec)`` per prompt, the push the policy-gradient loss gives toward the right decision
  (per-token weights aside);
- ``credit/ktok``: the same per 1,000 trained tokens of the prompt: under the ``token-mean`` loss every trained
  token of a mini-batch has the same weight, so this is the comparable push when arms train different token
  counts (APPO trains its 4 initial rows, GRPO all 8);
- ``wrong-sign``: share of rows whose ``s * A_dec < 0`` (credit pushing toward the wrong operator);
- ``same prefix``: share of the prompt's initial (GRPO: all) rows that reach the decisive token whose text before
  it equals the prompt's most common one. Near 100% means independent rows already re-draw the decision from one
  and the same state, so a branch there adds no sample that an independent row would not have given.

    python scripts/depth_decisive_credit.py runs/study_depth2/depth_middle/runs/{grpo,appo__fork=redraw}/seed*
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from itertools import accumulate
from pathlib import Path

from appo.data.procedural.depth import DECISIVE_PATTERN

STEP = re.compile(r"Step (\d+): Check ([+-])")


def prompt_credit(prompt: dict) -> dict | None:
    """The decisive-token credit of one dumped prompt (None when its question has no ``Check`` step)."""
    m = STEP.search(prompt["question"])
    if m is None:
        return None
    occurrence, right = int(m.group(1)) - 1, m.group(2)
    rows = credit = wrong = tokens = 0.0
    prefixes: list[str] = []
    for r in prompt["rows"]:
        if r["origin"] == "initial":
            text = "".join(r["tokens"])
            found = list(re.finditer(DECISIVE_PATTERN, text))
            if occurrence < len(found):
                prefixes.append(text[: found[occurrence].start(1)])
        if not r["trained"]:
            continue
        toks, adv, mask = r["tokens"], r["advantage"], r["loss_mask"]
        tokens += sum(mask)
        text = "".join(toks)
        found = list(re.finditer(DECISIVE_PATTERN, text))
        if occurrence >= len(found):
            continue
        c = found[occurrence].start(1)
        t = next(i for i, end in enumerate(accumulate(len(piece) for piece in toks)) if end > c)
        s = 1.0 if found[occurrence].group(1) == right else -1.0
        rows += 1
        credit += s * adv[t]
        wrong += s * adv[t] < 0
    same = max((prefixes.count(x) for x in prefixes), default=0)
    return {"rows": rows, "credit": credit, "wrong": wrong, "tokens": tokens, "same": same, "reach": len(prefixes)}


def main(paths: list[str]) -> None:
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for run in paths:
        for f in sorted(Path(run).glob("rollouts/step_*.json")):
            for p in json.loads(f.read_text())["prompts"]:
                if (c := prompt_credit(p)) is not None:
                    by_arm[Path(run).parent.name].append(c)
    print("| arm | prompts | trained rows with the decisive token / prompt | credit / prompt | credit / 1k trained "
          "tokens | wrong-sign rows | same prefix before it |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for arm, cs in by_arm.items():
        n_rows = sum(c["rows"] for c in cs)
        print(f"| {arm} | {len(cs)} | {statistics.fmean(c['rows'] for c in cs):.2f} | "
              f"{statistics.fmean(c['credit'] for c in cs):.2f} | "
              f"{statistics.fmean(1000 * c['credit'] / c['tokens'] for c in cs if c['tokens']):.2f} | "
              f"{100 * sum(c['wrong'] for c in cs) / max(n_rows, 1):.0f}% | "
              f"{100 * sum(c['same'] for c in cs) / max(sum(c['reach'] for c in cs), 1):.0f}% |")


if __name__ == "__main__":
    main(sys.argv[1:])
