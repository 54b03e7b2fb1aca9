"""Which containment this host allows, detected at runtime by running a real probe solution.

Modes, strongest first:
- ``root-ns``: the harness is root and util-linux ``unshare`` works. The launcher gets new PID, network,
  mount, IPC and UTS namespaces; solutions run as a dedicated unprivileged uid (so RLIMIT_NPROC holds
  and signals to the harness fail), on a read-only view of the host with private tmpfs over /tmp.
- ``userns``: not root, but unprivileged user namespaces work: the same namespaces, with a nested user
  namespace instead of a uid switch.
- ``none``: plain subprocess with rlimits, its own process group, a fresh temp dir and a Python-level
  block of sockets and signals. As root it still switches to a dedicated uid (RLIMIT_NPROC then holds,
  and a final kill(-1) as that uid reaps escapees); not as root it is weak, the same uid as the
  harness. Recorded in every verdict.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["root-ns", "userns", "none"]
MODES: tuple[Mode, ...] = ("root-ns", "userns", "none")
ENV_FORCE = "ROPE_EVAL_SANDBOX"  # force a mode, e.g. to test the fallback
LAUNCHER = Path(__file__).with_name("launcher.py")
UID_BASE = 1_000_000  # far above any real account; one uid per pool slot and harness process
MINIMAL_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class Isolation:
    mode: Mode
    unshare: str | None = None

    @property
    def namespaces(self) -> bool:
        return self.mode != "none"

    def uid_for(self, slot: int) -> int | None:
        """A uid no other sandbox of this host shares at the same time: RLIMIT_NPROC counts per uid."""
        if self.mode == "userns" or os.geteuid() != 0:
            return None  # userns: a nested namespace drops privileges instead; non-root: cannot switch
        return UID_BASE + (os.getpid() % 50_000) * 64 + slot % 64

    def command(self) -> list[str]:
        py = [sys.executable, "-I", "-S", "-B", str(LAUNCHER)]
        if self.mode == "none":
            return py
        ns = [self.unshare, "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts"]
        if self.mode == "userns":
            ns += ["--user", "--map-root-user"]
        return [*ns, "--", *py]

    def describe(self) -> dict:
        """What protects the host, for verdict metadata and the run manifest."""
        ns = self.namespaces
        return {
            "mode": self.mode,
            "network": "netns (no interfaces up)" if ns else "socket-preamble (Python-level block)",
            "processes": "pid namespace + RLIMIT_NPROC" if ns else "process group + RLIMIT_NPROC",
            "filesystem": "read-only remount + private tmpfs" if ns else "temp dir only",
            "identity": "nested user namespace"
            if self.mode == "userns"
            else ("dedicated unprivileged uid" if os.geteuid() == 0 else "harness uid (weak)"),
        }


def candidates(force: Mode | None = None) -> list[Isolation]:
    """The modes this host could run, strongest first (`ROPE_EVAL_SANDBOX` forces one). Which of them
    actually works takes a real probe, which `judge.detect` runs: probing needs the judge."""
    force = force or os.environ.get(ENV_FORCE) or None  # type: ignore[assignment]
    if force is not None and force not in MODES:
        raise ValueError(f"{ENV_FORCE}={force!r}: expected one of {MODES}")
    unshare = shutil.which("unshare") or ("/usr/bin/unshare" if os.path.exists("/usr/bin/unshare") else None)
    out = []
    for mode in [force] if force else list(MODES):
        if mode != "none" and unshare is None:
            continue
        if mode == "root-ns" and os.geteuid() != 0:
            continue
        out.append(Isolation(mode, unshare if mode != "none" else None))
    return out
