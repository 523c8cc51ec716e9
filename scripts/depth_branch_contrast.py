"""How often an APPO arm's branches disagree with their parent on the reward (issue 24): for each dumped
rollout file, the share of branch rows whose reward differs from their parent's. A branch that re-samples
only what follows a decided token ends with its parent's reward, so the contrast between the branches
(the procedure-level advantage) is zero there.

    python scripts/depth_branch_contrast.py runs/study_depth2/depth_middle/runs/*/seed0/rollouts/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def branch_disagreement(path: str | Path) -> tuple[int, int]:
    """(branch rows whose reward differs from their parent's, branch rows) in one rollout dump."""
    differ = total = 0
    for prompt in json.loads(Path(path).read_text())["prompts"]:
        reward = {r["uid"]: r["reward"] for r in prompt["rows"]}
        for r in prompt["rows"]:
            if r["origin"] == "branch":
                total += 1
                differ += reward[r["uid"]] != reward[r["parent"]]
    return differ, total


def main() -> None:
    for path in sys.argv[1:]:
        differ, total = branch_disagreement(path)
        share = f"{100 * differ / total:.0f}%" if total else "–"
        print(f"{path}: {differ}/{total} branches end with another reward than their parent ({share})")


if __name__ == "__main__":
    main()
