"""Which RoPE implementation actually ran: the count files the plugin writes in every vLLM process,
read back without torch, and the verdict on them.

The plugin (`eval_harness.plugin.counters`) writes one `counts-<host>-<pid>.json` per process into the
server's counts directory. This module is the harness's side of that contract, so that `diff`, `gate` and
`report` can judge a run without importing torch or vLLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

COUNTS_GLOB = "counts-*.json"


@dataclass
class ProcessCounts:
    """One process's counts, as written to its file."""

    pid: int
    host: str
    path: str
    counts: dict[str, int] = field(default_factory=dict)
    updated: float = 0.0


class CountsError(ValueError):
    """A counts directory that cannot be read, or a count file that is corrupt."""


def read_counts(directory: Path) -> list[ProcessCounts]:
    """All processes' counts in a counts directory (empty if none ran the model)."""
    out = []
    for f in sorted(Path(directory).glob(COUNTS_GLOB)):
        try:
            out.append(ProcessCounts(**json.loads(f.read_text())))
        except (OSError, ValueError, TypeError) as exc:
            raise CountsError(f"corrupt path-count file {f}: {exc}") from exc
    return out


def total_counts(records: list[ProcessCounts]) -> dict[str, int]:
    total: dict[str, int] = {}
    for rec in records:
        for name, n in rec.counts.items():
            total[name] = total.get(name, 0) + n
    return total


class Status(StrEnum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"  # no counts to judge (attach mode without a counts directory)
    FAILED = "failed"


@dataclass(frozen=True)
class Verification:
    status: Status
    detail: str
    counts: dict[str, int] | None = None

    @property
    def verified(self) -> bool:
        return self.status is Status.VERIFIED

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED


def verify(path: str, records: list[ProcessCounts] | None) -> Verification:
    """Verified only when the requested implementation ran, and nothing else did."""
    if records is None:
        return Verification(Status.UNVERIFIED, "attach mode: no call counts")
    counts = total_counts(records)
    if counts.get(path, 0) <= 0:
        return Verification(Status.FAILED, f"requested path {path} never ran (counts {counts})", counts)
    others = {k: v for k, v in counts.items() if k != path and v}
    if others:
        return Verification(Status.FAILED, f"other implementations ran too ({others})", counts)
    return Verification(Status.VERIFIED, f"{counts[path]} calls of {path}", counts)


def verify_instances(
    path: str, by_instance: dict[str, list[ProcessCounts]], served: set[str]
) -> Verification:
    """An arm served by one or more server starts (a resumed run): every start that produced a sample
    must verify. A start that served nothing (stopped during start-up) proves nothing and needs nothing."""
    if not served:
        return Verification(Status.FAILED, f"no server start of {path} produced a sample")
    missing = sorted(served - set(by_instance))
    if missing:
        return Verification(Status.FAILED, f"server starts {missing} served samples but left no call counts")
    for instance in sorted(served):
        v = verify(path, by_instance[instance])
        if not v.verified:
            return Verification(v.status, f"server start {instance}: {v.detail}", v.counts)
    counts = total_counts([r for i in sorted(served) for r in by_instance[i]])
    starts = f" over {len(served)} server starts" if len(served) > 1 else ""
    return Verification(Status.VERIFIED, f"{counts.get(path, 0)} calls of {path}{starts}", counts)
