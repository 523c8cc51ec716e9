"""Adversarial tests of the Python sandbox: each attack must be *contained*, which each test checks
from the outside (the secret did not leak, the file is unchanged, the server saw no connection, no
process is left, the trainer process is alive), not merely that the call returned.

Independent attacks run concurrently through ``call_batch`` (one batch per module fixture) to keep the
suite short. Only servers the tests start on 127.0.0.1 are ever contacted.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time

import pytest
from tools_helpers import (
    LoopbackTCPServer,
    LoopbackUDPServer,
    describe,
    needs_isolation,
    needs_root,
    processes_with_cmdline,
    processes_with_uid_in,
)

from appo.tools.python_sandbox import PythonTool
from appo.tools.sandbox_config import SandboxConfig
from appo.tools.sandbox_process import visible_paths

pytestmark = needs_isolation

UID_BASE, UID_COUNT = 1_991_000_000, 64
SECRET_ENV = "APPO_TEST_SECRET_TOKEN"
SECRET_VALUE = "hunter2-" + os.urandom(6).hex()
MARK = "7391.25"  # an unusual `sleep` duration that marks processes the attacks start


def make_tool(**kw) -> PythonTool:
    base = dict(timeout_s=3, memory_mb=256, total_memory_mb=512, processes=16, disk_mb=8, file_mb=2, uid_base=UID_BASE,
                uid_count=UID_COUNT, max_output_chars=2000, max_workers=12)
    base.update(kw)
    workers = base.pop("max_workers")
    return PythonTool(SandboxConfig(**base), max_workers=workers)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Plant secrets and servers on the host, run every quick attack at once, return what came back."""
    host = tmp_path_factory.mktemp("host")
    secret_file = host / "secret.txt"
    secret_file.write_text("SECRET-FILE-" + SECRET_VALUE)
    secret_file.chmod(0o644)  # world-readable on purpose: the sandbox must not even see it
    private_file = host / "private.txt"
    private_file.write_text("PRIVATE-" + SECRET_VALUE)
    private_file.chmod(0o600)
    target = host / "target.txt"
    target.write_text("original")
    target.chmod(0o666)
    host.chmod(0o777)
    escape_name = "appo-escape-" + os.urandom(4).hex()
    tcp, udp = LoopbackTCPServer(), LoopbackUDPServer()
    abstract = "\0appo-test-" + os.urandom(4).hex()
    import socket

    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(abstract)
    unix.listen(4)
    unix.setblocking(False)
    os.environ[SECRET_ENV] = SECRET_VALUE
    me, pgid = os.getpid(), os.getpgid(0)
    attacks = {
        "read_secret": f"print(open({str(secret_file)!r}).read())",
        "read_private": f"print(open({str(private_file)!r}).read())",
        "read_shadow": "print(open('/etc/shadow').read())",
        "list_host": f"import os\nprint(os.listdir({str(host)!r}))",
        "read_repo": (f"import os\nprint(sorted(os.listdir({os.getcwd()!r})))\n"
                      f"open({os.path.join(os.getcwd(), 'pyproject.toml')!r}).read()"),
        "write_outside": (
            f"import os\nfor p in [{str(target)!r}, '/usr/lib/pwned', '/etc/pwned', '/pwned']:\n"
            "    try:\n        open(p, 'w').write('pwned'); print('WROTE', p)\n"
            "    except OSError as e:\n        print(type(e).__name__, p)\n"
            f"open('/tmp/{escape_name}', 'w').write('x')\nprint('tmp ok')"
        ),
        "delete_outside": (
            "import os, shutil\n"
            f"for f in (lambda: os.remove({str(target)!r}), lambda: shutil.rmtree({str(host)!r}),\n"
            "          lambda: os.remove('/etc/hostname'), lambda: shutil.rmtree('/usr/lib')):\n"
            "    try:\n        f(); print('DELETED')\n    except OSError as e:\n        print(type(e).__name__)"
        ),
        "tcp": (
            "import socket\n"
            f"for host in ('127.0.0.1', 'localhost'):\n"
            "    try:\n"
            f"        socket.create_connection((host, {tcp.port}), timeout=1); print('CONNECTED')\n"
            "    except OSError as e:\n        print(type(e).__name__, e)"
        ),
        "udp": (
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "try:\n"
            f"    s.sendto(b'leak', ('127.0.0.1', {udp.port})); print('SENT')\n"
            "except OSError as e:\n    print(type(e).__name__, e)"
        ),
        "abstract_unix": (
            "import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"try:\n    s.connect({abstract!r}); print('CONNECTED')\n"
            "except OSError as e:\n    print(type(e).__name__, e)"
        ),
        "env": f"import os\nprint(dict(os.environ))\nprint(os.environ.get({SECRET_ENV!r}))",
        "proc_environ": (
            "import os\nout = []\n"
            f"for pid in [p for p in os.listdir('/proc') if p.isdigit()] + [{me!r}, 'self', '1']:\n"
            "    try:\n        out.append(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "    except OSError as e:\n        out.append(type(e).__name__)\n"
            f"print(out)\nprint(os.path.exists('/proc/{me}'))"
        ),
        "kill_parent": (
            "import os, signal\n"
            f"for pid in (os.getppid(), {me}, -{pgid}, -1):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL); print('sent', pid)\n"
            "    except OSError as e:\n        print(type(e).__name__, pid)\n"
            f"try:\n    os.killpg({pgid}, signal.SIGKILL)\nexcept OSError as e:\n    print(type(e).__name__)"
        ),
        "detached_child": (
            "import os, subprocess\n"
            "pid = os.fork()\n"
            "if pid == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv('/bin/sleep', ['sleep', '{MARK}'])\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            f"subprocess.Popen(['nohup', 'sleep', '{MARK}'], start_new_session=True,\n"
            "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            f"subprocess.Popen(['setsid', 'sleep', '{MARK}'])\nprint('spawned')"
        ),
        "fill_disk": (
            "import os\nn = 0\ntry:\n    for i in range(1000):\n"
            "        with open(f'f{i}', 'wb') as f:\n            f.write(b'0' * (1 << 20))\n        n += 1\n"
            "except OSError as e:\n    print(type(e).__name__, e.strerror)\nprint('files', n)"
        ),
        "big_file": "open('big', 'wb').write(b'0' * (64 << 20))",
        "shm_fill": (
            "try:\n    open('/dev/shm/x', 'wb').write(b'0' * (64 << 20))\n"
            "except OSError as e:\n    print(type(e).__name__, e.strerror)"
        ),
        "segfault": "import ctypes\nctypes.string_at(0)",
        "stdin": "import sys\nprint(repr(sys.stdin.read()))\nimport os\nprint(os.readlink('/proc/self/fd/0'))",
        "fds": "import os\nprint(sorted(int(x) for x in os.listdir('/proc/self/fd')))",
        "threads": (
            "import threading, time\nn = 0\ntry:\n    while True:\n"
            "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start(); n += 1\n"
            "except RuntimeError as e:\n    print('stopped at', n, e)"
        ),
        "recursion": "def f():\n    return f()\nf()",
        "deep_recursion": "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)",
        "chdir_escape": (
            f"import os\nfor _ in range(30):\n    os.chdir('..')\nprint(os.getcwd(), sorted(os.listdir('.')))\n"
            f"print(os.path.exists({str(host)!r}), os.path.exists('/tmp/{escape_name}'))"
        ),
        "symlink": (
            f"import os\nos.symlink({str(secret_file)!r}, 'l1')\nos.symlink('/proc/{me}/root/etc/shadow', 'l2')\n"
            "for l in ('l1', 'l2'):\n    try:\n        print(open(l).read())\n"
            "    except OSError as e:\n        print(type(e).__name__)\n"
            "try:\n    os.link('/etc/shadow', 'hard')\nexcept OSError as e:\n    print(type(e).__name__)"
        ),
        "proc_parent": (
            "import os\nppid = os.getppid()\nprint('ppid', ppid)\n"
            "for f in ('environ', 'cmdline', 'maps', 'mem'):\n    try:\n"
            "        open(f'/proc/{ppid}/{f}', 'rb').read(100); print('READ', f)\n"
            "    except OSError as e:\n        print(type(e).__name__, f)\n"
            "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
        ),
        "raise_rlimits": (
            "import resource\n"
            "for name in ('RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_CPU', 'RLIMIT_FSIZE'):\n"
            "    r = getattr(resource, name)\n    try:\n"
            "        resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)); print('RAISED', name)\n"
            "    except (ValueError, OSError) as e:\n        print(name, e)"
        ),
        "regain_root": (
            "import os, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "for what, f in (('setuid', lambda: os.setuid(0)),\n"
            "                ('unshare_user', lambda: libc.unshare(0x10000000) or 'ok'),\n"
            "                ('mount', lambda: libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None) or 'ok'),\n"
            "                ('chroot', lambda: os.chroot('/tmp'))):\n"
            "    try:\n        r = f()\n        print(what, 'RESULT', r, ctypes.get_errno())\n"
            "    except OSError as e:\n        print(what, type(e).__name__)\n"
            "print('uid', os.getuid(), os.geteuid())"
        ),
        "garbage_output": "import os, sys\n_ = sys.stdout.buffer.write(os.urandom(200_000))",
        "binary_output": "import sys\n_ = sys.stdout.buffer.write(bytes(range(256)) * 3 + b'\\x1b[2J\\x00END')",
        "other_calls": "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
    }
    tool = make_tool()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    names = list(attacks)
    try:
        results = dict(zip(names, tool.call_batch([{"code": attacks[n]} for n in names])))
    finally:
        del os.environ[SECRET_ENV]
    elapsed = time.monotonic() - t0
    time.sleep(0.3)
    accepted = 0
    try:
        unix.accept()
        accepted = 1
    except BlockingIOError:
        pass
    scene = dict(
        results=results, elapsed=elapsed, host=host, secret_file=secret_file, private_file=private_file,
        target=target, escape_name=escape_name, tcp_accepted=tcp.accepted, udp_received=udp.received(),
        unix_accepted=accepted, pid=me, rss_growth_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before,
    )
    tcp.close()
    udp.close()
    unix.close()
    return scene


def texts(scene, *names):
    return "\n".join(scene["results"][n].text for n in names)


def test_reading_outside_the_workdir_is_contained(scene):
    out = texts(scene, "read_secret", "read_private", "read_shadow", "list_host", "read_repo")
    assert SECRET_VALUE not in out
    for name in ("read_secret", "read_private", "list_host", "read_repo"):
        assert "FileNotFoundError" in scene["results"][name].text, scene["results"][name].text
    # The trainer's tree (code, data with the answers) is absent; at most the interpreter's venv shows.
    # (When the checkout is not the venv's parent, the checkout is not there at all: listdir fails too.)
    first = scene["results"]["read_repo"].text.splitlines()[0]
    if not first.startswith("Traceback"):
        assert set(eval(first)) <= {".venv", "venv"}  # noqa: S307
    assert "PermissionError" in scene["results"]["read_shadow"].text
    assert "root:" not in out


def test_writing_outside_the_workdir_is_contained(scene):
    r = scene["results"]["write_outside"]
    assert "WROTE" not in r.text, r.text
    assert scene["target"].read_text() == "original"
    assert not os.path.exists(f"/tmp/{scene['escape_name']}")  # its /tmp is a private tmpfs
    assert "tmp ok" in r.text
    for p in ("/usr/lib/pwned", "/etc/pwned", "/pwned"):
        assert not os.path.exists(p)


def test_deleting_outside_the_workdir_is_contained(scene):
    r = scene["results"]["delete_outside"]
    assert "DELETED" not in r.text, r.text
    assert scene["target"].read_text() == "original"
    assert scene["secret_file"].exists() and os.path.exists("/etc/hostname")


def test_network_is_unreachable(scene):
    assert scene["tcp_accepted"] == 0
    assert scene["udp_received"] == 0
    assert scene["unix_accepted"] == 0
    for name in ("tcp", "udp", "abstract_unix"):
        text = scene["results"][name].text
        assert "CONNECTED" not in text and "SENT" not in text, text
    assert "unreachable" in scene["results"]["tcp"].text.lower()


def test_parent_environment_is_not_visible(scene):
    out = texts(scene, "env", "proc_environ")
    assert SECRET_VALUE not in out and SECRET_ENV not in out
    assert "HOME" in scene["results"]["env"].text  # the scrubbed environment is there
    assert scene["results"]["proc_environ"].text.rstrip().endswith("False")  # the trainer's /proc entry


def test_signalling_the_parent_is_contained(scene):
    r = scene["results"]["kill_parent"]
    assert os.getpid() == scene["pid"]  # still here
    assert f"sent {scene['pid']}" not in r.text, r.text
    assert r.ok or r.error in ("crash",), r


def test_detached_children_do_not_outlive_the_call(scene):
    assert "spawned" in scene["results"]["detached_child"].text
    deadline = time.monotonic() + 3
    while processes_with_cmdline(MARK.encode()) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_with_cmdline(MARK.encode())
    assert left == [], describe(left)
    left = processes_with_uid_in(UID_BASE, UID_BASE + UID_COUNT)
    assert left == [], describe(left)


def test_filling_the_disk_stops_at_the_quota(scene):
    text = scene["results"]["fill_disk"].text
    assert "No space left on device" in text
    n = int(text.rsplit("files", 1)[1])
    assert n <= 8  # disk_mb = 8: the tmpfs holds 8 MiB, then ENOSPC
    assert "File too large" in scene["results"]["big_file"].text
    shm_fill = scene["results"]["shm_fill"].text
    assert "No space left on device" in shm_fill or "File too large" in shm_fill


def test_segfault_becomes_an_error_result(scene):
    r = scene["results"]["segfault"]
    assert not r.ok and r.error == "crash" and "SIGSEGV" in r.text


def test_stdin_and_file_descriptors(scene):
    assert scene["results"]["stdin"].text.splitlines() == ["''", "/dev/null"]
    fds = eval(scene["results"]["fds"].text)  # noqa: S307 - our own test output
    assert set(fds) <= {0, 1, 2, 3}, fds  # 3 is the directory listing itself


def test_thread_bomb_is_capped(scene):
    r = scene["results"]["threads"]
    assert "stopped at" in r.text, r.text
    assert int(r.text.split("stopped at")[1].split()[0]) <= 16


def test_recursion(scene):
    assert scene["results"]["recursion"].error == "exception"
    assert "RecursionError" in scene["results"]["recursion"].text
    deep = scene["results"]["deep_recursion"]
    # Python 3.11+ recursion does not use the C stack: it ends in MemoryError, a crash or the timeout.
    assert not deep.ok and deep.error in ("crash", "exception", "memory", "timeout"), deep


def test_chdir_and_symlinks_cannot_reach_the_host(scene):
    text = scene["results"]["chdir_escape"].text
    cwd, listing = text.splitlines()[0].split(" ", 1)
    assert cwd == "/"
    # The new root holds system directories, the sandbox's own mounts, and the first component of each
    # read-only path it shows on purpose (the interpreter's venv lives wherever the checkout is, e.g. /check/...).
    shown = {p.strip("/").split("/")[0] for p in visible_paths(SandboxConfig())}
    assert set(eval(listing)) <= shown | {"dev", "proc", "root", "tmp", "workdir"}, (listing, shown)  # noqa: S307
    assert text.splitlines()[1] == "False False"
    sym = scene["results"]["symlink"].text
    assert SECRET_VALUE not in sym
    assert sym.splitlines()[:2] == ["FileNotFoundError", "FileNotFoundError"], sym
    assert sym.splitlines()[2] in ("OSError", "PermissionError"), sym


def test_proc_shows_only_the_sandbox(scene):
    text = scene["results"]["proc_parent"].text
    assert "READ" not in text.replace("READ cmdline", ""), text
    pids = eval(text.splitlines()[-1])  # noqa: S307
    assert max(pids) < 10, pids  # its own PID namespace: init (1), the code (2), and nothing of the host
    assert eval(scene["results"]["other_calls"].text)[-1] < 10  # noqa: S307 - concurrent calls invisible


def test_rlimits_cannot_be_raised(scene):
    text = scene["results"]["raise_rlimits"].text
    assert "RAISED" not in text, text
    assert text.count("not allowed to raise maximum limit") == 4


def test_privileges_cannot_be_regained(scene):
    text = scene["results"]["regain_root"].text
    lines = dict(line.split(" ", 1) for line in text.splitlines())
    assert lines["setuid"] == "PermissionError"
    for what in ("unshare_user", "mount"):
        assert lines[what].startswith("RESULT -1"), text
    assert lines["chroot"] == "PermissionError"
    assert lines["uid"].split()[0] != "0" or os.geteuid() != 0


def test_garbage_and_binary_output_is_clean_text(scene):
    for name in ("garbage_output", "binary_output"):
        r = scene["results"][name]
        assert isinstance(r.text, str) and len(r.text) < 2600
        r.text.encode("utf-8")
        assert "\x00" not in r.text and "\x1b" not in r.text
    assert scene["results"]["binary_output"].text.endswith("END")


def test_quick_attacks_ran_concurrently_and_parent_memory_stayed_small(scene):
    assert scene["elapsed"] < 30
    assert scene["rss_growth_kb"] < 100_000


def test_sandbox_mounts_do_not_leak_to_the_host(scene):
    with open("/proc/self/mounts") as f:
        assert "appo-sbx-" not in f.read()


# ---- attacks that need the whole time budget: run together in one batch ----------------------------


@pytest.fixture(scope="module")
def slow_scene():
    tool = make_tool(timeout_s=2.5, max_drain_bytes=4 << 20)
    cpu_tool = make_tool(timeout_s=15, cpu_seconds=1)
    attacks = {
        "infinite_loop": "while True:\n    pass",
        "sleep": "import time\nprint('sleeping')\ntime.sleep(3600)",
        "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "memory_bomb": "x = bytearray(2 * 1024 ** 3)",
        "memory_creep": "a = []\nwhile True:\n    a.append(bytearray(16 << 20))",

        "flood": "while True:\n    print('y' * 65536)",
        "one_huge_line": "import sys\nsys.stdout.write('z' * (64 << 20))",
        "detached_then_hang": (
            f"import subprocess, time\nsubprocess.Popen(['setsid', 'sleep', '{MARK}'])\ntime.sleep(3600)"
        ),
        "sigterm_ignored": (
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)"
        ),
    }
    names = list(attacks)
    responsive: list[float] = []
    stop = threading.Event()

    def probe_responsiveness():
        while not stop.is_set():
            t = time.monotonic()
            subprocess.run(["true"], check=True)
            responsive.append(time.monotonic() - t)
            time.sleep(0.05)

    prober = threading.Thread(target=probe_responsiveness, daemon=True)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    prober.start()
    out: dict = {}
    # Each process of the fork memory bomb stays under the per-process limit; together they do not.
    # It gets its own generous time limit, so that a loaded machine cannot turn "memory" into "timeout".
    fork_memory_bomb = ("import os, time\nfor i in range(6):\n    if os.fork() == 0:\n"
                        "        held = b'\\x01' * (200 << 20)\n        time.sleep(60)\n        os._exit(0)\n"
                        "time.sleep(60)")
    side = [
        threading.Thread(target=lambda: out.update(cpu=cpu_tool.call({"code": "while True:\n    pass"}))),
        threading.Thread(target=lambda: out.update(fmb=cpu_tool.call({"code": fork_memory_bomb}))),
    ]
    for t in side:
        t.start()
    results = dict(zip(names, tool.call_batch([{"code": attacks[n]} for n in names])))
    for t in side:
        t.join()
    results["fork_memory_bomb"] = out["fmb"]
    elapsed = time.monotonic() - t0
    stop.set()
    prober.join()
    results["cpu_limit"] = out["cpu"]
    return dict(results=results, elapsed=elapsed, responsive=responsive,
                rss_growth_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before)


def test_infinite_loop_and_sleep_time_out(slow_scene):
    for name in ("infinite_loop", "sleep", "sigterm_ignored", "detached_then_hang"):
        r = slow_scene["results"][name]
        assert not r.ok and r.error == "timeout", (name, r)
    assert slow_scene["results"]["sleep"].text.startswith("sleeping")
    assert slow_scene["elapsed"] < 12, slow_scene["elapsed"]


def test_cpu_time_limit(slow_scene):
    r = slow_scene["results"]["cpu_limit"]
    assert not r.ok and r.error == "cpu_limit", r
    assert "CPU time" in r.text


def test_fork_bomb_is_contained_and_the_machine_stays_responsive(slow_scene):
    r = slow_scene["results"]["fork_bomb"]
    assert not r.ok and r.error == "timeout", r
    assert slow_scene["responsive"], "the prober never ran"
    assert max(slow_scene["responsive"]) < 2.0, max(slow_scene["responsive"])
    left = processes_with_uid_in(UID_BASE, UID_BASE + UID_COUNT)
    assert left == [], describe(left)
    left = processes_with_cmdline(MARK.encode())
    assert left == [], describe(left)


def test_memory_bombs_hit_the_limit(slow_scene):
    bomb, creep = slow_scene["results"]["memory_bomb"], slow_scene["results"]["memory_creep"]
    assert bomb.error == "memory" and "MemoryError" in bomb.text, bomb
    assert creep.error in ("memory", "timeout"), creep
    assert slow_scene["rss_growth_kb"] < 100_000
    forked = slow_scene["results"]["fork_memory_bomb"]
    assert forked.error == "memory" and "together (the limit is 512 MiB)" in forked.text, forked


def test_output_floods_are_truncated_and_bounded(slow_scene):
    flood, huge = slow_scene["results"]["flood"], slow_scene["results"]["one_huge_line"]
    assert flood.error == "output_limit" and "printed more than" in flood.text
    assert len(flood.text) < 2600 and len(huge.text) < 2600
    assert "omitted" in flood.text and "omitted" in huge.text
    assert huge.error in ("output_limit", None), huge


# ---- levels ---------------------------------------------------------------------------------------


@needs_root
def test_userns_level_also_isolates_network_and_files(tmp_path):
    """The unprivileged level, forced while root: same namespaces, capabilities cleared."""
    secret = tmp_path / "s.txt"
    secret.write_text(SECRET_VALUE)
    secret.chmod(0o644)
    server = LoopbackTCPServer()
    try:
        tool = make_tool(isolation="userns")
        assert tool.isolation == "userns"
        net, fs, caps = tool.call_batch([
            {"code": f"import socket\nsocket.create_connection(('127.0.0.1', {server.port}), timeout=1)"},
            {"code": f"open({str(secret)!r}).read()"},
            {"code": "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])"},
        ])
        time.sleep(0.2)
        assert server.accepted == 0
    finally:
        server.close()
    assert "Network is unreachable" in net.text
    assert "FileNotFoundError" in fs.text and SECRET_VALUE not in fs.text
    assert int(caps.text, 16) == 0
