"""The study's statistics on hand-made runs: the paired bootstrap and the results table."""

from __future__ import annotations

import json
import math

import pytest

from appo.study.analysis import (
    RunResult,
    differences,
    equal_token_differences,
    final_scores,
    format_rows,
    load_run,
    paired_bootstrap,
    scores_at_tokens,
    seeds_needed,
    t975,
    table,
)
from appo.study.runner import TASK_OVERRIDES, StudySettings, plan, smoke_settings, start_model_sft_config


def _run(variant: str, seed: int, correct: dict[str, float], start: float = 0.2) -> RunResult:
    acc = sum(correct.values()) / len(correct)
    return RunResult(task="arith", variant=variant, group="main", seed=seed, curve={0: start, 10: acc},
                     final_correct=correct, tool_calls=1.0, wall_s=120.0)


def test_bootstrap_pairs_problems_within_each_seed():
    # Each seed has its own held-out ids (as when data.seed varies); nothing is shared across seeds.
    # seed 0: a right on p0,p1,p2,p3, b right on p0 only -> per-problem diffs 0,1,1,1 -> mean 0.75
    # seed 1: a right on q0,q1, b right on q0,q1,q2,q3 -> diffs 0,0,-1,-1 -> mean -0.5
    # point estimate = mean over seeds = (0.75 - 0.5) / 2 = 0.125
    a = [_run("appo", 0, {"p0": 1, "p1": 1, "p2": 1, "p3": 1}), _run("appo", 1, {"q0": 1, "q1": 1, "q2": 0, "q3": 0})]
    b = [_run("grpo", 0, {"p0": 1, "p1": 0, "p2": 0, "p3": 0}), _run("grpo", 1, {"q0": 1, "q1": 1, "q2": 1, "q3": 1})]
    diff, lo, hi = paired_bootstrap(a, b, n=4000)
    assert diff == pytest.approx(0.125)
    # The extremes: both draws on seed 1 with all -1 problems -> -1; both on seed 0 with all +1 -> +1.
    assert -1.0 <= lo < diff < hi <= 1.0
    assert lo < 0 < hi  # two seeds that disagree: the interval spans zero


def test_bootstrap_of_a_clear_win_excludes_zero():
    # 3 seeds, 40 problems each, a right on 30, b right on 10 of the same 40: diff 0.5 everywhere.
    a, b = [], []
    for s in range(3):
        ids = [f"s{s}/{i}" for i in range(40)]
        a.append(_run("appo", s, {k: float(i < 30) for i, k in enumerate(ids)}))
        b.append(_run("grpo", s, {k: float(i < 10) for i, k in enumerate(ids)}))
    diff, lo, hi = paired_bootstrap(a, b, n=2000)
    assert diff == pytest.approx(0.5)
    assert 0.3 < lo < 0.5 < hi < 0.7


def test_bootstrap_without_shared_seeds_or_problems_is_nan():
    a = [_run("appo", 0, {"p0": 1})]
    assert all(math.isnan(x) for x in paired_bootstrap(a, [_run("grpo", 1, {"p0": 1})]))
    assert all(math.isnan(x) for x in paired_bootstrap(a, [_run("grpo", 0, {"x": 1})]))


def test_table_rows_and_markdown():
    a = [_run("appo", s, {f"{s}/{i}": float(i < 3) for i in range(4)}, start=0.25) for s in range(2)]
    g = [_run("grpo", s, {f"{s}/{i}": float(i < 1) for i in range(4)}, start=0.25) for s in range(2)]
    rows = {r["variant"]: r for r in table(a + g, "arith", "main")}
    assert rows["appo"]["final_mean"] == pytest.approx(0.75) and rows["appo"]["final_std"] == 0.0
    assert rows["grpo"]["final_mean"] == pytest.approx(0.25) and rows["grpo"]["seeds"] == 2
    assert rows["grpo"]["appo_minus"] == pytest.approx(0.5) and math.isnan(rows["appo"]["appo_minus"])
    assert rows["grpo"]["start"] == pytest.approx(0.25) and rows["grpo"]["minutes"] == pytest.approx(2.0)
    md = format_rows(list(rows.values()))
    assert "| grpo | 2 | 25.0 | 25.0 ± 0.0 | 50.0 [" in md


# --------------------------------------------------------------------------- protocol (issue 13)


