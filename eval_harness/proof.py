"""Which RoPE implementation actually ran: the count files the plugin writes in every vLLM process,
read back without torch, and the verdict on them.

The plugin (`eval_harness.plugin.counters`) writes one `counts-<host>-<pid>.json` per process into the
server's counts directory (`ROPE_EVAL_COUNTS_DIR`). This module is the harness's side of that contract, so
that `diff`, `gate` and `report` can judge a run without importing torch or vLLM.

What a count file proves, and how:
- `counts`: calls per implementation, counted *after* the implementation returned and under the name of
  what actually executed: a Triton kernel that fell back to torch counts as `triton(fallback:native)`, and
  calls of a RoPE class the plugin does not switch count as `unswitched:<Class>`.
- `models`: per model the process loaded (the `target`, and its `draft`), how many RoPE modules it holds
  (one per attention layer that applies RoPE) and which of them the plugin does not switch.
- `worker`: the process's tensor/pipeline/data-parallel ranks, so an arm can demand every rank.
- `instance`: the server start (`ROPE_EVAL_INSTANCE`) that wrote it, so a stale file cannot vouch for a
  later start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from eval_harness.paths import accepted_counts

COUNTS_GLOB = "counts-*.json"
FORMAT = 2  # 1: pid, host, path, counts, updated only
FALLBACK_MARK = "(fallback:"  # `triton(fallback:native)`: what ran when the requested kernel could not
UNSWITCHED_PREFIX = "unswitched:"  # `unswitched:Phi3LongRoPEScaledRotaryEmbedding`
# Writers flush every 0.5 s; read a directory this long after the last request has completed (or after
# the server stopped), so every process's last flush has landed and shows it idle.
SETTLE_SECONDS = 1.5
_LISTED = 3  # names shown per problem before "and N more"


@dataclass(frozen=True, order=True)
class Worker:
    """A vLLM worker's place in the parallel layout (ranks within each group)."""

    tp: int = 0
    pp: int = 0
    dp: int = 0

    def __str__(self) -> str:
        return f"tp{self.tp}/pp{self.pp}/dp{self.dp}"


def expected_workers(
    tp: int = 1, pp: int = 1, dp: int = 1, dp_ranks: Iterable[int] | None = None
) -> frozenset[Worker]:
    """Every worker a deployment of these sizes runs. `dp_ranks`: only these DP ranks (a node of a
    multi-node data-parallel deployment whose counts directory is not shared)."""
    for name, size in (("tp", tp), ("pp", pp), ("dp", dp)):
        if size < 1:
            raise ValueError(f"{name} size must be >= 1, got {size}")
    ranks = range(dp) if dp_ranks is None else sorted(set(dp_ranks))
    bad = [r for r in ranks if not 0 <= r < dp]
    if bad:
        raise ValueError(f"dp_ranks {bad} outside a data-parallel size of {dp}")
    return frozenset(Worker(t, p, d) for t in range(tp) for p in range(pp) for d in ranks)


@dataclass
class ModelCoverage:
    """The RoPE modules of one loaded model, found by walking it after loading."""

    role: str  # "target" or "draft"
    architecture: str = ""
    sites: int = 0  # modules applying RoPE, one per attention layer (vLLM shares one instance among many)
    classes: dict[str, int] = field(default_factory=dict)  # RoPE class -> sites
    unswitched: dict[str, str] = field(default_factory=dict)  # site -> class the plugin does not switch


