"""Running the ``appo`` command in tests: in-process (``appo.cli.main``, fast) and as a subprocess (what a
user runs), and the assertion every input-error test makes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appo.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``appo.cli.main(argv)`` in this process: (exit code, stdout, stderr); argparse's exits included."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*args, cwd: Path | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``python -m appo ARGS`` in a subprocess with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    env.pop("APPO_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "appo", *map(str, args)], cwd=cwd or ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, **kw)


def assert_input_error(code: int, err: str, command: str, *needles: str, exit_code: int = 2) -> str:
    """Exit code 2, no traceback, exactly one ``appo <command>: error:`` line holding every needle (the
    input and the fix). Returns that line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"appo {command}: error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert code == exit_code, (code, err)
    return lines[0]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny test Llama (2 layers, 32 wide) with an arithmetic tokenizer, built once per session."""
    from appo.data.procedural import get_task
    from appo.models.demo_model import build_demo_base
    from appo.prompts import SHORT

    path = tmp_path_factory.mktemp("tiny") / "base"
    build_demo_base(path, [get_task("arith")], SHORT, hidden_size=32, num_layers=2, num_heads=2)
    return path


def tiny_train_args(model: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides that train ``model`` in seconds: 2 prompts x 4 rows, short responses, no tools, one thread."""
    return [f"model.path={model}", "data.train_files=[proc:arith]", "data.train_batch_size=2",
            "data.max_response_length=24", "rollout.n=4", "rollout.n_initial=2", "rollout.max_batch_size=8",
            "rollout.system_prompt=short", "actor.ppo_mini_batch_size=1", "actor.ppo_micro_batch_size_per_gpu=4",
            "actor.optim.lr=1e-2", "tools=[]", "trainer.total_training_steps=2", "trainer.save_freq=1",
            "trainer.test_freq=-1", "trainer.val_before_train=false", "trainer.num_threads=1",
            "trainer.logger=[jsonl]", f"trainer.default_local_dir={run_dir}", *extra]
