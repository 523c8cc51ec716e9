"""The RL-step figure against TRL runs both sides at equal settings and records them (issue 26).

TRL's ``GRPOConfig`` turns gradient checkpointing on by default; the figure passes one setting to both
sides (off unless asked) and records what each side actually ran with, read back from TRL's ``args`` and
from our model, in the figure's details and name.
"""

from __future__ import annotations

import pytest

from appo.cli import main


@pytest.mark.parametrize("ckpt", [pytest.param(False, marks=pytest.mark.slow), True])
def test_rl_step_runs_both_sides_with_the_same_checkpointing(ckpt):
    pytest.importorskip("trl")
    import torch

    from appo.perf.rl_step import rl_step_figures

    threads = torch.get_num_threads()
    try:
        figs = rl_step_figures("tiny", 1, prompts=1, rows=2, max_response=4, micro_rows=2, repeats=1, shape="trl",
                               gradient_checkpointing=ckpt)
    finally:
        torch.set_num_threads(threads)
    word = "on" if ckpt else "off"
    assert [f["details"]["gradient_checkpointing"] for f in figs] == [{"ours": ckpt, "trl": ckpt}] * 2
    assert all(f["name"].endswith(f"grad ckpt {word}") for f in figs), [f["name"] for f in figs]
    for f in figs:  # the per-repeat ratios behind the median (issue 26: quoted with their spread)
        r = f["details"]["ratios_ours_over_trl"]
        assert len(r) == f["repeats"] and abs(f["details"]["ratio_ours_over_trl_median"] - sorted(r)[0]) < 1e-3


def test_trl_side_passes_checkpointing_explicitly():
    """TRL's own default is on; ``build_grpo_trainer`` must not inherit it."""
    pytest.importorskip("trl")
    import inspect

    from appo.perf.trl_side import build_grpo_trainer

    assert inspect.signature(build_grpo_trainer).parameters["gradient_checkpointing"].default is False


def test_bench_rejects_a_bad_checkpointing_value(tmp_path, capsys):
    assert main(["bench", "--gradient-checkpointing", "maybe", "--json", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "--gradient-checkpointing" in err and "off, on or off,on" in err
    assert not (tmp_path / "b.json").exists()