def test_final_score_averages_the_last_evaluations_per_problem():
    by_step = {0: {"a": 0.0, "b": 0.0}, 10: {"a": 1.0, "b": 0.0}, 20: {"a": 0.5, "b": 1.0}, 30: {"a": 0.0, "b": 1.0}}
    assert final_scores(by_step, 2) == {"a": 0.25, "b": 1.0}
    assert final_scores(by_step, 9) == pytest.approx({"a": 0.5, "b": 2 / 3})  # step 0 never counts
    assert final_scores({0: {"a": 1.0}}, 3) == {"a": 1.0}  # nothing after step 0: the start


def test_scores_at_tokens_interpolates_between_evaluations():
    r = RunResult("arith", "grpo", "main", 0, curve={0: 0.0, 10: 0.5, 20: 1.0},
                  by_step={0: {"a": 0.0}, 10: {"a": 0.5}, 20: {"a": 1.0}},
                  tokens={0: 0.0, 5: 500.0, 10: 1000.0, 15: 1500.0, 20: 3000.0})
    assert scores_at_tokens(r, 500.0) == {"a": 0.25}
    assert scores_at_tokens(r, 2000.0) == {"a": pytest.approx(0.75)}  # 1000 of the 2000 tokens from 10 to 20
    assert scores_at_tokens(r, 9999.0) == {"a": 1.0}
    # APPO trained on half the tokens: at equal tokens the baseline is read half-way
    appo = RunResult("arith", "appo", "main", 0, curve={0: 0.0, 20: 0.5}, by_step={0: {"a": 0.0}, 20: {"a": 0.5}},
                     tokens={0: 0.0, 20: 1000.0})
    d = equal_token_differences([appo], [r])
    assert d == {0: [pytest.approx(0.0)]}  # both at 0.5 after 1000 tokens
    assert differences([appo], [r], lambda x: x.by_step[20]) == {0: [-0.5]}  # equal budget: APPO 0.5 vs 1.0


def test_seeds_needed_by_hand():
    # per-seed means 0.00, 0.06 -> sd = 0.0424; n = 2: t(1) * sd / sqrt(2) = 0.381 > 0.03 ...
    # the smallest n with t975(n-1) * 0.0424 / sqrt(n) <= 0.03 is n = 10 (2.262 * 0.0424 / 3.162 = 0.0303 > 0.03),
    # n = 11: 2.228 * 0.0424 / 3.317 = 0.0285
    assert seeds_needed({0: [0.0, 0.0], 1: [0.06, 0.06]}) == 11
    assert seeds_needed({0: [0.1], 1: [0.1], 2: [0.1]}) == 2  # no spread: two seeds suffice
    assert math.isnan(seeds_needed({0: [0.1]}))
    assert t975(1) == 12.706 and t975(30) == 2.042 and abs(t975(120) - 1.980) < 0.002


def _write_run(run_dir, val, greedy, tokens):
    (run_dir / "val").mkdir(parents=True)
    for step, per_id in val.items():
        rows = [{"id": i, "metrics": {"acc": a}} for i, samples in per_id.items() for a in samples]
        (run_dir / "val" / f"step_{step:06d}.json").write_text(json.dumps({"summary": {}, "rows": rows}))
    for step, per_id in greedy.items():
        rows = [{"id": i, "metrics": {"acc": a}} for i, a in per_id.items()]
        (run_dir / "val" / f"greedy_step_{step:06d}.json").write_text(json.dumps({"summary": {}, "rows": rows}))
    lines = [{"step": s, "batch/loss_tokens": t, "rollout/tool_calls_per_rollout": 1.0, "timing_s/step": 6.0}
             for s, t in tokens.items()]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_load_run_reads_samples_greedy_and_tokens(tmp_path):
    settings = StudySettings(tasks=("arith",), seeds=(0,), steps=2, test_freq=1, final_evals=2, ablations=False,
                             variants=("grpo",))
    (spec,) = plan(settings, tmp_path)
    val = {0: {"p": [0, 0], "q": [0, 1]}, 1: {"p": [1, 0], "q": [1, 1]}, 2: {"p": [1, 1], "q": [0, 0]}}
    _write_run(spec.run_dir, val=val,
               greedy={0: {"p": 0, "q": 0}, 1: {"p": 1, "q": 1}, 2: {"p": 1, "q": 0}}, tokens={1: 100, 2: 50})
    r = load_run(spec, final_evals=2)
    assert r.curve == {0: 0.25, 1: 0.75, 2: 0.5}
    assert r.final_correct == {"p": 0.75, "q": 0.5} and r.final == pytest.approx(0.625)
    assert r.final_greedy == {"p": 1.0, "q": 0.5} and r.greedy_curve[1] == 1.0
    assert r.tokens == {0: 0.0, 1: 100.0, 2: 150.0} and r.total_tokens == 150.0
    assert r.tool_calls == 1.0 and r.wall_s == 12.0


