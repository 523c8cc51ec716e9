"""``scripts/smollm2_demo.py``'s report: bootstrap intervals, paired differences between any models in the given
order (base, the SFT models, RL models), and the ``--models`` names the eval stage accepts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "smollm2_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("smollm2_demo", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(out: Path, model: str, accs: list[float], calls: list[int]) -> None:
    rows = [{"id": f"w/{i}", "score": a, "acc": a, "format_ok": 1.0, "tool_calls": c, "stop_reason": "stop",
             "response": ""} for i, (a, c) in enumerate(zip(accs, calls))]
    (out / f"eval_{model}_word.json").write_text(json.dumps({"rows": rows, "ids_checked": len(rows),
                                                            "id_mismatches": []}))


def test_bootstrap_interval_brackets_the_mean_and_is_degenerate_for_constant_values(demo):
    m, lo, hi = demo.bootstrap_ci([0.0] * 30 + [1.0] * 10)
    assert m == 0.25 and lo < 0.25 < hi and 0.1 < lo and hi <= 0.4
    assert demo.bootstrap_ci([1.0] * 5) == (1.0, 1.0, 1.0)


def test_report_pairs_every_later_model_with_every_earlier_one(demo, tmp_path):
    _write(tmp_path, "base", [0.0] * 40, [0] * 40)
    _write(tmp_path, "sft", [1.0] * 4 + [0.0] * 36, [1] * 40)
    _write(tmp_path, "sft2", [1.0] * 20 + [0.0] * 20, [1] * 40)
    demo.stage_report(tmp_path, ("base", "sft", "sft2"))
    text = (tmp_path / "report.md").read_text()
    assert "| sft2 | word | 40 | 0.500 [" in text
    assert "- word: sft - base accuracy +0.100 [" in text and "- word: sft2 - sft accuracy +0.400 [" in text
    assert "- word: sft2 - base tool calls / answer +1.000 [+1.000, +1.000]" in text
    line = next(t for t in text.splitlines() if t.startswith("- word: sft2 - sft accuracy"))
    lo = float(line.split("[")[1].split(",")[0])
    assert lo > 0  # 16 of 40 pairs move 0 -> 1, none back: the interval excludes 0


def test_models_accepts_base_sft_and_named_paths(demo, tmp_path):
    paths = demo.model_paths(tmp_path, ["base", "sft", "rl=runs/x/model"])
    assert paths == {"base": demo.BASE, "sft": str(tmp_path / "sft" / "sft_model"), "rl": "runs/x/model"}
    with pytest.raises(SystemExit, match="name=path"):
        demo.model_paths(tmp_path, ["nonsense"])
