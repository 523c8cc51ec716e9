"""requirements/cpu.lock agrees with requirements/cpu.txt and with the environment it was made from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "cpu.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"cpu.lock line {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


def _lock_script():
    spec = importlib.util.spec_from_file_location("lock_cpu", ROOT / "scripts" / "lock_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_direct_requirement_is_pinned_consistently():
    pins = _lock()
    direct = _lock_script().top_level(ROOT / "requirements" / "cpu.txt")
    for req in direct:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in cpu.txt but not in cpu.lock; run make lock"
        assert req.specifier.contains(pins[name],
                                      prereleases=True), f"cpu.lock pins {name}=={pins[name]}, cpu.txt {req}"
    assert pins["torch"] == "2.13.0" and "nvidia-cudnn-cu12" not in pins  # the CPU build, no CUDA wheels


def test_lock_is_the_closure_of_this_environment():
    """The lock equals what scripts/lock_cpu.py computes here (the test environment is made by make setup):
    a stale lock, or a package added to cpu.txt without `make lock`, fails this."""
    script = _lock_script()
    roots = script.top_level(ROOT / "requirements" / "cpu.txt") + [Requirement(n) for n in script.EXTRA_TOP_LEVEL]
    assert script.closure(roots) == _lock()
