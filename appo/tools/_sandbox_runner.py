"""Child side of the Python sandbox: a stdlib-only module the parent runs as
``python -I -S -u -c "<put this folder on sys.path>; import _sandbox_runner; _sandbox_runner.main()"``
(importing it, rather than running it as a script, lets Python reuse its cached bytecode).

Never imported by appo itself. The parent (:mod:`appo.tools.sandbox_process`) starts it in a fresh session
with a scrubbed environment, stdin on /dev/null and only stdout, stderr and one status pipe open. It
reads the job (a :mod:`marshal` file the parent wrote in its working directory,
               deleted at once) and then, depending on the
isolation level:

``namespaces`` (the parent is root) and ``userns`` (unprivileged, user namespaces):

1. ``unshare`` new mount, PID, network, IPC and UTS namespaces (``userns`` adds a user namespace that
   maps only the caller's own uid and gid). The network namespace has only a loopback interface,
   left down: nothing outside is reachable.
2. ``fork`` the *init* of the new PID namespace. When it exits, or is killed, the kernel kills every
   process left in the namespace, so a detached (``setsid``, double-forked) child cannot outlive the
   call. It holds ``PR_SET_PDEATHSIG = SIGKILL`` towards this script, so killing this script (which
   the parent does on timeout) takes the whole namespace down.
3. The init builds a new root on a size-limited tmpfs: read-only bind mounts of ``/usr``, ``/lib*``,
   ``/bin``, ``/sbin``, ``/etc`` and the Python installation, a few device nodes, a fresh ``/proc`` of
   the new PID namespace, and writable ``/tmp`` and working directory inside the tmpfs (the tmpfs size
   is the disk quota). Then ``chroot`` into it. Everything else (the trainer's files, its data with
   the answers, /root, other users' /tmp) is simply not there.
4. Resource limits (``RLIMIT_AS``, ``CPU``, ``FSIZE``, ``NPROC``, ``NOFILE``, ``CORE = 0``), then
   privileges dropped: as root, to the unprivileged uid/gid the parent leased for this call (one uid per
   concurrent call, so ``RLIMIT_NPROC``, which the kernel does not enforce for root and counts per
   uid, is a per-call bound); in a user namespace, all capabilities cleared. ``no_new_privs`` is set
   so no set-uid binary can win them back.
5. Fork once more: the model's code runs in PID 2; the init reaps, reports how PID 2 ended, and every
   50 ms sums the resident memory of the namespace's processes, killing them all past the call's total
   (a fork bomb of processes that each stay under ``RLIMIT_AS``).

``rlimits`` (no namespaces; the parent allows it only when told to): resource limits, a dropped uid
when root, the process group, a scrubbed environment and a temporary directory. No network or
filesystem isolation.

The model's code is parsed with :mod:`ast`; when its last statement is a bare expression, that
expression is evaluated separately and its ``repr`` printed unless it is None (as a notebook cell).
Tracebacks show the model's own frames only (file ``<code>``).
"""

import _signal
import marshal
import os
import sys

from _sandbox_sys import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    _build_root,
    _c,
    _check,
    _drop_privileges,
    _prctl,
    _set_limits,
    _write,
)

EXIT_SETUP = 70
"""Exit status of this script when the sandbox could not be set up (reported on the status pipe)."""

def _run_code(job: dict) -> int:
    """Run the model's code in this process; returns the exit status.

    ``compile(..., PyCF_ONLY_AST)`` and the builtin ``_ast`` give the syntax tree without importing
    :mod:`ast` (and :mod:`re` through it): interpreter start-up is most of a call's cost.
    """
    import _ast
    import builtins
    import types

    code = job["code"]
    # Changing uid made this process non-dumpable, which hides /proc/self from itself. The code's own
    # process holds no secret, so make it dumpable again (the init above it stays non-dumpable, so the
    # code cannot ptrace it). Core files stay off (RLIMIT_CORE = 0).
    try:
        _prctl(PR_SET_DUMPABLE, 1)
    except OSError:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    sys.path.extend(job["site_dirs"])
    sys.argv = ["<code>"]
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main

    def report(exc: BaseException) -> None:
        import linecache
        import traceback

        linecache.cache["<code>"] = (len(code), None, code.splitlines(True), "<code>")
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        sys.stderr.write(text)

    try:
        for name in job["preimports"]:
            __import__(name)
        tree = compile(code, "<code>", "exec", _ast.PyCF_ONLY_AST)
        last = None
        if tree.body and isinstance(tree.body[-1], _ast.Expr):
            last = _ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<code>", "exec"), main.__dict__)
        if last is not None:
            value = eval(compile(last, "<code>", "eval"), main.__dict__)
            if value is not None:
                print(repr(value))
        status = 0
    except SystemExit as exc:
        code_ = exc.code
        if code_ is None or isinstance(code_, int):
            status = int(code_ or 0) & 0xFF
        else:
            sys.stderr.write(f"{code_}\n")
            status = 1
    except BaseException as exc:  # noqa: BLE001 - the model's error is the result
        report(exc)
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    return status


