"""Usage and input mistakes end in one line naming the input and the fix, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys

import pytest
from cli_helpers import ROOT, assert_input_error, run_cli, run_main

from appo.cli import spec_list


def test_missing_config_names_the_shipped_configs_and_the_list_command(tmp_path):
    res = run_cli("train", "-c", "no_such_config", cwd=tmp_path, timeout=120)
    line = assert_input_error(res.returncode, res.stderr, "train", "'no_such_config' not found", "demo, paper_7b",
                              "appo list configs")
    assert "()" not in line


@pytest.mark.parametrize("override, expected", [
    ("trainer.n_gpus_per_node=8", "torchrun --nproc_per_node"),  # verl's key: explained, not 'trainer.seed'
    ("trainer.sed=1", "did you mean 'trainer.seed'"),
    ("actor.optim.lrr=1e-5", "did you mean 'actor.optim.lr'"),
    ("lr=1e-5", "did you mean 'actor.optim.lr'"),
    ("trainer.foo=1", "valid keys here: project_name"),
    ("data.train_file=proc:arith", "did you mean 'data.train_files'"),
])
def test_unknown_keys_get_a_suggestion_that_fits(override, expected, capsys):
    code, _, err = run_main(["train", "-c", "demo", override], capsys)
    line = assert_input_error(code, err, "train", override.split("=")[0], expected)
    assert "trainer.seed" not in line or "sed" in override


@pytest.mark.parametrize("override, expected", [
    ("sft.num_examples=0", "sft.num_examples=0 must be >= 1"),
    ("sft.epochs=0", "sft.epochs=0 must be >= 1"),
    ("data.train_max_samples=0", "data.train_max_samples=0 must be >= 1, or -1"),
    ("data.val_max_samples=-2", "data.val_max_samples=-2 must be >= 1, or -1"),
    ("rollout.worker_timeout_s=-1", "rollout.worker_timeout_s=-1.0 must be >= 0"),
])
def test_values_that_silently_meant_something_else_are_refused(override, expected, capsys):
    for command in ("train", "sft"):
        code, _, err = run_main([command, "-c", "demo", override], capsys)
        assert_input_error(code, err, command, expected)


@pytest.mark.parametrize("args, expected", [
    (["--benchmarks", ""], "empty list"),
    (["--benchmarks", " , "], "empty list"),
    (["--benchmarks", "gsm8k", "--limit", "0"], "--limit: 0 must be >= 1"),
    (["--benchmarks", "gsm8k", "--limit", "-1"], "--limit: -1 must be >= 1"),
    (["--benchmarks", "gsm8k", "--limit", "ten"], "'ten' is not an integer"),
    (["--benchmarks", "proc:arith?digits=[1,2"], "unclosed '['"),
])
def test_eval_arguments_are_checked_before_anything_runs(args, expected, capsys):
    code, _, err = run_main(["eval", "--model", "nowhere", *args], capsys)
    assert_input_error(code, err, "eval", expected, "appo eval --help")


def test_benchmarks_split_only_outside_brackets_and_quotes(capsys):
    spec = "proc:arith?n_operands=[2,2]&digits=[1,2]&direct_p=0.5"
    assert spec_list(f"gsm8k,{spec}, math500") == ["gsm8k", spec, "math500"]
    assert spec_list("proc:multihop?hops={a: 1, b: 2},'x,y'") == ["proc:multihop?hops={a: 1, b: 2}", "'x,y'"]
    with pytest.raises(argparse.ArgumentTypeError):
        spec_list("a]")
    code, out, _ = run_main(["eval", "--model", "m", "--benchmarks", f"{spec},gsm8k", "--print-config"], capsys)
    assert code == 0 and f"- {spec}" in out and "- gsm8k" in out


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.jsonl").write_text("")
    (tmp_path / "notes").mkdir()
    res = run_cli("report", tmp_path, cwd=tmp_path, timeout=120)
    assert_input_error(res.returncode, res.stderr, "report", str(tmp_path), "not a training run",
                       str(tmp_path / "train"))
    assert not (tmp_path / "report").exists()  # nothing written into the folder


def test_report_hint_names_a_folder_the_demo_writes(tmp_path, capsys):
    code, _, err = run_main(["report", tmp_path / "missing"], capsys)
    assert_input_error(code, err, "report", "does not exist", "runs/demo/train")


def test_list_version_and_defaults_in_help(capsys):
    code, out, _ = run_main(["list", "configs"], capsys)
    assert code == 0 and "demo" in out and "paper_7b" in out
    code, out, _ = run_main(["list", "benchmarks"], capsys)
    assert code == 0 and "gsm8k" in out and "proc:arith" in out
    code, out, _ = run_main(["list", "algorithms"], capsys)
    assert code == 0 and all(a in out for a in ("appo", "grpo", "arpo", "tree_grpo", "ppo_clip"))
    code, out, _ = run_main(["list", "rewards"], capsys)
    assert code == 0 and "default" in out and "file.py:function" in out
    code, out, _ = run_main(["list", "tools"], capsys)
    assert code == 0 and "python" in out and "search" in out
    code, _, err = run_main(["list", "models"], capsys)
    assert_input_error(code, err, "list", "invalid choice: 'models'", "benchmarks")
    res = run_cli("--version", timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("appo ")
    for command, default in (("eval", "(default: 1024)"), ("analyze", "(default: 256)"), ("study", "(default: 60)"),
                             ("bench", "(default: 3)"), ("demo", "(default: runs/demo)")):
        code, out, _ = run_main([command, "--help"], capsys)
        assert code == 0 and default in " ".join(out.split()), (command, out)
    code, out, _ = run_main(["eval", "--help"], capsys)
    assert "(default: 0.0)" in out and "(default: auto)" in out  # falsy and help-less defaults shown too


def test_print_config_prints_the_resolved_config_and_runs_nothing(tmp_path, capsys):
    import yaml

    code, out, _ = run_main(["train", "-c", "demo", "actor.optim.lr=3e-4",
                             f"trainer.default_local_dir={tmp_path / 'r'}", "--print-config"], capsys)
    cfg = yaml.safe_load(out)
    assert code == 0 and cfg["actor"]["optim"]["lr"] == 3e-4 and cfg["algorithm"]["adv_estimator"] == "appo"
    assert not (tmp_path / "r").exists()
    code, out, _ = run_main(["sft", "-c", "demo", "--print-config"], capsys)
    assert code == 0 and yaml.safe_load(out)["sft"]["num_examples"] == 4000


def test_output_folder_that_cannot_be_written_names_the_path(tmp_path, capsys, monkeypatch):
    import appo.demo

    def read_only(out, cfg=None, settings=None):
        raise OSError(errno.EROFS, "Read-only file system", str(out))

    monkeypatch.setattr(appo.demo, "build_tiny_base", read_only)
    code, _, err = run_main(["build-tiny", tmp_path / "ro"], capsys)
    assert_input_error(code, err, "build-tiny", str(tmp_path / "ro"), "Read-only file system", "folder you can write")

    def full(out, cfg=None, settings=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(appo.demo, "build_tiny_base", full)
    code, _, err = run_main(["build-tiny", tmp_path / "full"], capsys)
    assert_input_error(code, err, "build-tiny", str(tmp_path / "full"), "No space left", "free disk space")


def test_unwritable_output_as_a_subprocess():
    res = run_cli("build-tiny", "/sys/appo_cannot_write_here", timeout=120)
    assert_input_error(res.returncode, res.stderr, "build-tiny", "/sys/appo_cannot_write_here", "choose a folder")


def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly(tmp_path):
    """`appo list configs | head -1`: the reader is gone before we write. The command ends with 141 (128 +
    SIGPIPE) and nothing on stderr; before the fix it printed a BrokenPipeError traceback (and exited 1)."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader went away before the command printed anything
    try:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        env.pop("APPO_TRACEBACK", None)
        res = subprocess.run([sys.executable, "-m", "appo", "list", "configs"], cwd=tmp_path, env=env,
                             stdout=write_fd, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_fd)
    assert res.stderr == ""
    assert res.returncode == 141


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(monkeypatch, capsys):
    """Only a closed stdout is quiet: a BrokenPipeError from a socket (a server that went away mid-request)
    must not turn into a silent exit 141: it keeps the one-line error it had before."""
    import appo.cli.parser as parser

    def cmd_list(args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(parser, "cmd_list", cmd_list)
    code, _, err = run_main(["list", "configs"], capsys)
    assert code not in (0, 141)
    assert err.startswith("appo list: error:") and "Broken pipe" in err
