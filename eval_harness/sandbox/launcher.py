"""In-sandbox launcher. Executed as a script (`python -I -S launcher.py`), never imported by the harness.

It runs as PID 1 of fresh PID, network and mount namespaces when the host allows them, as root there,
and it never executes solution code itself: each test runs in a forked child that first drops to an
unprivileged uid, applies rlimits and only then compiles and runs the solution. Between tests every
other process in the namespace is SIGKILLed, so a fork bomb or a daemonised grandchild cannot outlive
its test.

Protocol (newline-delimited JSON):
  harness -> launcher: one config object, then {"input": str} per test, or {"stop": true}
  launcher -> harness: {"ready": true, "setup": {...}} after setup, then one result object per test.
The harness compares outputs itself; expected outputs never enter the sandbox.

Stdlib only: this file must run with `-S` (no site-packages) inside the namespaces.
"""

import builtins
import contextlib
import ctypes
import io
import json
import os
import resource
import selectors
import signal
import sys
import time
import traceback

# Modules LiveCodeBench puts in scope of every solution (`from m import *`, then `import m`), in its order:
# later star-imports shadow earlier ones (builtins restores `open`, `pow`, ...). Imported here once so
# the per-test fork finds them loaded.
STAR_MODULES = [
    *("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random"),
    *("statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing"),
]
PLAIN_MODULES = [m for m in STAR_MODULES if m not in ("builtins", "typing")]
PRELUDE = (
    "".join(f"from {m} import *\n" for m in STAR_MODULES)
    + "".join(f"import {m}\n" for m in PLAIN_MODULES)
    + "sys.setrecursionlimit(50000)\n"
)
for _m in STAR_MODULES:
    __import__(_m)

EXIT_MEMORY = 86  # child exit code for MemoryError (RLIMIT_AS hit inside Python)
EXIT_SETUP = 87  # the jail could not be entered: never run the code then
RESULT_FD = 3  # functional results travel on their own fd so prints cannot corrupt them
STDERR_KEEP = 4096

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
CLONE_NEWUSER = 0x10000000
TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # world-writable on typical hosts
WORKDIR = "/tmp/work"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None
    _check(
        _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}"
    )


def _mountpoints() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            raw = line.split()[4]
            points.append(raw.encode().decode("unicode_escape"))  # mountinfo escapes spaces as \040
    return sorted(set(points), key=len)


def _blocking_ancestor(path: str) -> str | None:
    """First directory on the way to `path` that others cannot traverse (e.g. /root, 0700)."""
    cur = "/"
    for part in path.strip("/").split("/"):
        cur = os.path.join(cur, part)
        if os.path.isdir(cur) and not os.stat(cur).st_mode & 0o001:
            return cur
    return None


def expose_paths(paths: list[str]) -> list[str]:
    """Make the interpreter reachable for the unprivileged uid when it lives under a private directory
    (pyenv in /root): a tmpfs replaces that directory and only the needed subtrees are bound back,
    so nothing else of it becomes visible."""
    by_ancestor: dict[str, list[str]] = {}
    for p in paths:
        a = _blocking_ancestor(p) if os.path.isdir(p) else None
        if a is not None:
            by_ancestor.setdefault(a, []).append(p)
    exposed = []
    for ancestor, subs in sorted(by_ancestor.items()):
        fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in subs}  # still reachable before the tmpfs
        _mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=755")
        for p, fd in sorted(fds.items()):
            os.makedirs(p, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            os.close(fd)
            exposed.append(p)
    return exposed


def setup_mounts(cfg: dict) -> dict:
    """Read-only view of the host, private tmpfs over the world-writable dirs, hidden paths."""
    info = {"remounted_ro": 0, "remount_failed": [], "tmpfs": []}
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if cfg.get("uid") is not None:
        info["exposed"] = expose_paths(cfg.get("expose_paths", []))
    for mp in _mountpoints():
        if mp.startswith(("/proc", "/sys")) or mp == "/dev" or mp.startswith("/dev/"):
            continue  # kernel filesystems: root-owned; /dev must keep /dev/null writable
        try:
            _mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
            info["remounted_ro"] += 1
        except OSError:
            info["remount_failed"].append(mp)
    size = f"size={cfg['tmpfs_bytes']},mode=1777"
    for d in TMPFS_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, size)
            info["tmpfs"].append(d)
    for p in cfg.get("hide_paths", []):
        if os.path.isdir(p):
            _mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=755")
    return info


