"""Parent side of the Python sandbox: start one isolated child per call, read its output with a cap,
enforce the wall-clock limit, kill and reap everything it started, clean up.

What protects the trainer (the parent) from the code it runs:

- The child runs ``python -I -S -u -c "import _sandbox_runner ..."`` in a **new session** (its own process group,
  never the trainer's), with stdin on /dev/null, ``close_fds`` (only stdout, stderr and one status pipe
  are inherited) and a **scrubbed environment** (a fixed PATH, HOME, locale and thread caps; nothing
  of the trainer's environment, so no token or key leaks).
- Output is read by a ``selectors`` loop that keeps at most a head and a tail of each stream; past
  :attr:`SandboxConfig.max_drain_bytes` the call is stopped, so a flood of output costs bounded memory
  and bounded time.
- On timeout (wall clock) the parent sends the runner SIGTERM; the runner SIGKILLs the PID namespace's
  init, whose death makes the kernel kill everything left in the namespace, detached or not, and reaps
  it. After a one-second grace the parent ``killpg``s the runner's group with SIGKILL regardless; if the
  runner dies first, its init still dies (``PR_SET_PDEATHSIG``). At the ``rlimits`` level, as root,
  every process of the call's leased uid is killed as well. The runner is always reaped.
- Each call leases its own uid from :class:`UidPool` (an ``flock`` per uid makes the lease exclusive
  across trainer processes on one machine), so per-uid limits and clean-up checks are per call.
- The isolation itself (namespaces, chroot, resource limits, dropped uid) is done by the child:
  see :mod:`appo.tools._sandbox_runner`.

Cost (``python -m appo.tools.bench_sandbox``, 2 shared cores): a ``print(1)`` call takes ~25 ms of CPU
(a bare ``python -I -S -c pass`` takes ~14 ms) and 25-35 ms of wall time on an idle core; the median
rises to 55-75 ms when other work competes for the cores.

Isolation levels, best first (``auto`` picks the first whose probe run succeeds):

- ``namespaces``: the trainer runs as root. Full isolation, and the code runs as a per-call uid.
- ``userns``: unprivileged, with user namespaces. Same namespaces and root; the code keeps the
  trainer's uid (without capabilities), so file permissions do not protect the few read-only system
  paths that are visible, and ``RLIMIT_NPROC`` is counted within the namespace (Linux >= 5.14).
- ``rlimits``: neither is available. Limits, process group and temporary directory only: **no network
  isolation and no filesystem isolation**, and when not root the code can signal the trainer. Refused
  unless :attr:`SandboxConfig.allow_unisolated` is set; a warning is logged when used.

Memory: ``RLIMIT_AS`` bounds each process; the namespace's init sums the resident memory of all the
call's processes every 50 ms and kills them all past ``total_memory_mb`` (namespace levels only; the
``rlimits`` level has only the per-process bound, so ``processes x memory_mb`` in the worst case).

Left out: seccomp syscall filtering; cgroups (an exact aggregate memory/pids cap, but creating cgroups
means writing into the machine's cgroup tree, which the trainer may not own); a fork server with
pre-imported modules (each call pays an interpreter start, ~15-25 ms of CPU).
"""

from __future__ import annotations

import ast
import fcntl
import functools
import logging
import marshal
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field

from appo.tools.sandbox_config import WORKDIR, CappedBuffer, IsolationLevel, SandboxConfig, SandboxRun, clean_output  # noqa: F401 - re-exported: the sandbox's public records

logger = logging.getLogger(__name__)

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_runner.py")
_BOOT = (f"import sys; sys.path.insert(0, {os.path.dirname(RUNNER)!r}); import _sandbox_runner as r; "
         "del sys.path[0]; r.entry()")
"""``-c`` program of the child: import the runner (cached bytecode) rather than compile it as a script."""
LOCK_DIR = os.path.join(tempfile.gettempdir(), ".appo-sandbox-uids")
"""Where uid leases are locked (``flock``), so that trainer processes on one machine never share a uid."""


