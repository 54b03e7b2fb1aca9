"""The code sandbox: verdict categories, LCB comparison rules, the bounded pool, and containment of
hostile solutions (fork bomb, memory bomb, infinite loop, writes outside the work dir, network,
the harness's environment, killing the parent, 100 MB of output). Each hostile run must get the right
verdict and leave the harness and the host unharmed."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from eval_harness.sandbox import Job, Limits, Status, TestCase, detect, judge, judge_many, stdin_matches
from eval_harness.sandbox.compare import functional_matches
from eval_harness.sandbox.isolation import Isolation

REPO = Path(__file__).resolve().parents[1]
FAST = Limits(timeout_s=1.0, memory_mb=512)


@pytest.fixture(scope="module")
def iso() -> Isolation:
    return detect()


def run(code: str, iso: Isolation, stdin: str = "", limits: Limits = FAST, expected: str | None = None):
    """One test; without `expected` the output is not compared (outcome status "ok" when it ran)."""
    job = Job(code=code, tests=(TestCase(stdin, expected or ""),))
    res = judge(job, limits, isolation=iso, compare=expected is not None)
    return res, res.tests[0]


def sandbox_alive_uids(uid: int | None) -> list[int]:
    """Host processes still running as the sandbox uid (there must be none after a run)."""
    if uid is None:
        return []
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            status = (p / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            pids.append(int(p.name))
    return pids


def assert_harness_healthy(iso: Isolation) -> None:
    res, _ = run("print(int(input()) * 2)", iso, "21\n", expected="42\n")
    assert res.status == Status.PASS


# ---- comparison rules ------------------------------------------------------------------------------
def test_stdin_rule_follows_lcb():
    assert stdin_matches("3\n", "3")[0]
    assert stdin_matches("  1 2 3  \r\n\n\n", "1 2 3\n")[0]  # whole-output and per-line strip
    assert stdin_matches("1.0 2\n", "1 2.000")[0]  # Decimal equality
    assert stdin_matches("1e3\n", "1000")[0]
    assert not stdin_matches("0.3333333\n", "0.33333333")[0]  # no epsilon: LCB compares exactly
    assert not stdin_matches("1\n2\n", "1 2")[0]  # line counts differ
    assert not stdin_matches("Yes\n", "yes")[0]
    assert not stdin_matches("", "0")[0]


def test_functional_rule_follows_lcb():
    assert functional_matches("[1, 2]", "[1, 2]")[0]
    assert functional_matches("true", "true")[0]
    assert functional_matches("1", "1.0")[0]  # 1 == 1.0 in Python, as in LCB
    assert not functional_matches('[{"$tuple": [1, 2]}]', "[[1, 2]]")[0]  # nested tuple != list (LCB)
    assert not functional_matches('{"$dict": [[1, 2]]}', '{"1": 2}')[0]  # int keys stay ints
    assert not functional_matches('{"$repr": "<obj>", "$type": "X"}', "null")[0]
    assert not functional_matches(None, "1")[0]


# ---- verdict categories ----------------------------------------------------------------------------
def test_stdin_verdicts(iso):
    ok = "import sys\nprint(sum(map(int, sys.stdin.read().split())))"
    tests = (TestCase("1 2\n", "3\n"), TestCase("5 5\n", "10\n"))
    assert judge(Job(ok, tests), FAST, isolation=iso).status == Status.PASS
    res = judge(Job("print(3)", tests), FAST, isolation=iso)
    assert (res.status, res.passed, len(res.tests)) == (
        Status.WRONG_ANSWER,
        1,
        2,
    )  # stops at the first failure
    res = judge(Job("raise ValueError('boom')", tests), FAST, isolation=iso)
    assert res.status == Status.RUNTIME_ERROR and "ValueError: boom" in res.reason
    assert judge(Job("def f(:", tests), FAST, isolation=iso).status == Status.RUNTIME_ERROR
    # sys.exit and an `if __name__ == "__main__"` guard behave as in a real run
    guarded = "import sys\nif __name__ == '__main__':\n    print(3)\n    sys.exit(0)\nprint('unreached')"
    assert judge(Job(guarded, tests[:1]), FAST, isolation=iso).status == Status.PASS
    # LCB's prelude: sys, math, collections... are in scope without imports
    prelude = "print(sum(map(int, sys.stdin.read().split())) + floor(0.5) + len(deque()))"
    assert judge(Job(prelude, tests), FAST, isolation=iso).status == Status.PASS


def test_functional_verdicts(iso):
    tests = (TestCase("[1, 2, 3]\n2", "[2, 4, 6]"), TestCase("[]\n5", "[]"))
    cls = "class Solution:\n    def scale(self, nums: List[int], k: int) -> List[int]:\n        return {}\n"
    run_ = lambda body: judge(Job(cls.format(body), tests, "functional", "scale"), FAST, isolation=iso)
    assert run_("[x * k for x in nums]").status == Status.PASS
    assert run_("tuple(x * k for x in nums)").status == Status.PASS  # top-level tuple -> list
    assert run_("[x + k for x in nums]").status == Status.WRONG_ANSWER
    assert run_("[x * k for x in nums] + [print('debug') or 0][:0]").status == Status.PASS  # prints ignored
    assert run_("[x / 0 for x in nums]").status == Status.RUNTIME_ERROR
    res = judge(Job("def scale(nums, k): return nums", tests, "functional", "scale"), FAST, isolation=iso)
    assert res.status == Status.RUNTIME_ERROR and "Solution" in res.reason


def test_timeout_and_memory_verdicts(iso):
    res, out = run("while True:\n    pass", iso, expected="1")
    assert res.status == Status.TIMEOUT and out.time_s < FAST.timeout_s + 1
    res, _ = run("import time\ntime.sleep(30)", iso, expected="1")  # wall clock, not CPU
    assert res.status == Status.TIMEOUT
    res, _ = run("x = bytearray(10 ** 10)", iso, expected="1")
    assert res.status == Status.MEMORY_LIMIT


def test_pool_is_bounded_and_ordered(iso):
    jobs = [Job(f"import time\ntime.sleep(0.4)\nprint({i})", (TestCase("", f"{i}\n"),)) for i in range(6)]
    t0 = time.monotonic()
    results = judge_many(jobs, FAST, workers=2, isolation=iso)
    dt = time.monotonic() - t0
    assert [r.status for r in results] == [Status.PASS] * 6  # each matched its own expected output
    assert 1.2 <= dt < 6  # 6 sleeps of 0.4 s through 2 slots: at least 3 rounds


def test_isolation_is_recorded(iso):
    res, _ = run("print(1)", iso, expected="1")
    assert res.isolation["mode"] == iso.mode and "network" in res.isolation


# ---- containment -----------------------------------------------------------------------------------
FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


def test_fork_bomb(iso):
    res, out = run(FORK_BOMB, iso, expected="1")
    assert res.status == Status.TIMEOUT
    assert sandbox_alive_uids(iso.uid_for(0)) == []
    assert_harness_healthy(iso)


def test_memory_bomb(iso):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res, _ = run("a = []\nwhile True:\n    a.append(bytearray(10 ** 7))", iso, expected="1")
    assert res.status == Status.MEMORY_LIMIT
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: not in the harness
    assert_harness_healthy(iso)


def test_infinite_loop_with_escaping_child(iso):
    """A daemonised grandchild (new session) must not outlive the test."""
    code = "import os\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        pass\n"
    code += "while True:\n    pass\n"
    res, _ = run(code, iso, expected="1")
    assert res.status == Status.TIMEOUT
    assert sandbox_alive_uids(iso.uid_for(0)) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the namespace write protection is tested as root")
def test_writes_outside_workdir_do_not_reach_host(iso, tmp_path):
    tag = uuid.uuid4().hex
    targets = [
        REPO / f"evil_{tag}",
        tmp_path / f"evil_{tag}",
        Path(f"/tmp/evil_{tag}"),
        Path(f"/var/tmp/evil_{tag}"),
        Path(f"/dev/shm/evil_{tag}"),
        Path(f"/root/evil_{tag}"),
        Path(f"/etc/evil_{tag}"),
        Path.home() / f"evil_{tag}",
    ]
    code = "\n".join(
        ["import os", "for p in %r:" % [str(t) for t in targets]]
        + [
            "    try:",
            "        with open(p, 'w') as f:",
            "            f.write('pwned')",
            "        print('wrote', p)",
            "    except OSError as e:",
            "        print('refused', p, type(e).__name__)",
            "open('scratch.txt', 'w').write('ok')",
            "print('cwd', os.getcwd(), open('scratch.txt').read())",
        ]
    )
    res, out = run(code, iso)
    assert out.status == "ok" and "cwd" in out.stdout and out.stdout.rstrip().endswith("ok")
    leaked = [t for t in targets if t.exists()]
    for t in leaked:
        t.unlink()
    assert leaked == []
    # an uncaught refused write is a runtime error
    res, _ = run(f"open({str(REPO / ('evil2_' + tag))!r}, 'w').write('x')", iso, expected="1")
    assert res.status == Status.RUNTIME_ERROR and not (REPO / f"evil2_{tag}").exists()


def test_network_connect_is_blocked(iso):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('x')"
        res, _ = run(code, iso, expected="x")
        assert res.status == Status.RUNTIME_ERROR
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
        res, _ = run("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", iso, expected="x")
        assert res.status == Status.RUNTIME_ERROR
    finally:
        listener.close()


def test_harness_environment_is_not_readable(iso, monkeypatch):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("ROPE_EVAL_TEST_SECRET", secret)
    code = (
        "import os\nprint(dict(os.environ))\n"
        f"pids = ['self', '1', str(os.getppid()), '{os.getpid()}', '{os.getppid()}'] + os.listdir('/proc')\n"
        "for pid in pids:\n"
        "    try:\n"
        "        print(pid, open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except (OSError, ValueError) as e:\n"
        "        print(pid, type(e).__name__)\n"
    )
    _, out = run(code, iso)
    assert out.status == "ok" and "PATH" in out.stdout
    assert secret not in out.stdout and "ROPE_EVAL_TEST_SECRET" not in out.stdout


def test_killing_the_parent_harms_nobody(iso):
    sentinel = subprocess.Popen(["sleep", "60"])
    try:
        code = (
            "import os, signal\n"
            f"for pid in (os.getppid(), 1, {os.getpid()}, {sentinel.pid}, -1):\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "        print('sent', pid)\n"
            "    except OSError as e:\n"
            "        print('refused', pid, type(e).__name__)\n"
        )
        res, out = run(code, iso)
        assert out.status in ("ok", Status.RUNTIME_ERROR)
        assert sentinel.poll() is None, "a host process was killed from the sandbox"
        res, _ = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint(1)", iso, expected="1")
        assert res.status in (Status.PASS, Status.RUNTIME_ERROR)  # whatever it is, the harness lives on
        assert_harness_healthy(iso)
    finally:
        sentinel.send_signal(signal.SIGKILL)
        sentinel.wait()


def test_hundred_megabytes_of_output(iso):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    code = "import sys\nchunk = 'x' * 10 ** 6\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
    res, out = run(code, iso, limits=Limits(timeout_s=5), expected="x")
    assert res.status == Status.WRONG_ANSWER and "output limit" in res.reason
    assert time.monotonic() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 80_000  # KiB: cap is 16 MiB
    res, _ = run("import sys\nsys.stderr.write('e' * 10 ** 8)", iso, limits=Limits(timeout_s=5), expected="x")
    assert res.status == Status.WRONG_ANSWER
    assert_harness_healthy(iso)


def test_file_size_limit(iso):
    res, _ = run("open('big', 'w').write('x' * (64 << 20))", iso, expected="x")
    assert res.status == Status.RUNTIME_ERROR  # SIGXFSZ from RLIMIT_FSIZE


# ---- the fallback without namespaces ----------------------------------------------------------------
@pytest.fixture(scope="module")
def fallback() -> Isolation:
    return detect("none")


def test_fallback_blocks_sockets_and_says_so(fallback):
    res, _ = run("import socket\nsocket.socket()", fallback, expected="x")
    assert res.status == Status.RUNTIME_ERROR and "blocked by the sandbox" in res.reason
    assert res.isolation["network"].startswith("socket-preamble")


@pytest.mark.skipif(os.geteuid() != 0, reason="without root the fallback cannot switch uid")
def test_fallback_contains_fork_bomb_and_kill(fallback):
    res, _ = run(FORK_BOMB, fallback, expected="1")
    assert res.status == Status.TIMEOUT
    assert sandbox_alive_uids(fallback.uid_for(0)) == []
    res, _ = run("import os\nos.kill(-1, 9)", fallback, expected="1")
    assert res.status == Status.RUNTIME_ERROR
    assert_harness_healthy(fallback)


@pytest.fixture
def visible_data_dir():
    """A data directory outside /tmp and home, which the sandbox replaces with private mounts: the
    repo and ../shared may live there (a CI clone under /tmp), and hiding must be shown on a path
    the solution could otherwise read."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="rope-eval-hidden-", dir="/var/lib"))
    d.chmod(0o755)  # readable by the sandbox's unprivileged uid
    (d / "gsm8k").mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaced mounts need root")
def test_hidden_paths_are_empty_inside(iso, visible_data_dir: Path):
    """The benchmark data (which may hold hidden tests) can be hidden from solutions."""
    code = f"import os\nprint(sorted(os.listdir({str(visible_data_dir)!r})))"
    job = Job(code, (TestCase("", ""),))
    assert "gsm8k" in judge(job, FAST, isolation=iso, compare=False).tests[0].stdout
    hidden = judge(job, FAST, isolation=iso, compare=False, hide_paths=[str(visible_data_dir)])
    assert hidden.tests[0].stdout.strip() == "[]"


def test_detection_falls_back_when_namespaces_fail(monkeypatch):
    from eval_harness.sandbox.judge import _probe

    assert not _probe(Isolation("root-ns", "/bin/false"))  # e.g. unshare refused inside a container
    assert _probe(detect())
    with pytest.raises(ValueError, match="ROPE_EVAL_SANDBOX"):
        detect("chroot")
