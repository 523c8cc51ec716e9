"""A plain install without the optional packages: the command names the extra to install, one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest


def _run_without(module: str, argv: list[str]) -> subprocess.CompletedProcess:
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from appo.cli import main\n"
            f"sys.exit(main({argv!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["fastapi", "uvicorn"])
def test_serve_without_its_extra(module, tmp_path):
    out = _run_without(module, ["serve", str(tmp_path)])
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"appo serve: error: appo serve needs {module}, which is not installed: pip install 'appo[serve]'"]


def test_eval_endpoint_without_openai(tmp_path):
    out = _run_without("openai", ["eval", "--endpoint", "http://127.0.0.1:9/v1", "--benchmarks", "gsm8k",
                                  "--limit", "1", "--tools", ""])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs openai" in lines[0] and "pip install 'appo[serve]'" in lines[0]


def test_the_extras_are_declared():
    from pathlib import Path

    with open(Path(__file__).parents[2] / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    names = {d.split(">")[0].split("=")[0].split("<")[0] for d in extras["serve"]}
    assert {"fastapi", "uvicorn", "openai"} <= names
    assert any(d.startswith("mcp") for d in extras["mcp"])