class UidPool:
    """Leases distinct uids so concurrent calls never share one (``RLIMIT_NPROC`` counts per uid).

    Within a process a free list hands uids out; across processes (several trainers or rollout workers
    on one machine) each lease also holds an exclusive ``flock`` on ``LOCK_DIR/<uid>``, which the kernel
    drops if the process dies, so no lease outlives its holder. Locking needs root (the lock directory
    is root's, mode 0700); unprivileged callers never switch uid, and lease without it.
    """

    def __init__(self, base: int, count: int, lock_dir: str | None = None) -> None:
        self._free = list(range(base + count - 1, base - 1, -1))
        self._cond = threading.Condition()
        self._locks: dict[int, int] = {}
        self._lock_dir = lock_dir if lock_dir is not None else (LOCK_DIR if os.geteuid() == 0 else "")
        if self._lock_dir:
            os.makedirs(self._lock_dir, mode=0o700, exist_ok=True)
            st = os.stat(self._lock_dir)
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise PermissionError(f"{self._lock_dir} must be a directory owned by uid {os.geteuid()} with "
                                      "mode 0700 (it holds the sandbox uid locks); remove it and retry")

    def _try_lock(self, uid: int) -> bool:
        if not self._lock_dir:
            return True
        fd = os.open(os.path.join(self._lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._locks[uid] = fd
        return True

    def lease(self, timeout: float) -> int | None:
        """A free uid, waiting up to ``timeout`` seconds; None when none freed up in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for uid in reversed(self._free):
                    if self._try_lock(uid):
                        self._free.remove(uid)
                        return uid
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                # Woken by a local release, or re-try the locks other processes may have dropped.
                self._cond.wait(timeout=min(left, 0.05))

    def release(self, uid: int) -> None:
        """Give a uid back once no process of it is left."""
        with self._cond:
            fd = self._locks.pop(uid, None)
            if fd is not None:
                os.close(fd)  # drops the flock
            self._free.append(uid)
            self._cond.notify()


_POOLS: dict[tuple[int, int], UidPool] = {}
_POOLS_LOCK = threading.Lock()


def uid_pool(config: SandboxConfig) -> UidPool:
    """The process-wide pool for ``config``'s uid range (shared by every tool using that range)."""
    key = (config.uid_base, config.uid_count)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = UidPool(*key)
        return _POOLS[key]


@functools.lru_cache(maxsize=64)
def _visible_paths_cached(config: SandboxConfig) -> tuple[str, ...]:
    return tuple(visible_paths(config))


def visible_paths(config: SandboxConfig) -> list[str]:
    """Host paths shown read-only in the new root: system directories and the interpreter's installation.

    System directories are kept as given (a symlink such as ``/lib -> usr/lib`` is recreated as a
    symlink); installation paths are resolved. A path inside another listed directory is dropped.
    The trainer's own tree (an editable install's source, its data) is not listed.
    """
    system = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"]
    py = os.path.realpath(config.python)
    install = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(py))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        install.add(sysconfig.get_paths().get(key, ""))
    install.update(site_dirs(config))
    install.update(config.extra_ro_paths)
    # The interpreter path as written (a venv symlink) must resolve inside too.
    install.add(os.path.dirname(os.path.abspath(config.python)))
    resolved = sorted({os.path.realpath(p) for p in install if p and os.path.exists(p)} - {"/"})
    dirs = [p for p in system if os.path.isdir(p) and not os.path.islink(p)]
    out = [p for p in system if os.path.lexists(p)]
    for p in resolved:
        if any(p == d or p.startswith(d.rstrip("/") + "/") for d in dirs):
            continue
        out.append(p)
        dirs.append(p)
    # The unresolved venv directory (e.g. /repo/.venv) when its bin/python is a symlink elsewhere.
    for p in sorted({os.path.abspath(p) for p in (sys.prefix,
                                                  os.path.dirname(os.path.dirname(os.path.abspath(config.python))))}):
        if os.path.isdir(p) and p not in out and not any(p.startswith(d.rstrip("/") + "/") for d in dirs):
            out.append(p)
            dirs.append(p)
    return out


def site_dirs(config: SandboxConfig) -> list[str]:
    """This interpreter's site-packages directories (empty when ``site_packages`` is off)."""
    if not config.site_packages:
        return []
    return [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


def base_env(config: SandboxConfig, level: str, workdir_host: str) -> dict[str, str]:
    """The scrubbed environment of the child: nothing inherited from the trainer."""
    inside = level != "rlimits"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": WORKDIR if inside else workdir_host,
        "TMPDIR": "/tmp" if inside else workdir_host,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    env.update(dict(config.env))
    return env


def _kill_uid(uid: int) -> int:
    """SIGKILL every live process whose real uid is ``uid`` (root only), until none is left. Returns kills.

    Zombies are skipped: they are dead already, and their parent (or the machine's init) reaps them.
    """
    killed = 0
    for _ in range(50):
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/status", "rb") as f:
                    zombie = False
                    for line in f:
                        if line.startswith(b"State:"):
                            zombie = line.split()[1] in (b"Z", b"X")
                        elif line.startswith(b"Uid:"):
                            if int(line.split()[1]) == uid and not zombie:
                                found.append(int(name))
                            break
            except (OSError, ValueError, IndexError):
                continue
        if not found:
            return killed
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.01)
    return killed


def _rmtree(path: str) -> None:
    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def run_sandboxed(code: str, config: SandboxConfig, level: IsolationLevel) -> SandboxRun:
    """Run ``code`` once at isolation ``level``; never raises for anything the code does."""
    start = time.monotonic()
    root = os.geteuid() == 0
    pool = uid_pool(config)
    uid = pool.lease(timeout=config.timeout_s)
    if uid is None:
        return _failed("every sandbox uid is in use (too many concurrent calls)", level, start)
    workdir = tempfile.mkdtemp(prefix="appo-sbx-")
    run = None
    try:
        # The time limit counts from here: waiting for a free uid does not eat into it.
        run = _run(code, config, level, uid, workdir, time.monotonic())
        return run
    finally:
        # After a namespace run that ended normally the kernel has killed everything left in it; after a
        # timeout, a flood, a failure, or at the rlimits level, make sure no process of the uid survives.
        clean = run is not None and level == "namespaces" and not (run.timed_out or run.flooded or run.setup_error)
        if root and level in ("namespaces", "rlimits") and not clean:
            _kill_uid(uid)
        _rmtree(workdir)
        pool.release(uid)


def _failed(reason: str, level: str, start: float) -> SandboxRun:
    return SandboxRun("", "", None, None, False, False, reason, level, time.monotonic() - start)


def _run(code: str, config: SandboxConfig, level: str, uid: int, workdir: str, start: float) -> SandboxRun:
    lim = {
        "memory_bytes": config.memory_mb << 20,
        "file_bytes": config.file_mb << 20,
        "open_files": config.open_files,
        "processes": config.processes + 1,  # + the namespace's init
        "cpu_seconds": config.cpu_limit,
        "total_memory_bytes": config.total_memory_mb << 20,
        "memory_tick_s": 0.05,
    }
    job = {
        "mode": level, "code": code, "uid": uid, "gid": uid, "limits": lim, "nice": config.nice,
        "mount_point": workdir, "workdir": WORKDIR, "workdir_host": workdir, "disk_bytes": config.disk_mb << 20,
        "ro_paths": list(_visible_paths_cached(config)), "site_dirs": site_dirs(config),
        "preimports": list(config.preimports),
    }
    job_path = os.path.join(workdir, ".job")
    fd = os.open(job_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        marshal.dump(job, f)
    status_r, status_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [config.python, "-I", "-S", "-u", "-c", _BOOT, job_path, str(status_w)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
            env=base_env(config, level, workdir), pass_fds=(status_w,), start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        os.close(status_r)
        return _failed(f"could not start {config.python}: {exc}", level, start)
    finally:
        os.close(status_w)
    cap = config.max_output_chars * 4
    out, err, status = CappedBuffer(cap), CappedBuffer(cap), CappedBuffer(1 << 20)
    sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, status_r: status}
    timed_out = flooded = False
    deadline = start + config.timeout_s
    status_done_at = None
    with selectors.DefaultSelector() as sel:
        for fd_ in sinks:
            sel.register(fd_, selectors.EVENT_READ)
        while sel.get_map():
            now = time.monotonic()
            if status_done_at is not None and now > status_done_at + 0.5:
                break  # the runner is done; a stray writer holding the pipes open is not waited for
            if now >= deadline:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(deadline - now, 0.25)):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    if key.fd == status_r:
                        status_done_at = time.monotonic()
                    continue
                sinks[key.fd].feed(data)
            if out.total + err.total > config.max_drain_bytes:
                flooded = True
                break
        if timed_out or flooded:
            # SIGTERM asks the runner to kill its child (the namespace dies with it) and reap it; pipes
            # close as the processes die. Whatever is still alive after the grace period gets SIGKILL.
            _signal_runner(proc, signal.SIGTERM)
            grace = time.monotonic() + 1.0
            while sel.get_map() and time.monotonic() < grace:
                for key, _ in sel.select(timeout=0.1):
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fd)
                    elif key.fd != status_r:
                        sinks[key.fd].feed(data)
            try:
                proc.wait(timeout=max(0.0, grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # unkillable (D state); leave it rather than hang the trainer
            logger.error("sandbox runner %d did not die after SIGKILL", proc.pid)
    for f in (proc.stdout, proc.stderr):
        f.close()
    os.close(status_r)
    report = _parse_status(bytes(status.head))
    text_cap = config.max_output_chars
    return SandboxRun(
        stdout=out.text(text_cap), stderr=err.text(text_cap),
        exit_code=None if timed_out or flooded else report.get("exit"),
        signal=None if timed_out or flooded else report.get("signal"),
        timed_out=timed_out, flooded=flooded,
        setup_error=None if timed_out or flooded else _setup_error(report, proc.returncode, err),
        isolation=level, wall_s=time.monotonic() - start,
        stdout_bytes=out.total, stderr_bytes=err.total,
        warnings=tuple(str(w) for w in report.get("warnings", ()) if isinstance(w, str)),
        memory_exceeded=None if timed_out or flooded else report.get("memory_exceeded"),
    )


def _signal_runner(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _parse_status(raw: bytes) -> dict:
    try:
        report = ast.literal_eval(raw.decode("utf-8", "replace") or "{}")
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return {}
    if not isinstance(report, dict):
        return {}
    for key in ("exit", "signal", "memory_exceeded"):
        if not isinstance(report.get(key), int) or isinstance(report.get(key), bool):
            report[key] = None
    return report


def _setup_error(report: dict, returncode: int | None, err: CappedBuffer) -> str | None:
    if report.get("setup_error"):
        return str(report["setup_error"])
    if report.get("exit") is None and report.get("signal") is None:
        tail = clean_output(bytes(err.head[-400:]).decode("utf-8", "replace")).strip()
        return f"the sandbox runner ended without a report (status {returncode}){': ' + tail if tail else ''}"
    return None


@dataclass
class _Detection:
    level: IsolationLevel | None = None
    notes: list[str] = field(default_factory=list)


_DETECTED: dict[tuple, _Detection] = {}
_DETECT_LOCK = threading.Lock()


def probe(config: SandboxConfig, level: IsolationLevel) -> str | None:
    """Run a tiny program at ``level``; None when it worked, else why not."""
    run = run_sandboxed("print(6 * 7)", config, level)
    if run.setup_error:
        return run.setup_error
    if run.timed_out:
        return "the probe timed out"
    if run.stdout.strip() != "42":
        return f"the probe printed {run.stdout[:200]!r} (stderr {run.stderr[-300:]!r})"
    return None


def detect_isolation(config: SandboxConfig, probe_fn=None) -> tuple[IsolationLevel | None, list[str]]:
    """Pick the isolation level for ``config`` (cached per configuration and probe function).

    Returns ``(level, notes)``: ``level`` is None when only ``rlimits`` would work and
    ``allow_unisolated`` is off; ``notes`` say why each better level failed. ``probe_fn(config,
    level)`` (default :func:`probe`, looked up at call time) returns None when ``level`` works.
    """
    probe_fn = probe_fn or probe
    key = (config.python, config.isolation, config.allow_unisolated, config.disk_mb, config.uid_base, probe_fn)
    with _DETECT_LOCK:
        if key in _DETECTED:
            d = _DETECTED[key]
            return d.level, list(d.notes)
        d = _Detection()
        if config.isolation != "auto":
            candidates: list[IsolationLevel] = [config.isolation]
        else:
            candidates = (["namespaces"] if os.geteuid() == 0 else []) + ["userns"]
        for level in candidates:
            if level == "rlimits":
                break
            why = probe_fn(config, level)
            if why is None:
                d.level = level
                break
            d.notes.append(f"{level}: {why}")
        if d.level is None and (config.isolation in ("auto", "rlimits")):
            if config.allow_unisolated or config.isolation == "rlimits":
                d.level = "rlimits"
                logger.warning(
                    "Python sandbox runs WITHOUT network or filesystem isolation (level 'rlimits'): %s",
                    "; ".join(d.notes) or "requested",
                )
        _DETECTED[key] = d
        return d.level, list(d.notes)
