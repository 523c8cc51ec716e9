"""System-call helpers of the Python sandbox's child (stdlib only, imported by ``_sandbox_runner``):
``mount``/``unshare``/``prctl``/``capset`` through ctypes, building the read-only minimal root, resource
limits, dropping privileges. See :mod:`appo.tools._sandbox_runner` for the sequence they serve.
"""

import os

# Linux constants (from <sched.h>, <sys/mount.h>, <linux/prctl.h>); stable ABI.
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4

_libc = None


def _c():
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, dst, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_c().mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {src} -> {dst}")


def _prctl(option: int, arg: int) -> None:
    _check(_c().prctl(option, arg, 0, 0, 0), f"prctl({option})")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount_flags(path: str) -> int:
    """Flags of the mount holding ``path`` that a remount must keep (locked in a user namespace)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
                   (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if f & st:
            out |= ms
    return out


def _bind_ro(src: str, root: str) -> None:
    """Bind ``src`` read-only at the same path under ``root`` (a symlink is recreated as a symlink)."""
    dst = root + src
    parent = os.path.dirname(dst)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if os.path.islink(src):
        if not os.path.lexists(dst):
            os.symlink(os.readlink(src), dst)
        return
    if os.path.isdir(src):
        os.makedirs(dst, mode=0o755, exist_ok=True)
    else:
        open(dst, "a").close()
    try:
        _mount(src, dst, None, MS_BIND)
    except OSError:  # locked child mounts under src (user namespaces): bind the whole subtree
        _mount(src, dst, None, MS_BIND | MS_REC)
    flags = _mount_flags(src) | MS_RDONLY | MS_NOSUID
    _mount(None, dst, None, MS_REMOUNT | MS_BIND | flags)


def _build_root(job: dict, warnings: list) -> None:
    """Steps 3 of the module docstring, run as root (real or of the user namespace) in the new namespaces."""
    root = job["mount_point"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['disk_bytes']},mode=755")
    seen = set()
    for path in job["ro_paths"]:
        if path in seen or not os.path.lexists(path):
            continue
        seen.add(path)
        _bind_ro(path, root)
    dev = root + "/dev"
    os.makedirs(dev, mode=0o755, exist_ok=True)
    for name in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + name):
            open(f"{dev}/{name}", "a").close()
            _mount("/dev/" + name, f"{dev}/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    for d in (dev + "/shm", root + "/tmp"):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o1777)
    os.makedirs(root + "/proc", exist_ok=True)
    try:
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as exc:  # e.g. a container that masks parts of /proc forbids it in a user namespace
        warnings.append(f"no /proc in the sandbox ({exc.strerror})")
    work = root + job["workdir"]
    os.makedirs(work, mode=0o700, exist_ok=True)
    os.chown(work, job["uid"], job["gid"])
    os.chdir(root)
    os.chroot(".")
    os.chdir(job["workdir"])
    _c().sethostname(b"sandbox", 7)  # UTS namespace: the host's name is not shown (failure is harmless)


def _set_limits(job: dict) -> None:
    import resource

    lim = job["limits"]
    for name, value in (("RLIMIT_AS", lim["memory_bytes"]), ("RLIMIT_FSIZE", lim["file_bytes"]),
                        ("RLIMIT_NOFILE", lim["open_files"]), ("RLIMIT_CORE", 0),
                        ("RLIMIT_NPROC", lim["processes"])):
        resource.setrlimit(getattr(resource, name), (value, value))
    cpu = lim["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _drop_privileges(job: dict) -> None:
    """Root: switch to the leased uid/gid (which clears every capability). User namespace: clear them."""
    if os.geteuid() == 0 and job["mode"] != "userns":
        os.setgroups([])
        os.setresgid(job["gid"], job["gid"], job["gid"])
        os.setresuid(job["uid"], job["uid"], job["uid"])
    else:
        import ctypes

        for cap in range(64):  # bounding set: needs CAP_SETPCAP, held only in the user namespace
            _c().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        _c().prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        data = (ctypes.c_uint32 * 6)()
        _check(_c().capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
