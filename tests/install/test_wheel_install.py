"""A non-editable install works without the checkout: build the wheel, install it into a fresh venv that
sees this environment's third-party packages (torch etc.) but not its appo, and train the shipped ``demo``
config there for one step. Offline: the wheel is built without build isolation, installed with --no-deps."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from appo.data.procedural import get_task
from appo.models.demo_model import build_demo_base
from appo.prompts import SHORT

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _env() -> dict:
    """This environment without PYTHONPATH (the checkout must not leak in) and without APPO_DATA_DIR."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "APPO_DATA_DIR")}
    return {**env, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv holding the built appo wheel; this environment's site-packages are on its path through a
    ``.pth`` line (a plain path: the editable appo finder there is a .pth file too, and is not run)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools builds in the source tree, and a stale build/lib there would put modules
    # that no longer exist into the wheel.
    src = tmp / "src"
    top_level = {".git", ".venv", "build", "appo.egg-info", "runs", "data", "tests", "docs", "benchmarks"}
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n == "__pycache__"
                                                        or (Path(d) == ROOT and n in top_level)])
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(src)], cwd=tmp, env=_env())
    wheels = list((tmp / "dist").glob("appo-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as whl:
        packaged = {n for n in whl.namelist() if n.startswith("appo/")}
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "appo").rglob("*")
                if p.is_file() and p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts}
    assert packaged == expected, packaged ^ expected  # every module and config, nothing else
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    py = env_dir / "bin" / "python"
    fresh_site = Path(_run([str(py), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           cwd=tmp).stdout.strip())
    # Install first: once the host site-packages are visible, pip would see their (editable) appo as installed.
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
          str(wheels[0])], cwd=tmp, env=_env())
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()] or [sysconfig.get_paths()["purelib"]]
    (fresh_site / "zz_host_site.pth").write_text("\n".join(ours) + "\n")
    return env_dir


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide Llama with an arithmetic tokenizer, built here (about a second)."""
    out = tmp_path_factory.mktemp("base")
    return build_demo_base(out, [get_task("arith")], SHORT, hidden_size=32, num_layers=2, num_heads=2)


def test_wheel_has_configs_and_no_checkout(wheel_venv, tiny_base, tmp_path):
    py = wheel_venv / "bin" / "python"
    out = _run([str(py), "-I", "-c",
                "import appo, appo.presets as c; print(appo.__file__); print(c.shipped_config_names())"],
               cwd=tmp_path).stdout.splitlines()
    assert Path(out[0]).resolve().is_relative_to(wheel_venv.resolve()), out[0]
    assert "demo" in out[1] and "study" in out[1]
    # No bundled data in a wheel (gsm8k and the recorded search cache of the default tools): one line naming
    # the fix, exit code 2.
    proc = subprocess.run([str(wheel_venv / "bin" / "appo"), "eval", "--model", str(tiny_base), "--benchmarks",
                           "gsm8k", "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=_env())
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "carries no bundled data" in proc.stderr and "APPO_DATA_DIR" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # (transformers' loading bars come before it)
    assert "Traceback" not in proc.stderr and last.startswith("appo eval: error: ") and "APPO_DATA_DIR" in last


def test_wheel_trains_demo_config_one_step(wheel_venv, tiny_base, tmp_path):
    run_dir = tmp_path / "run"
    _run([str(wheel_venv / "bin" / "appo"), "train", "-c", "demo", f"model.path={tiny_base}",
          "trainer.total_training_steps=1", "data.train_batch_size=2", "rollout.n=2", "rollout.n_initial=1",
          "data.max_response_length=24", "actor.ppo_mini_batch_size=1", "trainer.val_before_train=false",
          "trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.num_threads=1", "trainer.logger=[jsonl]",
          f"trainer.default_local_dir={run_dir}"], cwd=tmp_path, env=_env())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "step" in m][-1] == 1