def _resident_bytes(page: int) -> int:
    """Sum of the resident set sizes of every process this PID namespace's /proc shows."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * page
            except (OSError, ValueError, IndexError):
                pass
    return total


def _wait_main(pid: int, budget: int, tick: float) -> dict:
    """As the namespace's init: reap every child until ``pid`` ends; return how it ended.

    Every ``tick`` seconds it also sums the resident memory of all processes in the namespace; past
    ``budget`` bytes (0: no check) it kills them all (``kill(-1)`` from the init reaches exactly the
    namespace) and reports ``memory_exceeded``. This bounds what ``RLIMIT_AS``, being per process,
    cannot: many processes each under the limit. Counting RSS counts pages shared after a fork once
    per process, so the bound errs on the safe side.
    """
    import select

    status = {"exit": None, "signal": None}
    try:
        waiter = os.pidfd_open(pid)
    except (AttributeError, OSError):  # kernel < 5.3: poll instead
        waiter = None
    check = budget > 0 and os.path.isdir("/proc/self")
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        if waiter is not None:
            select.select([waiter], [], [], tick)
        else:
            select.select([], [], [], tick / 5)
        while True:
            try:
                got, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return status
            if got == 0:
                break
            if got == pid:
                if os.WIFSIGNALED(wstatus):
                    status["signal"] = os.WTERMSIG(wstatus)
                else:
                    status["exit"] = os.WEXITSTATUS(wstatus)
                return status
        if check:
            used = _resident_bytes(page)
            if used > budget:
                status["memory_exceeded"] = used
                try:
                    os.kill(-1, 9)
                except OSError:
                    pass
                check = False


def _init_main(job: dict, report_w: int, life_r: int, warnings: list) -> None:
    """PID 1 of the new namespace: build the root, limit, drop privileges, run the code as PID 2."""
    status = {"exit": None, "signal": None}
    try:
        _prctl(PR_SET_PDEATHSIG, 9)
        _build_root(job, warnings)
        _set_limits(job)
        _drop_privileges(job)
        _prctl(PR_SET_PDEATHSIG, 9)  # cleared by the uid change; set again, then check the parent lives
        os.set_blocking(life_r, False)
        try:
            if os.read(life_r, 1) == b"":
                os._exit(EXIT_SETUP)
        except BlockingIOError:
            pass
        if job["nice"]:
            os.nice(job["nice"])
    except BaseException as exc:  # noqa: BLE001
        os.write(report_w, _line("setup_error", f"{type(exc).__name__}: {exc}"))
        os._exit(EXIT_SETUP)
    pid = os.fork()
    if pid == 0:
        os.close(report_w)
        os.close(life_r)
        os._exit(_run_code(job))
    status = _wait_main(pid, job["limits"].get("total_memory_bytes", 0), job["limits"].get("memory_tick_s", 0.05))
    out = b"".join(_line("warning", w) for w in warnings)
    out += b"".join(_line(k, str(v)) for k, v in status.items() if v is not None)
    os.write(report_w, out)
    os._exit(0)


def _line(key: str, value: str) -> bytes:
    """One ``key<TAB>value`` line of the init's report (newlines in the value escaped)."""
    return (key + "\t" + value.replace("\\", "\\\\").replace("\n", "\\n") + "\n").encode("utf-8", "replace")


def _parse_lines(raw: bytes) -> dict:
    """Read the init's report back: ``exit``/``signal`` as int, ``setup_error``, ``warnings`` list."""
    report = {"warnings": []}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("\t")
        value = value.replace("\\n", "\n").replace("\\\\", "\\")
        if key == "warning":
            report["warnings"].append(value)
        elif key in ("exit", "signal", "memory_exceeded"):
            try:
                report[key] = int(value)
            except ValueError:
                pass
        elif key == "setup_error":
            report[key] = value
    return report


