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


def test_rl_stage_runs_both_arms_at_the_same_rollout_budget_and_eval_finds_their_models(demo, tmp_path,
                                                                                        tiny_model_dir, one_thread):
    """The RL stage trains APPO then GRPO from one start (here the tiny model, 1 step each, a few tokens): both
    runs save their last step, their saved configs differ only in the algorithm, seed-free names and folders,
    and ``--models appo_s0,grpo_s0`` resolves to those checkpoints' model folders."""
    import yaml

    from appo.train import word_rl

    word_rl.main(["--out", str(tmp_path / "data"), "--train", "16", "--heldout", "4"])
    small = ["data.train_batch_size=2", "rollout.n=4", "rollout.n_initial=2", "data.max_response_length=12",
             "actor.ppo_mini_batch_size=2", "trainer.logger=[jsonl]",
             "rollout.max_batch_size=8"]
    demo.stage_rl(tmp_path, str(tiny_model_dir), ["appo", "grpo"], [0], 1, small)
    paths = demo.model_paths(tmp_path, ["appo_s0", "grpo_s0"])
    cfgs = {}
    for arm in ("appo", "grpo"):
        model_dir = Path(paths[f"{arm}_s0"])
        assert model_dir == tmp_path / "rl" / f"{arm}_s0" / "checkpoints" / "step_000001" / "model"
        assert (model_dir / "config.json").is_file()
        cfgs[arm] = yaml.safe_load((tmp_path / "rl" / f"{arm}_s0" / "config.yaml").read_text())
        rows = [json.loads(line) for line in (tmp_path / "rl" / f"{arm}_s0" / "metrics.jsonl").read_text().splitlines()]
        assert rows and rows[-1]["step"] == 1
    assert cfgs["appo"]["algorithm"]["name"] == "appo" and cfgs["grpo"]["algorithm"]["name"] == "grpo"
    for key in ("n", "temperature", "max_tool_calls"):
        assert cfgs["appo"]["rollout"][key] == cfgs["grpo"]["rollout"][key]
    assert cfgs["appo"]["data"] == cfgs["grpo"]["data"] and cfgs["appo"]["model"] == cfgs["grpo"]["model"]
    assert cfgs["appo"]["actor"] == cfgs["grpo"]["actor"]
    with pytest.raises(SystemExit, match="run the rl stage"):
        demo.model_paths(tmp_path, ["appo_s1"])
    # the eval stage runs both RL models on the variants' held-out set, and the report pairs them
    demo.stage_eval(tmp_path, ["appo_s0", "grpo_s0"], 0, 0, 8, 2, ("wordnew",), word_new=3)
    for arm in ("appo", "grpo"):
        res = json.loads((tmp_path / f"eval_{arm}_s0_wordnew.json").read_text())
        assert [r["id"] for r in res["rows"]] == [f"word_new_heldout/{i}" for i in range(3)]
    demo.stage_report(tmp_path, ("appo_s0", "grpo_s0"))
    text = (tmp_path / "report.md").read_text()
    assert "| grpo_s0 | wordnew | 3 |" in text and "- wordnew: grpo_s0 - appo_s0 accuracy" in text


def test_report_pools_the_seeds_of_each_rl_arm_per_problem(demo, tmp_path):
    """Two seeds per arm: each arm's per-problem accuracy is the mean over its seeds, paired with the SFT model
    and with the other arm on the same problems; a single-seed arm gets no pooled line."""
    _write(tmp_path, "sft", [0.0] * 40, [1] * 40)
    _write(tmp_path, "appo_s0", [1.0] * 10 + [0.0] * 30, [1] * 40)
    _write(tmp_path, "appo_s1", [0.0] * 10 + [1.0] * 10 + [0.0] * 20, [1] * 40)
    _write(tmp_path, "grpo_s0", [1.0] * 20 + [0.0] * 20, [1] * 40)
    _write(tmp_path, "grpo_s1", [1.0] * 20 + [0.0] * 20, [1] * 40)
    demo.stage_report(tmp_path, ("sft", "appo_s0", "grpo_s0", "appo_s1", "grpo_s1"))
    text = (tmp_path / "report.md").read_text()
    assert "- word: appo_s* (mean of appo_s0, appo_s1) accuracy 0.250 [" in text
    assert "- word: grpo_s* (mean of grpo_s0, grpo_s1) accuracy 0.500 [" in text
    assert "- word: appo_s* - sft accuracy +0.250 [" in text and "- word: grpo_s* - sft accuracy +0.500 [" in text
    line = next(t for t in text.splitlines() if t.startswith("- word: grpo_s* - appo_s* accuracy"))
    assert line.startswith("- word: grpo_s* - appo_s* accuracy +0.250 [") and "(paired, 40 problems)" in line
    demo.stage_report(tmp_path, ("sft", "appo_s0", "grpo_s0", "grpo_s1"))
    text = (tmp_path / "report.md").read_text()
    assert "grpo_s* (mean of grpo_s0, grpo_s1)" in text and "appo_s*" not in text


def test_eval_stage_runs_the_gsm8k_rows_from_the_given_offset(demo, tmp_path, monkeypatch):
    """``--gsm8k-from F --gsm8k N`` evaluates GSM8K test rows F..F+N-1 in chunks (so a second process can take a
    later range beside a first one); the engine is replaced by a recorder, the selection is what is tested."""
    seen = []
    monkeypatch.setattr(demo, "load_engine", lambda model, batch: (None, None))

    def fake_chunk(engine, tok, examples, start, max_tokens, check_ids, tools):
        seen.append([ex.id for ex in examples])
        return [{"id": ex.id, "acc": 0.0, "tool_calls": 0} for ex in examples], 0, []

    monkeypatch.setattr(demo, "eval_chunk", fake_chunk)
    demo.stage_eval(tmp_path, ["m=some/path"], 5, 0, 8, 2, ("gsm8k",), 0, gsm8k_from=3)
    assert seen == [["gsm8k/3", "gsm8k/4"], ["gsm8k/5", "gsm8k/6"], ["gsm8k/7"]]
    rows = json.loads((tmp_path / "eval_m_gsm8k.json").read_text())["rows"]
    assert [r["id"] for r in rows] == [f"gsm8k/{i}" for i in range(3, 8)]
