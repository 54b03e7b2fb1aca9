"""Harness side of the sandbox: one sandbox (launcher process tree) per solution, tests fed one at a time,
outputs compared here, stop at the first failing test (as LiveCodeBench does), and a bounded thread
pool for judging many solutions at once. Each pool slot owns a uid, so RLIMIT_NPROC of one sandbox
never starves another.

Generated code is hostile: it never runs in this process. Everything it produces is read through
capped buffers, and the whole process group is SIGKILLed when a session ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Literal

from .compare import functional_matches, stdin_matches
from .isolation import ENV_FORCE, MINIMAL_ENV, Isolation, Mode, candidates


class Status(StrEnum):
    PASS = "pass"
    WRONG_ANSWER = "wrong_answer"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 6.0  # per test, wall clock (LCB's default); CPU rlimit is this + 1 s
    memory_mb: int = 2048  # RLIMIT_AS
    max_output_bytes: int = 16 << 20  # stdout (and stderr) beyond this: killed, wrong answer
    max_procs: int = 32  # RLIMIT_NPROC for the sandbox uid (threads count)
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE
    max_open_files: int = 64  # RLIMIT_NOFILE
    tmpfs_mb: int = 64  # private /tmp (RAM-backed) inside the sandbox


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class

    input: str
    output: str


@dataclass(frozen=True)
class Job:
    code: str
    tests: tuple[TestCase, ...]
    mode: Literal["stdin", "functional"] = "stdin"
    func_name: str | None = None


@dataclass(frozen=True)
class TestOutcome:
    index: int
    status: str  # a Status, or "ok" when run without comparison
    reason: str
    time_s: float | None = None
    exit_code: int | None = None
    stdout: str = ""  # the full output only when compare=False; else a head for diagnostics
    stderr: str = ""


@dataclass(frozen=True)
class JudgeResult:
    status: Status
    passed: int
    total: int
    reason: str
    tests: tuple[TestOutcome, ...] = ()
    isolation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


_LAUNCHER_TO_STATUS = {
    "timeout": Status.TIMEOUT,
    "memory": Status.MEMORY_LIMIT,
    "runtime_error": Status.RUNTIME_ERROR,
    "setup_error": Status.RUNTIME_ERROR,
    "output_limit": Status.WRONG_ANSWER,
}
_SLACK_S = 5.0  # harness-side deadline beyond the launcher's own, for start-up and teardown


class SandboxError(RuntimeError):
    """The sandbox itself misbehaved (not the solution)."""


class _Session:
    """One launcher process tree. Always SIGKILLs its whole process group on close."""

    def __init__(self, iso: Isolation, cfg: dict, line_cap: int) -> None:
        self.line_cap = line_cap
        self.proc = subprocess.Popen(
            iso.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=MINIMAL_ENV,
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
        self.buf = bytearray()
        self.err = bytearray()
        self.sel = selectors.DefaultSelector()
        for f, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            os.set_blocking(f.fileno(), False)
            self.sel.register(f.fileno(), selectors.EVENT_READ, tag)
        os.set_blocking(self.proc.stdin.fileno(), False)
        try:
            self.send(cfg, deadline=time.monotonic() + 30)
        except BaseException:
            self.close()
            raise

    def send(self, obj: dict, deadline: float) -> None:
        data = memoryview(json.dumps(obj).encode() + b"\n")
        fd = self.proc.stdin.fileno()
        with selectors.DefaultSelector() as wsel:
            wsel.register(fd, selectors.EVENT_WRITE)
            while data:
                if not wsel.select(max(0.0, deadline - time.monotonic())):
                    raise SandboxError("launcher stopped reading its input")
                try:
                    data = data[os.write(fd, data) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError as e:
                    raise SandboxError(f"launcher exited early: {self.stderr_tail()}") from e

    def recv(self, deadline: float) -> dict | None:
        """Next JSON line from the launcher, or None on EOF / deadline."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                return json.loads(line)
            if len(self.buf) > self.line_cap:
                raise SandboxError("launcher reply exceeds its cap")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sel.get_map():
                return None
            for key, _ in self.sel.select(remaining):
                try:
                    chunk = os.read(key.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.sel.unregister(key.fd)
                    if key.data == "out":
                        return None
                elif key.data == "out":
                    self.buf += chunk
                else:
                    self.err = (self.err + chunk)[-4096:]

    def stderr_tail(self) -> str:
        return self.err.decode("utf-8", "replace")[-1000:]

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # before wait(): the group id cannot be reused yet
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                f.close()
        self.proc.wait()


def _sys_path() -> list[str]:
    """site-packages of this interpreter, so solutions may import numpy etc.; no .pth files run."""
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return sorted(p for p in paths if os.path.isdir(p))


def _config(job: Job, limits: Limits, iso: Isolation, slot: int, workdir: str, hide: Sequence[str]) -> dict:
    uid = iso.uid_for(slot)
    return {
        "code": job.code,
        "mode": job.mode,
        "func_name": job.func_name,
        "timeout_s": limits.timeout_s,
        "memory_bytes": limits.memory_mb << 20,
        "max_output_bytes": limits.max_output_bytes,
        "max_procs": limits.max_procs,
        "max_file_bytes": limits.max_file_bytes,
        "max_open_files": limits.max_open_files,
        "tmpfs_bytes": limits.tmpfs_mb << 20,
        "uid": uid,
        "gid": uid,
        "pidns": iso.namespaces,
        "mounts": iso.namespaces,
        "userns_drop": iso.mode == "userns",
        "block_sockets": not iso.namespaces,
        "workdir": workdir,
        "hide_paths": [str(p) for p in hide],
        "sys_path": _sys_path(),
        # the interpreter's own tree must be readable by the sandbox uid (pyenv lives in /root)
        "expose_paths": sorted({sys.base_prefix, sys.prefix, *_sys_path()}),
    }


def _outcome(i: int, raw: dict, test: TestCase, job: Job, compare: bool) -> TestOutcome:
    kind = raw["status"]
    common = {"time_s": raw.get("time_s"), "exit_code": raw.get("exit_code"), "stderr": raw.get("stderr", "")}
    if kind != "ok":
        status = _LAUNCHER_TO_STATUS[kind]
        reason = {
            "timeout": f"time limit exceeded on test {i}",
            "memory": f"memory limit exceeded on test {i}",
            "output_limit": f"output limit exceeded on test {i} ({raw.get('stdout_bytes')}+ bytes)",
            "setup_error": f"sandbox setup failed: {raw.get('stderr', '')[-300:]}",
        }.get(kind)
        if reason is None:
            sig = raw.get("signal")
            last = (raw.get("stderr") or "").strip().splitlines()[-1:] or [""]
            reason = f"runtime error on test {i}: " + (f"killed by signal {sig}" if sig else last[0][:300])
        return TestOutcome(i, status, reason, stdout=raw.get("stdout", "")[:1024], **common)
    if not compare:
        return TestOutcome(i, "ok", "ran", stdout=raw.get("stdout", ""), **common)
    if job.mode == "functional":
        ok, why = functional_matches(raw.get("result"), test.output)
    else:
        ok, why = stdin_matches(raw.get("stdout", ""), test.output)
    status = Status.PASS if ok else Status.WRONG_ANSWER
    reason = why if ok else f"wrong answer on test {i}: {why}"
    return TestOutcome(i, status, reason, stdout=raw.get("stdout", "")[:1024], **common)


def judge(
    job: Job,
    limits: Limits | None = None,
    *,
    isolation: Isolation | None = None,
    slot: int = 0,
    compare: bool = True,
    stop_on_failure: bool = True,
    hide_paths: Sequence[str] = (),
) -> JudgeResult:
    """Run one solution against its tests in a fresh sandbox. ``compare=False`` only runs the tests
    (each outcome then carries the full stdout), for probes and containment tests. ``hide_paths``
    (e.g. the benchmark data, which may hold hidden tests) appear empty inside the namespaces."""
    limits = limits or Limits()
    iso = isolation or detect()
    if job.mode == "functional" and not job.func_name:
        raise ValueError("functional jobs need func_name")
    tmp = tempfile.mkdtemp(prefix="rope-sbx-") if not iso.namespaces else None
    if tmp is not None:
        uid = iso.uid_for(slot)
        os.chmod(tmp, 0o700)
        if uid is not None:
            os.chown(tmp, uid, uid)
    cfg = _config(job, limits, iso, slot, tmp or "/tmp/work", hide_paths)
    # A reply carries at most the output cap (JSON escaping can grow it) plus a small frame.
    line_cap = 7 * limits.max_output_bytes + (1 << 20)
    outcomes: list[TestOutcome] = []
    session = _Session(iso, cfg, line_cap)
    try:
        ready = session.recv(time.monotonic() + 30)
        if not ready or not ready.get("ready"):
            raise SandboxError(f"launcher failed to start: {session.stderr_tail()}")
        for i, test in enumerate(job.tests):
            deadline = time.monotonic() + limits.timeout_s + _SLACK_S
            session.send({"input": test.input}, deadline)
            raw = session.recv(deadline)
            if raw is None:  # the launcher died or hung: count it against the solution
                late = time.monotonic() >= deadline
                raw = {"status": "timeout" if late else "runtime_error", "stderr": session.stderr_tail()}
                outcomes.append(_outcome(i, raw, test, job, compare))
                break
            outcomes.append(_outcome(i, raw, test, job, compare))
            if stop_on_failure and outcomes[-1].status not in (Status.PASS, "ok"):
                break
    finally:
        session.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return _summarise(outcomes, len(job.tests), iso)


def _summarise(outcomes: list[TestOutcome], total: int, iso: Isolation) -> JudgeResult:
    passed = sum(o.status in (Status.PASS, "ok") for o in outcomes)
    failed = next((o for o in outcomes if o.status not in (Status.PASS, "ok")), None)
    if failed is not None:
        status, reason = Status(failed.status), failed.reason
    elif total == 0:
        status, reason = Status.WRONG_ANSWER, "no tests"
    else:
        status, reason = Status.PASS, f"passed {passed}/{total} tests"
    return JudgeResult(status, passed, total, reason, tuple(outcomes), iso.describe())


def judge_many(
    jobs: Sequence[Job],
    limits: Limits | None = None,
    *,
    workers: int | None = None,
    isolation: Isolation | None = None,
    hide_paths: Sequence[str] = (),
) -> list[JudgeResult]:
    """Judge many solutions in parallel with at most ``workers`` sandboxes alive (default: CPU count).
    Results come back in input order."""
    iso = isolation or detect()
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    slots: queue.Queue[int] = queue.Queue()
    for s in range(workers):
        slots.put(s)

    def one(job: Job) -> JudgeResult:
        slot = slots.get()
        try:
            return judge(job, limits, isolation=iso, slot=slot, hide_paths=hide_paths)
        except SandboxError as e:
            return JudgeResult(
                Status.RUNTIME_ERROR, 0, len(job.tests), f"sandbox error: {e}", (), iso.describe()
            )
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(one, jobs))


@functools.cache
def detect(force: Mode | None = None) -> Isolation:
    """Strongest mode that passes a real probe (cached per process); ``ROPE_EVAL_SANDBOX`` forces one."""
    forced = force or os.environ.get(ENV_FORCE) or None
    for iso in candidates(force):
        if forced or _probe(iso):
            return iso
    raise RuntimeError(f"sandbox mode {forced!r} is not available on this host")


def _probe(iso: Isolation) -> bool:
    job = Job(code="import os\nprint(os.getuid() != 0, os.getppid())", tests=(TestCase("", ""),))
    try:
        res = judge(job, Limits(timeout_s=10), isolation=iso, compare=False)
    except (OSError, SandboxError):  # e.g. unshare present but not permitted in a container
        return False
    out = res.tests[0].stdout.split() if res.tests else []
    # namespaced: not root any more, and the parent is the launcher as PID 1
    return res.tests[0].status == "ok" and (iso.mode == "none" or out == ["True", "1"])