def _namespaces(job: dict, status_fd: int) -> int:
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if job["mode"] == "userns":
        flags |= CLONE_NEWUSER
    _check(_c().unshare(flags), "unshare")
    if job["mode"] == "userns":
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        job["uid"], job["gid"] = uid, gid
    warnings: list = []
    report_r, report_w = os.pipe()
    life_r, life_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        os.close(report_r)
        os.close(life_w)
        os.close(status_fd)
        _init_main(job, report_w, life_r, warnings)
    _CHILD[0] = pid
    os.close(report_w)
    os.close(life_r)
    chunks = []
    while True:
        chunk = os.read(report_r, 65536)
        if not chunk:
            break
        if sum(map(len, chunks)) < 1 << 20:
            chunks.append(chunk)
    _, wstatus = os.waitpid(pid, 0)
    report = _parse_lines(b"".join(chunks))
    if os.WIFSIGNALED(wstatus) and "setup_error" not in report and "exit" not in report:
        report.setdefault("signal", os.WTERMSIG(wstatus))
    report["isolation"] = job["mode"]
    _send(status_fd, report)
    return 0


def _send(fd: int, report: dict) -> None:
    """Give the parent the report as a Python literal (it reads it back with ``ast.literal_eval``)."""
    os.write(fd, repr(report).encode("utf-8", "backslashreplace"))


def _rlimits_only(job: dict, status_fd: int) -> int:
    """Weakest level: limits and (when root) the leased uid; the code runs in a child of this script."""
    warnings = []
    try:
        os.chdir(job["workdir_host"])
        _c()  # load ctypes before any uid change: the interpreter may not be readable by that uid
        drop = os.geteuid() == 0 and _world_readable(os.path.dirname(os.__file__))
        if os.geteuid() == 0 and not drop:
            warnings.append("the interpreter is not readable by an unprivileged uid: the code runs as root")
        if drop:
            os.chown(".", job["uid"], job["gid"])
    except OSError as exc:
        _send(status_fd, {"setup_error": str(exc)})
        return EXIT_SETUP
    setup_r, setup_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        os.close(status_fd)
        os.close(setup_r)
        try:
            _set_limits(job)
            if drop:
                os.setgroups([])
                os.setresgid(job["gid"], job["gid"], job["gid"])
                os.setresuid(job["uid"], job["uid"], job["uid"])
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            if job["nice"]:
                os.nice(job["nice"])
        except BaseException as exc:  # noqa: BLE001
            os.write(setup_w, f"{type(exc).__name__}: {exc}".encode())
            os._exit(EXIT_SETUP)
        os.close(setup_w)
        os._exit(_run_code(job))
    _CHILD[0] = pid
    os.close(setup_w)
    failure = os.read(setup_r, 4096)
    os.close(setup_r)
    _, wstatus = os.waitpid(pid, 0)
    report = {"isolation": "rlimits", "exit": None, "signal": None, "warnings": warnings}
    if failure:
        report["setup_error"] = failure.decode("utf-8", "replace")
    elif os.WIFSIGNALED(wstatus):
        report["signal"] = os.WTERMSIG(wstatus)
    else:
        report["exit"] = os.WEXITSTATUS(wstatus)
    _send(status_fd, report)
    return 0


def _world_readable(path: str) -> bool:
    """Whether every directory on the way to ``path`` lets others in (so a dropped uid can import from it)."""
    import stat

    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


_CHILD = [0]
"""Pid of the child this script forked (the namespace's init, or the code at the rlimits level)."""


def _on_sigterm(signum, frame) -> None:
    """The parent's timeout: kill the child (and with it the namespace), then reap it as usual.

    Killing from here rather than having the parent SIGKILL this script means the init is reaped by
    this script instead of becoming a zombie of the machine's init.
    """
    if _CHILD[0]:
        try:
            os.kill(_CHILD[0], 9)
        except OSError:
            pass
    else:
        os._exit(EXIT_SETUP)


def main() -> int:
    job_path, status_fd = sys.argv[1], int(sys.argv[2])
    _signal.signal(_signal.SIGTERM, _on_sigterm)
    try:
        with open(job_path, "rb") as f:
            job = marshal.load(f)
        os.unlink(job_path)
        if job["mode"] in ("namespaces", "userns"):
            return _namespaces(job, status_fd)
        return _rlimits_only(job, status_fd)
    except BaseException as exc:  # noqa: BLE001
        _send(status_fd, {"setup_error": f"{type(exc).__name__}: {exc}"})
        return EXIT_SETUP


def entry() -> None:
    """Run :func:`main` and leave without interpreter shutdown work (a few ms per call)."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    entry()