@dataclass
class ProcessCounts:
    """One process's counts, as written to its file."""

    pid: int
    host: str
    path: str
    counts: dict[str, int] = field(default_factory=dict)
    updated: float = 0.0
    instance: str | None = None
    worker: Worker | None = None  # None: no parallel state in this process (yet)
    world_rank: int | None = None
    models: list[ModelCoverage] = field(default_factory=list)
    # Counts unchanged over the last flushes (or written at exit): no forward pass was half done.
    idle: bool = False
    format: int = 1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessCounts:
        data = dict(data)
        worker = data.pop("worker", None)
        models = data.pop("models", [])
        return cls(
            **data,
            worker=Worker(**worker) if worker is not None else None,
            models=[ModelCoverage(**m) for m in models],
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def where(self) -> str:
        """How a problem names this process."""
        who = f"{self.host}:{self.pid}"
        return f"{self.worker} ({who})" if self.worker is not None else who

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(m.role for m in self.models)


class CountsError(ValueError):
    """A counts directory that cannot be read, holds another run's files, or a count file that is corrupt."""


@dataclass(frozen=True)
class Ignored:
    file: str
    reason: str


class CountsRead(list[ProcessCounts]):
    """The count files of one server instance in a directory: a list of their records, plus the files of
    other instances that were left out (a list, so callers that took the plain list keep working)."""

    def __init__(
        self,
        records: Iterable[ProcessCounts] = (),
        directory: str = "",
        instance: str | None = None,
        ignored: Iterable[Ignored] = (),
    ):
        super().__init__(records)
        self.directory = directory
        self.instance = instance
        self.ignored = tuple(ignored)


def _load(file: Path) -> ProcessCounts:
    try:
        return ProcessCounts.from_json(json.loads(file.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise CountsError(f"corrupt path-count file {file}: {exc}") from exc


def _files(directory: Path) -> list[Path]:
    if not directory.exists():
        raise CountsError(f"counts directory {directory} does not exist")
    if not directory.is_dir():
        raise CountsError(f"counts directory {directory} is not a directory")
    try:
        return sorted(directory.glob(COUNTS_GLOB))
    except OSError as exc:
        raise CountsError(f"counts directory {directory} cannot be read: {exc}") from exc


def read_counts(directory: Path | str, instance: str | None = None) -> CountsRead:
    """The count files of one server instance (empty if no process has run the model yet).

    With `instance` (the `ROPE_EVAL_INSTANCE` the server ran with), files of any other instance, or of
    none, are left out and listed in `ignored`. Without it, a directory holding files of more than one
    instance is an error: it was shared by two launches and its files cannot be told apart."""
    directory = Path(directory)
    records, ignored = [], []
    for f in _files(directory):
        rec = _load(f)
        if instance is not None and rec.instance != instance:
            ignored.append(Ignored(f.name, f"instance {rec.instance or '(none)'}, not {instance}"))
        else:
            records.append(rec)
    if instance is None:
        seen = sorted({r.instance or "(none)" for r in records})
        if len(seen) > 1:
            raise CountsError(
                f"counts directory {directory} holds files of {len(seen)} server instances "
                f"({', '.join(seen)}): give every launch a fresh directory, or pass the instance to read"
            )
    return CountsRead(records, str(directory), instance, ignored)


def total_counts(records: Iterable[ProcessCounts]) -> dict[str, int]:
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
class WorkerCounts:
    """One process's part of an arm, for the report."""

    worker: Worker | None
    host: str
    pid: int
    counts: dict[str, int]
    roles: tuple[str, ...] = ()  # models it loaded: "target", "draft"


@dataclass(frozen=True)
class Verification:
    status: Status
    detail: str
    counts: dict[str, int] | None = None
    workers: tuple[WorkerCounts, ...] = ()
    problems: tuple[str, ...] = ()  # every reason it failed; `detail` leads with the first
    ignored: tuple[str, ...] = ()  # count files of other instances, left out

    @property
    def verified(self) -> bool:
        return self.status is Status.VERIFIED

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED


def _listed(items: list[str]) -> str:
    more = len(items) - _LISTED
    return ", ".join(items[:_LISTED]) + (f" and {more} more" if more > 0 else "")


def _foreign_calls(path: str, rec: ProcessCounts) -> list[str]:
    accepted = accepted_counts(path)  # a fused path's plain RoPE layers count under a name of their own
    out = []
    for name, n in sorted(rec.counts.items()):
        if name in accepted or n <= 0:
            continue
        if name.startswith(UNSWITCHED_PREFIX):
            cls = name[len(UNSWITCHED_PREFIX) :]
            out.append(f"{rec.where}: {n} calls of RoPE class {cls}, which the plugin does not switch")
        elif FALLBACK_MARK in name:
            out.append(f"{rec.where}: {n} calls fell back: {name}")
        else:
            out.append(f"{rec.where}: {n} calls of {name}, not {path}")
    return out


def _coverage_problems(rec: ProcessCounts) -> list[str]:
    if rec.format < 2:
        return []  # written before coverage was recorded
    if not rec.models:
        if any(rec.counts.values()):
            return [f"{rec.where}: ran RoPE but no model load was seen, so its RoPE layers are unknown"]
        return []
    out = []
    for m in rec.models:
        label = f"{rec.where}: {m.role} model {m.architecture}".rstrip()
        if m.sites == 0:
            out.append(f"{label} holds no RoPE module the plugin can see")
        if m.unswitched:
            sites = [f"{site} ({cls})" for site, cls in m.unswitched.items()]
            out.append(f"{label}: {len(sites)} of {m.sites} RoPE layers are not switched: {_listed(sites)}")
    if len(rec.models) == 1 and rec.idle and rec.models[0].sites:
        # One model per process: every forward pass calls RoPE once per RoPE layer, so an idle total that
        # is not a multiple means some layer's RoPE went around the plugin (a fused or foreign kernel).
        calls, layers = sum(rec.counts.values()), rec.models[0].sites
        if calls % layers:
            out.append(
                f"{rec.where}: {calls} RoPE calls is not a multiple of the model's {layers} RoPE layers: "
                "some layer's RoPE did not go through the plugin"
            )
    return out


def _worker_problems(
    path: str, records: Sequence[ProcessCounts], expected: frozenset[Worker], draft: bool | None
) -> list[str]:
    out = []
    by_worker: dict[Worker, list[ProcessCounts]] = {}
    for rec in records:
        if rec.worker is None:
            out.append(f"{rec.where}: no worker identity (ranks) in its count file")
        else:
            by_worker.setdefault(rec.worker, []).append(rec)
    for w in sorted(expected):
        recs = by_worker.get(w, [])
        if not recs:
            out.append(f"{w}: no count file")
        elif sum(r.counts.get(path, 0) for r in recs) <= 0:
            out.append(f"{w}: no calls of {path}")
        if len(recs) > 1:
            pids = ", ".join(r.where for r in recs)
            out.append(f"{w}: reported by {len(recs)} processes ({pids}); a stale file of an earlier start?")
        roles = {role for r in recs for role in r.roles}
        if recs and draft is True and "draft" not in roles:
            out.append(f"{w}: no draft model loaded, but the arm serves one")
        if recs and draft is False and "draft" in roles:
            out.append(f"{w}: a draft model was loaded, but the arm serves none")
    unexpected = sorted(set(by_worker) - expected)
    if unexpected:
        names = _listed([str(w) for w in unexpected])
        out.append(f"workers outside the expected layout reported counts: {names}")
    return out


def verify(
    path: str,
    records: Sequence[ProcessCounts] | None,
    expected: frozenset[Worker] | None = None,
    draft: bool | None = None,
) -> Verification:
    """Verified only when the requested implementation ran, nothing else did, every loaded model's RoPE
    layers are all switched, and (with `expected`) every expected worker ran it.

    `records`: `read_counts(...)` of the arm's server instance; None for attach mode without counts.
    `expected`: the worker set (`expected_workers(tp, pp, dp)`); None skips the per-rank checks.
    `draft`: whether every worker must (True) or must not (False) have loaded a draft model."""
    if records is None:
        return Verification(Status.UNVERIFIED, "attach mode: no call counts")
    ignored = tuple(f"{i.file}: {i.reason}" for i in getattr(records, "ignored", ()))
    counts = total_counts(records)
    workers = tuple(WorkerCounts(r.worker, r.host, r.pid, dict(r.counts), r.roles) for r in records)
    problems: list[str] = []
    if counts.get(path, 0) <= 0:
        problems.append(f"requested path {path} never ran (counts {counts})")
    for rec in records:
        if rec.path != path:
            problems.append(f"{rec.where}: the plugin ran with ROPE_EVAL_PATH={rec.path}, not {path}")
        problems += _foreign_calls(path, rec)
        problems += _coverage_problems(rec)
    if expected is not None:
        problems += _worker_problems(path, records, expected, draft)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return Verification(Status.FAILED, problems[0] + more, counts, workers, tuple(problems), ignored)
    procs = f" in {len(records)} processes" if len(records) > 1 else ""
    detail = f"{counts[path]} calls of {path}{procs}"
    return Verification(Status.VERIFIED, detail, counts, workers, (), ignored)


def verify_instances(
    path: str,
    by_instance: dict[str, Sequence[ProcessCounts]],
    served: set[str],
    expected: frozenset[Worker] | None = None,
    draft: bool | None = None,
) -> Verification:
    """An arm served by one or more server starts (a resumed run): every start that produced a sample
    must verify. A start that served nothing (stopped during start-up) proves nothing and needs nothing."""
    if not served:
        return Verification(Status.FAILED, f"no server start of {path} produced a sample")
    missing = sorted(served - set(by_instance))
    if missing:
        return Verification(Status.FAILED, f"server starts {missing} served samples but left no call counts")
    results = {instance: verify(path, by_instance[instance], expected, draft) for instance in sorted(served)}
    for instance, v in results.items():
        if not v.verified:
            return Verification(
                v.status, f"server start {instance}: {v.detail}", v.counts, v.workers, v.problems, v.ignored
            )
    counts = total_counts([r for i in sorted(served) for r in by_instance[i]])
    workers = tuple(w for v in results.values() for w in v.workers)
    ignored = tuple(i for v in results.values() for i in v.ignored)  # stale files: reported, never counted
    starts = f" over {len(served)} server starts" if len(served) > 1 else ""
    detail = f"{counts.get(path, 0)} calls of {path}{starts}"
    return Verification(Status.VERIFIED, detail, counts, workers, (), ignored)