def _drop_caps_userns() -> None:
    """Without a uid to switch to (unprivileged host user), enter a nested user namespace as uid 1000:
    the mounts belong to the parent namespace, so no capability over them survives."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"1000 {uid} 1"), ("gid_map", f"1000 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    os.setresgid(1000, 1000, 1000)
    os.setresuid(1000, 1000, 1000)


def _block_sockets() -> None:
    """Fallback when no network namespace exists: make socket creation fail inside Python."""
    import _socket
    import socket

    def refuse(*_a, **_k):
        raise PermissionError("blocked by the sandbox (no namespaces on this host)")

    class NoSocket:
        def __init__(self, *_a, **_k):
            refuse()

    for mod in (socket, _socket):
        mod.socket = NoSocket
        for name in ("create_connection", "socketpair", "fromfd", "getaddrinfo", "create_server"):
            if hasattr(mod, name):
                setattr(mod, name, refuse)
    # Without a PID namespace and uid switch, kill(-1) would reach the harness user's processes.
    os.kill = os.killpg = signal.pthread_kill = refuse


def enter_jail(cfg: dict, stdin_fd: int, out_fd: int, err_fd: int, res_fd: int | None) -> None:
    """In the forked child: fds, rlimits, identity, working directory. Raises if anything fails."""
    os.dup2(stdin_fd, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    keep = 3
    if res_fd is not None:
        os.dup2(res_fd, RESULT_FD)
        keep = RESULT_FD + 1
    os.closerange(keep, 65536)
    if not cfg["pidns"]:
        os.setpgid(0, 0)  # without a PID namespace the launcher kills this group instead
    cpu = int(cfg["timeout_s"]) + 1
    limits = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, cfg["memory_bytes"], cfg["memory_bytes"]),
        (resource.RLIMIT_NPROC, cfg["max_procs"], cfg["max_procs"]),
        (resource.RLIMIT_FSIZE, cfg["max_file_bytes"], cfg["max_file_bytes"]),
        (resource.RLIMIT_NOFILE, cfg["max_open_files"], cfg["max_open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    if cfg.get("uid") is not None:
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
    elif cfg.get("userns_drop"):
        _drop_caps_userns()
    if os.geteuid() == 0 or os.getuid() == 0:
        raise OSError("refusing to run solution code as root")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")  # after the uid change
    os.chdir(cfg["workdir"])
    os.umask(0o077)
    if cfg.get("block_sockets"):
        _block_sockets()
    sys.path.extend(cfg.get("sys_path", []))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGXCPU):
        signal.signal(sig, signal.SIG_DFL)


def _fresh_stdio() -> None:
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8", newline="\n"
    )
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 16), encoding="utf-8", newline="\n"
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )


_BIG_INT = 10**4000  # beyond Python's int->str digit limit: send as hex


def encode_value(x, top: bool = True, depth: int = 0):
    """JSON with tags, so the harness rebuilds the same Python value and `==` behaves as in LCB
    (LCB turns only a top-level tuple into a list; a nested tuple or an int-keyed dict stays one)."""
    if depth > 200:
        return {"$repr": "<too deep>"}
    if type(x).__module__ == "numpy" and getattr(x, "ndim", None) == 0 and hasattr(x, "item"):
        x = x.item()  # numpy scalars compare equal to Python numbers in LCB
    if x is None or isinstance(x, (bool, str, float)):
        return x
    if isinstance(x, int):
        return {"$int": hex(x)} if abs(x) >= _BIG_INT else int(x)
    if isinstance(x, tuple) and not top:
        return {"$tuple": [encode_value(v, False, depth + 1) for v in x]}
    if isinstance(x, (list, tuple)):
        return [encode_value(v, False, depth + 1) for v in x]
    if isinstance(x, dict):
        return {
            "$dict": [
                [encode_value(k, False, depth + 1), encode_value(v, False, depth + 1)] for k, v in x.items()
            ]
        }
    if isinstance(x, (set, frozenset)):
        return {"$set": [encode_value(v, False, depth + 1) for v in x]}
    return {"$repr": repr(x)[:1000], "$type": type(x).__name__}


def run_solution(cfg: dict, test_input: str) -> int:
    """Child body after enter_jail: returns the exit code."""
    _fresh_stdio()
    functional = cfg["mode"] == "functional"
    g = {"__name__": "__main__" if not functional else "solution", "__builtins__": builtins}
    try:
        exec(PRELUDE, g)
        code = compile(cfg["code"], "<solution>", "exec")
        try:
            exec(code, g)
        except SystemExit:
            if functional:
                raise
        if functional:
            args = [json.loads(line) for line in test_input.split("\n")]
            solution = g.get("Solution")
            if solution is None:
                raise NameError("no class Solution defined")
            result = getattr(solution(), cfg["func_name"])(*args)
            payload = json.dumps(encode_value(result)).encode()
            view = memoryview(payload)
            while view:
                view = view[os.write(RESULT_FD, view) :]
        sys.stdout.flush()
        return 0
    except MemoryError:
        return EXIT_MEMORY
    except BaseException:
        try:
            traceback.print_exc()
            sys.stdout.flush()
        except BaseException:
            pass
        return 1


def _kill_rest(cfg: dict, pid: int) -> None:
    try:
        if cfg["pidns"]:
            os.kill(-1, signal.SIGKILL)  # as PID 1: every other process in this namespace
            return
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cfg.get("uid") is not None:  # no PID namespace: a helper with the sandbox's own uid kills
        helper = os.fork()  # every process of that uid, including ones that left the group
        if helper == 0:
            try:
                os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(helper, 0)


def _reap_all(cfg: dict, pid: int) -> int | None:
    status = None
    with contextlib.suppress(ChildProcessError):
        _, status = os.waitpid(pid, 0)
    # Orphans re-parent to us (PID 1, or a subreaper without a PID namespace). All were SIGKILLed,
    # so waiting is bounded; only a non-root fallback (no uid of its own) may leave escapees running.
    block = 0 if cfg["pidns"] or cfg.get("uid") is not None else os.WNOHANG
    while True:
        try:
            if os.waitpid(-1, block) == (0, 0):
                break
        except ChildProcessError:
            break
    return status


class _Streams:
    """Capped readers for the child's pipes. stdout and the result pipe count against the output
    limit; stderr keeps only its tail but counts too, so a flood there cannot stall the child."""

    def __init__(self, fds: dict[str, int | None], cap: int) -> None:
        self.cap = cap
        self.fds = {name: fd for name, fd in fds.items() if fd is not None}
        self.bufs = {name: bytearray() for name in self.fds}
        self.err_total = 0
        self.over = False
        self.sel = selectors.DefaultSelector()
        for name, fd in self.fds.items():
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, name)

    def read(self, name: str) -> bool:
        """Read one chunk; False at EOF or when nothing is ready."""
        try:
            chunk = os.read(self.fds[name], 1 << 16)
        except BlockingIOError:
            return False
        if not chunk:
            self.sel.unregister(self.fds[name])
            return False
        buf = self.bufs[name]
        buf += chunk
        if name == "stderr":
            self.err_total += len(chunk)
            if len(buf) > 2 * STDERR_KEEP:
                del buf[:-STDERR_KEEP]
            self.over = self.over or self.err_total > self.cap
        else:
            self.over = self.over or len(buf) > self.cap
        return True

    def drain(self) -> None:
        for name in self.fds:
            while not self.over and self.fds[name] in self.sel.get_map() and self.read(name):
                pass

    def close(self) -> None:
        self.sel.close()
        for fd in self.fds.values():
            os.close(fd)


def run_test(cfg: dict, test_input: str) -> dict:
    stdin_fd = os.memfd_create("stdin")
    view = memoryview(test_input.encode())
    while view:
        view = view[os.write(stdin_fd, view) :]
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe() if cfg["mode"] == "functional" else (None, None)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            enter_jail(cfg, stdin_fd, out_w, err_w, res_w)
        except BaseException as e:
            try:
                os.write(2, f"sandbox setup failed: {e!r}\n".encode())  # fd 2 is err_w once dup2'd
            finally:
                os._exit(EXIT_SETUP)
        code = 1
        try:
            code = run_solution(cfg, test_input)
        finally:
            os._exit(code)
    for fd in (stdin_fd, out_w, err_w, res_w):
        if fd is not None:
            os.close(fd)
    streams = _Streams({"stdout": out_r, "stderr": err_r, "result": res_r}, cfg["max_output_bytes"])
    pidfd = os.pidfd_open(pid)
    streams.sel.register(pidfd, selectors.EVENT_READ, "exit")
    deadline = t0 + cfg["timeout_s"]
    timed_out = exited = False
    elapsed = None
    while not (exited or streams.over):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        for key, _ in streams.sel.select(remaining):
            if key.data == "exit":
                exited = True
                elapsed = time.monotonic() - t0
            else:
                streams.read(key.data)
    _kill_rest(cfg, pid)
    elapsed = elapsed if elapsed is not None else time.monotonic() - t0
    status = _reap_all(cfg, pid)
    streams.drain()  # what the child wrote just before it exited
    streams.sel.unregister(pidfd)
    os.close(pidfd)
    streams.close()
    return _result(cfg, status, timed_out, streams, elapsed)


def _result(cfg: dict, status: int | None, timed_out: bool, streams: _Streams, elapsed: float) -> dict:
    exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
    sig = -exit_code if exit_code is not None and exit_code < 0 else None
    if timed_out or sig == signal.SIGXCPU:
        kind = "timeout"
    elif streams.over:
        kind = "output_limit"
    elif exit_code == EXIT_MEMORY:
        kind = "memory"
    elif exit_code == EXIT_SETUP:
        kind = "setup_error"
    elif exit_code == 0:
        kind = "ok"
    else:
        kind = "runtime_error"
    out = streams.bufs["stdout"]
    keep = len(out) if kind == "ok" else 1024  # full output only when it will be compared
    result = {
        "status": kind,
        "exit_code": exit_code,
        "signal": sig,
        "time_s": round(elapsed, 4),
        "stdout": bytes(out[:keep]).decode("utf-8", "replace"),
        "stdout_bytes": len(out),
        "stderr": bytes(streams.bufs["stderr"][-STDERR_KEEP:]).decode("utf-8", "replace"),
    }
    if "result" in streams.bufs:
        result["result"] = streams.bufs["result"].decode("utf-8", "replace") if kind == "ok" else None
    return result


def _send(obj: dict) -> None:
    sys.stdout.buffer.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
    sys.stdout.buffer.flush()


def main() -> int:
    line = sys.stdin.buffer.readline()
    if not line:
        return 2
    cfg = json.loads(line)
    if cfg.get("block_sockets"):  # import while still privileged: the uid may not read the stdlib
        import _socket  # noqa: F401
        import socket  # noqa: F401
    setup = {"pid": os.getpid()}
    if not cfg["pidns"]:  # collect orphaned grandchildren instead of leaving zombies to the host init
        _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    if cfg["mounts"]:
        setup.update(setup_mounts(cfg))
    os.makedirs(cfg["workdir"], exist_ok=True)
    if cfg.get("uid") is not None:
        os.chown(cfg["workdir"], cfg["uid"], cfg["gid"])
    os.chmod(cfg["workdir"], 0o700)
    _send({"ready": True, "setup": setup})
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            break
        msg = json.loads(line)
        if msg.get("stop"):
            break
        _send(run_test(cfg, msg["input"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