def test_plan_is_seed_major_and_validates_as_the_protocol_says(tmp_path):
    settings = StudySettings(tasks=("arith", "chain"), seeds=(0, 1), ablations=True,
                             variants=("grpo", "appo", "appo/M=on"),
                             val_examples=256, val_samples=4)
    runs = plan(settings, tmp_path)
    assert [(r.seed, r.task, r.variant.name) for r in runs[:4]] == [
        (0, "arith", "grpo"), (0, "arith", "appo"), (0, "arith", "appo/M=on"), (0, "chain", "grpo")]
    assert len(runs) == 2 * (3 + 2)  # ablations on the first task only
    o = runs[0].overrides
    for want in ("data.val_max_samples=256", "rollout.val_kwargs.n=4", "rollout.val_kwargs.temperature=1.0",
                 "trainer.val_greedy=true", "data.seed=0"):
        assert want in o, want
    chain = next(r for r in runs if r.task == "chain")
    assert set(TASK_OVERRIDES["chain"]) <= set(chain.overrides)
    with pytest.raises(ValueError, match="unknown study variant"):
        StudySettings(variants=("ppo",))
    with pytest.raises(ValueError, match="unknown study task"):
        StudySettings(tasks=("sudoku",))


def test_cli_rejects_bad_seeds_in_one_line(capsys):
    from appo.cli import main

    assert main(["study", "--seeds", "a-b", "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--seeds" in err


def test_report_only_writes_tables_from_finished_runs_and_trains_nothing(tmp_path, capsys):
    from appo.cli import main

    settings = StudySettings(tasks=("arith",), seeds=(0, 1), steps=2, test_freq=1, final_evals=2, ablations=False,
                             variants=("grpo", "appo"))
    val = {0: {"p": [0, 0], "q": [0, 1]}, 1: {"p": [1, 0], "q": [1, 1]}, 2: {"p": [1, 1], "q": [0, 0]}}
    specs = plan(settings, tmp_path)
    for spec in specs[:3]:  # grpo and appo at seed 0, grpo at seed 1; appo seed 1 never ran
        _write_run(spec.run_dir, val=val, greedy={k: {"p": 1, "q": 0} for k in val}, tokens={1: 100, 2: 50})
    doc = tmp_path / "r.md"
    assert main(["study", "--report-only", "--out", str(tmp_path), "--tasks", "arith", "--seeds", "0,1",
                 "--variants", "grpo,appo", "--steps", "2", "--test-freq", "1", "--final-evals", "2",
                 "--no-ablations", "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "| grpo | 2 |" in text and "| appo | 1 |" in text
    assert "Reproduce:" not in text and "from the runs already finished" in text
    assert not (specs[3].run_dir / "metrics.jsonl").exists()  # nothing was trained
    assert main(["study", "--report-only", "--out", str(tmp_path / "none")]) == 2
    assert "--out" in capsys.readouterr().err


def test_depth_tasks_each_sft_their_own_start_model_and_run_the_point_arms(tmp_path):
    from appo.study.runner import TASKS, start_model_dir

    names = ("depth_early", "depth_middle", "depth_late")
    assert [TASKS[n] for n in names] == [f"proc:depth?steps=5&depth=[{d}]" for d in (1, 3, 5)]
    assert [start_model_dir(n, tmp_path) for n in names] == [tmp_path / n for n in names]
    settings = StudySettings(tasks=("depth_middle",), seeds=(0,), variants=(
        "grpo", "appo", "appo/points=oracle", "appo/points=entropy", "appo/points=random"))
    runs = plan(settings, tmp_path)
    assert sorted(r.variant.name for r in runs) == sorted(settings.variants)
    assert "algorithm.appo.points=oracle" in next(r for r in runs if r.variant.name.endswith("oracle")).overrides
    assert set(TASK_OVERRIDES["depth_middle"]) <= set(runs[0].overrides)


def test_precision_columns_only_for_tasks_with_a_decisive_token():
    from appo.study.analysis import RunResult

    def run(variant, seed, prec):
        return RunResult("depth_middle", variant, "main", seed, curve={0: 0.5, 10: 0.6}, final_correct={"a": 0.6},
                         oracle_precision=prec, decisive_rate=prec / 2)

    rows = table([run("appo", 0, 0.25), run("grpo", 0, float("nan"))], "depth_middle")
    md = format_rows(rows).splitlines()
    assert md[0].endswith("points at the oracle's % | points at the decisive token % |")
    assert md[1].count("---") == md[0].count("|") - 1
    assert md[2].startswith("| grpo") and md[2].endswith("| – | – |") and md[3].endswith("| 25.0 | 12.5 |")
    plain = format_rows(table([run("appo", 0, float("nan"))], "depth_middle")).splitlines()
    assert "oracle" not in plain[0] and plain[1].count("---") == 12


def test_point_arms_run_on_every_depth_task_and_other_ablations_on_the_first_only(tmp_path):
    settings = StudySettings(tasks=("arith", "depth_middle", "depth_late", "chain"), seeds=(0,), ablations=True)
    by_task: dict[str, list[str]] = {}
    for r in plan(settings, tmp_path):
        by_task.setdefault(r.task, []).append(r.variant.name)
    main = ["grpo", "arpo", "tree_grpo", "appo"]
    points = [v for v in by_task["arith"] if v.startswith("appo/points=") or v == "appo/fork=redraw"]
    assert len(points) == 10 and "appo/M=on" in by_task["arith"]  # the first task: every ablation
    assert {"appo/points=oracle,fork=redraw", "appo/fork=redraw"} <= set(points)  # the re-draw arms (issue 24)
    for depth in ("depth_middle", "depth_late"):  # later depth tasks: the point arms too, no other ablation
        assert by_task[depth] == main + points
    assert by_task["chain"] == main  # a later task without a decisive token: no ablation
    chosen = StudySettings(tasks=("depth_middle", "depth_late"), seeds=(0,),
                           variants=("grpo", "appo", "appo/points=oracle"))
    assert [(r.task, r.variant.name) for r in plan(chosen, tmp_path)] == [
        (t, v) for t in chosen.tasks for v in chosen.variants]
    off = StudySettings(tasks=("depth_middle", "depth_late"), seeds=(0,), ablations=False)
    assert {r.variant.name for r in plan(off, tmp_path)} == set(main)


def test_smoke_sft_size_wins_over_a_tasks_own(tmp_path):
    # depth_middle's own SFT stages are 1600 x 2, then 400 x 10; the smoke run's 32 x 1 must win, and a normal
    # study keeps the task's sizes
    settings = StudySettings(tasks=("depth_middle", "arith"), seeds=(0, 1), steps=60)
    smoke = smoke_settings(settings, ("actor.optim.lr=1e-4",))
    assert (smoke.tasks, smoke.seeds, smoke.steps, smoke.ablations) == (("depth_middle",), (0,), 2, False)
    cfg = start_model_sft_config("depth_middle", tmp_path / "base", tmp_path, smoke)
    assert (cfg.sft.num_examples, cfg.sft.epochs) == (32, 1)
    assert cfg.actor.optim.lr == 1e-4  # the command line's overrides come last
    assert (start_model_sft_config("depth_middle", tmp_path / "b", tmp_path, smoke, 1).sft.num_examples,) == (32,)
    full = start_model_sft_config("depth_middle", tmp_path / "base", tmp_path, settings)
    assert (full.sft.num_examples, full.sft.epochs, full.sft.lr) == (1600, 2, 3e-3)
    assert "proc:depth?steps=5&depth=[3]" in full.data.train_files
    assert full.trainer.default_local_dir == str(tmp_path / "sft_stage1")
    second = start_model_sft_config("depth_middle", tmp_path / "sft_stage1" / "sft_model", tmp_path, settings, 1)
    assert (second.sft.num_examples, second.sft.epochs, second.sft.lr) == (400, 10, 1e-3)
    assert second.trainer.default_local_dir == str(tmp_path / "sft") and "sft_stage1" in second.model.path
    arith = start_model_sft_config("arith", tmp_path / "base", tmp_path, settings)
    assert (arith.sft.num_examples, arith.sft.epochs) == (settings.sft_examples, settings.sft_epochs)


def test_contrasts_pair_oracle_with_grpo_and_the_score_arms_with_the_oracle():
    from appo.study.analysis import contrast_rows, format_contrasts

    def run(variant, seed, correct):
        return RunResult("depth_middle", variant, "main", seed, curve={0: 0.5, 10: 0.6}, final_correct=correct,
                         oracle_precision=0.5)

    results = [run("grpo", s, {"p": 0.0, "q": 0.5}) for s in (0, 1)]
    results += [run("appo/points=oracle", s, {"p": 1.0, "q": 0.5}) for s in (0, 1)]
    results += [run("appo", 0, {"p": 0.0, "q": 0.0})]  # one seed only
    rows = {(r["a"], r["b"]): r for r in contrast_rows(results, "depth_middle")}
    assert set(rows) == {("appo/points=oracle", "grpo"), ("appo", "grpo"), ("appo", "appo/points=oracle")}
    o = rows[("appo/points=oracle", "grpo")]
    assert (o["seeds"], o["diff"]) == (2, pytest.approx(0.5)) and o["lo"] <= 0.5 <= o["hi"]
    assert o["width"] == pytest.approx(o["hi"] - o["lo"])
    b = rows[("appo", "appo/points=oracle")]
    assert (b["seeds"], b["diff"]) == (1, pytest.approx(-0.75))
    md = format_contrasts(list(rows.values())).splitlines()
    assert md[0].startswith("| a − b |") and md[2].startswith("| appo/points=oracle − grpo | 2 | 50.0 [")
    assert contrast_rows(results, "chain") == []


def test_variant_names_with_commas_survive_the_command_line(tmp_path):
    """``--variants`` is comma-separated and some names hold commas; before split_variants the re-draw arms and
    ``appo/points=oracle,train_branches=on`` could not be named there at all."""
    from appo.cli import main
    from appo.study.runner import split_variants

    assert split_variants("grpo,appo/points=oracle,fork=redraw,appo/fork=redraw") == (
        "grpo", "appo/points=oracle,fork=redraw", "appo/fork=redraw")
    assert split_variants("appo/points=oracle,train_branches=on,appo") == (
        "appo/points=oracle,train_branches=on", "appo")
    assert split_variants("grpo,bogus,") == ("grpo", "bogus") and split_variants("") == ()
    settings = StudySettings(tasks=("depth_middle",), seeds=(0,), steps=2, test_freq=1, final_evals=2,
                             variants=("grpo", "appo/points=oracle,fork=redraw"))
    for spec in plan(settings, tmp_path):
        _write_run(spec.run_dir, val={0: {"p": [0, 1]}, 1: {"p": [1, 1]}, 2: {"p": [1, 0]}}, greedy={}, tokens={1: 10})
    doc = tmp_path / "r.md"
    assert main(["study", "--report-only", "--out", str(tmp_path), "--tasks", "depth_middle", "--seeds", "0",
                 "--variants", "grpo,appo/points=oracle,fork=redraw", "--steps", "2", "--test-freq", "1",
                 "--final-evals", "2", "--no-greedy", "--doc", str(doc)]) == 0
    ran = {(r["variant"], r["seed"]) for r in json.loads((tmp_path / "r" / "summary.json").read_text())}
    assert ran == {("grpo", 0), ("appo/points=oracle,fork=redraw", 0)}


def test_redraw_point_arms_set_the_fork_and_are_contrasted_with_grpo_and_the_after_arms(tmp_path):
    from appo.config import load_config
    from appo.presets import shipped_config_path
    from appo.study.analysis import contrast_rows

    settings = StudySettings(tasks=("depth_middle",), seeds=(0,), variants=(
        "appo/fork=redraw", "appo/points=oracle,fork=redraw", "appo/points=random,fork=redraw"))
    points = {"appo/fork=redraw": "score", "appo/points=oracle,fork=redraw": "oracle",
              "appo/points=random,fork=redraw": "random"}
    for spec in plan(settings, tmp_path):
        cfg = load_config(shipped_config_path("study"), list(spec.overrides))
        assert (cfg.algorithm.appo.fork, cfg.algorithm.appo.points) == ("redraw", points[spec.variant.name])

    def run(variant, seed, correct):
        return RunResult("depth_middle", variant, "ablation", seed, curve={0: 0.5, 8: 0.6}, final_correct=correct,
                         oracle_precision=0.5)

    results = [run(v, s, {"p": x, "q": 0.5}) for s in (0, 1) for v, x in (
        ("grpo", 0.0), ("appo", 0.5), ("appo/points=oracle", 0.5), ("appo/points=oracle,fork=redraw", 1.0),
        ("appo/fork=redraw", 1.0), ("appo/points=entropy,fork=redraw", 0.5),
        ("appo/points=random,fork=redraw", 0.0))]
    rows = {(r["a"], r["b"]): r["diff"] for r in contrast_rows(results, "depth_middle")}
    assert rows[("appo/points=entropy,fork=redraw", "grpo")] == pytest.approx(0.25)
    assert rows[("appo/points=random,fork=redraw", "grpo")] == pytest.approx(0.0)
    assert rows[("appo/points=oracle,fork=redraw", "grpo")] == pytest.approx(0.5)
    assert rows[("appo/points=oracle,fork=redraw", "appo/points=oracle")] == pytest.approx(0.25)
    assert rows[("appo/fork=redraw", "appo/points=oracle,fork=redraw")] == pytest.approx(0.0)
    assert rows[("appo/fork=redraw", "appo")] == pytest.approx(0.25)
