"""Isolation-level detection: the sandbox says clearly when it cannot isolate, and refuses by default."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from appo.tools import sandbox_process
from appo.tools.python_sandbox import PythonTool
from appo.tools.sandbox_config import SandboxConfig
from appo.tools.sandbox_process import detect_isolation


def _failing_probe(config, level):
    return f"simulated: unshare for {level} -> EPERM"


@pytest.fixture()
def no_namespaces(monkeypatch):
    """Pretend neither namespace level works (the real probe is swapped for one that always fails)."""
    monkeypatch.setattr(sandbox_process, "probe", _failing_probe)
    monkeypatch.setattr(sandbox_process, "_DETECTED", {})


def test_detection_without_namespaces_refuses_by_default(no_namespaces):
    level, notes = detect_isolation(SandboxConfig())
    assert level is None
    assert any(n.startswith("userns: simulated") for n in notes)
    tool = PythonTool()
    r = tool.call({"code": "print(1)"})
    assert not r.ok and r.error == "sandbox"
    assert "unavailable" in r.text and "allow_unisolated" in r.text and "simulated" in r.text
    assert tool.isolation is None
    assert tool.isolation_report().startswith("python sandbox: unavailable")


def test_detection_without_namespaces_can_be_allowed_and_warns(no_namespaces, caplog):
    with caplog.at_level(logging.WARNING, logger="appo.tools.sandbox_process"):
        tool = PythonTool(allow_unisolated=True, timeout_s=5)
        assert tool.isolation == "rlimits"
    assert "WITHOUT network or filesystem isolation" in caplog.text
    assert "NO network or filesystem isolation" in tool.isolation_report()
    r = tool.call({"code": "x = 6 * 7\nx"})
    assert r.ok and r.text == "42"


def test_detection_prefers_the_strongest_working_level(monkeypatch):
    monkeypatch.setattr(sandbox_process, "_DETECTED", {})
    tried = []

    def probe(config, level):
        tried.append(level)
        return None if level == "userns" else "no"

    level, notes = detect_isolation(SandboxConfig(), probe_fn=probe)
    assert level == "userns"
    assert tried == (["namespaces", "userns"] if os.geteuid() == 0 else ["userns"])
    assert detect_isolation(SandboxConfig(), probe_fn=probe)[0] == "userns" and len(tried) == len(set(tried))


def test_forced_level_is_not_silently_downgraded(monkeypatch):
    monkeypatch.setattr(sandbox_process, "_DETECTED", {})
    level, notes = detect_isolation(SandboxConfig(isolation="namespaces"), probe_fn=_failing_probe)
    assert level is None and notes == ["namespaces: simulated: unshare for namespaces -> EPERM"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_real_machine_without_namespaces_is_detected():
    """Run the detection inside a user namespace that may create no further user namespaces and whose
    uid map has only root: neither level can be built, which the tool must detect and say."""
    script = textwrap.dedent(
        """
        from appo.tools.python_sandbox import PythonTool
        t = PythonTool(timeout_s=5)
        print("LEVEL", t.isolation)
        r = t.call({"code": "print(6 * 7)"})
        print("RESULT", r.ok, r.error)
        """
    )
    setup = "echo 0 > /proc/sys/user/max_user_namespaces"
    probe = subprocess.run(["unshare", "-Ur", "sh", "-c", setup], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot build the restricted environment: {probe.stderr.decode()[:200]}")
    out = subprocess.run(
        ["unshare", "-Ur", "sh", "-c", f'{setup} && exec "$0" -c "$1"', sys.executable, script],
        capture_output=True, text=True, timeout=60,
    )
    assert "LEVEL None" in out.stdout, out.stdout + out.stderr
    assert "RESULT False sandbox" in out.stdout


def test_uid_leases_are_exclusive_across_processes(tmp_path):
    """Two trainer processes on one machine must never run calls under the same uid."""
    lock_dir = tmp_path / "locks"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from appo.tools.sandbox_process import UidPool
            pool = UidPool(5000, 3, lock_dir={str(lock_dir)!r})
            print(pool.lease(1), pool.lease(1), flush=True)
            time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        held = {int(x) for x in holder.stdout.readline().split()}
        assert held == {5000, 5001}
        lock_dir.chmod(0o700)
        pool = sandbox_process.UidPool(5000, 3, lock_dir=str(lock_dir))
        assert pool.lease(0.2) == 5002
        assert pool.lease(0.2) is None  # the other two are held by the other process
    finally:
        holder.kill()
        holder.wait()
    assert pool.lease(1.0) in (5000, 5001)  # its locks died with it
