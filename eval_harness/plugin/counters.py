"""Per-process call counters for RoPE implementations, readable without a device sync.

Why not a Python int: under torch.compile the op body runs on every call, but under CUDA
graphs only the captured kernels replay, so the count must be bumped by a kernel. On CUDA
the counters live in pinned host memory and a one-thread Triton kernel adds to them through
the unified address space: graph replays keep counting, and a host thread reads them with
no CUDA call at all (a sync there could break a graph capture in progress). On the CPU a
plain tensor add does the same job.

Nothing here touches CUDA before the first RoPE call of a worker: vLLM loads plugins in a
process that may fork the engine afterwards, and a CUDA context created before a fork kills
the child ("CUDA error: initialization error"). So the counters are allocated at the first
bump, pinned only when that bump is for a CUDA tensor.

A daemon thread writes `counts-<host>-<pid>.json` into `ROPE_EVAL_COUNTS_DIR` twice a second
and at exit; the harness reads them back with `eval_harness.proof` (no torch there). The thread
starts at the first bump or model load of a process, and again in a forked child (threads do not
survive a fork), whose counts start from zero.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import torch

from eval_harness.proof import FORMAT, ModelCoverage, ProcessCounts, Worker

FLUSH_SECONDS = 0.5
IDLE_FLUSHES = 2  # unchanged over this many flushes: no forward pass is half counted
MAX_SLOTS = 64


def _bump_kernel():
    # Imported lazily: Triton is only needed (and only importable) where CUDA runs.
    import triton
    import triton.language as tl

    # A plain read-modify-write, not an atomic: one stream per process bumps its own bank, and
    # atomics on host memory need hostNativeAtomicSupported, which x86 PCIe hosts often lack.
    @triton.jit
    def bump(counter_ptr, slot):
        ptr = counter_ptr + slot
        # volatile / write-through: the value lives in host memory, never trust a cached copy
        tl.store(ptr, tl.load(ptr, volatile=True) + 1, cache_modifier=".wt")

    return bump


class _HostPointer:
    """Minimal tensor stand-in so Triton accepts a pinned host pointer (valid on device via UVA)."""

    def __init__(self, tensor: torch.Tensor):
        self._ptr = tensor.data_ptr()
        self.dtype = tensor.dtype

    def data_ptr(self) -> int:
        return self._ptr


class CounterBank:
    """Slots of int64 counters, one slot per implementation name; memory allocated at the first bump."""

    def __init__(self, path: str):
        self.path = path
        self.slots: dict[str, int] = {}
        self.host: torch.Tensor | None = None
        self._pinned = False
        self._cuda_bump = None
        self._lock = threading.Lock()

    def slot(self, name: str) -> int:
        with self._lock:
            if name not in self.slots:
                if len(self.slots) >= MAX_SLOTS:
                    raise RuntimeError(f"more than {MAX_SLOTS} RoPE implementations in one process")
                self.slots[name] = len(self.slots)
            return self.slots[name]

    def _counters(self, device: torch.device) -> torch.Tensor:
        """The counters, allocated now if needed: pinned for a CUDA bump (CUDA is in use by then)."""
        cuda = device.type == "cuda"
        host = self.host
        if host is not None and (self._pinned or not cuda):
            return host
        with self._lock:
            if self.host is None or (cuda and not self._pinned):
                fresh = torch.zeros(MAX_SLOTS, dtype=torch.int64, pin_memory=cuda)
                if self.host is not None:
                    fresh.copy_(self.host)  # a CPU bump came first; keep its counts
                self.host, self._pinned = fresh, cuda
            return self.host

    def bump(self, name: str, device: torch.device) -> None:
        slot = self.slot(name)
        host = self._counters(device)
        if device.type == "cuda":
            if self._cuda_bump is None:
                self._cuda_bump = _bump_kernel()
            self._cuda_bump[(1,)](_HostPointer(host), slot)
        else:
            host[slot] += 1

    def snapshot(self) -> dict[str, int]:
        host = self.host
        if host is None:
            return {name: 0 for name in self.slots}
        values = host.tolist()  # host memory: no device sync
        return {name: int(values[i]) for name, i in self.slots.items()}

    def reset(self) -> None:
        """In a forked child: the parent's counts (and its lock's state) are the parent's."""
        self._lock = threading.Lock()
        self.slots, self.host, self._pinned, self._cuda_bump = {}, None, False, None


def dp_index(vllm_config: object) -> int | None:
    """The engine's data-parallel rank as the deployment numbers it. vLLM serves the DP ranks of a dense
    model as independent engines, each in a DP group of one (`_DP.rank_in_group` is 0 in every one of
    them); `parallel_config.data_parallel_index` keeps the deployment's rank."""
    index = getattr(getattr(vllm_config, "parallel_config", None), "data_parallel_index", None)
    return index if isinstance(index, int) else None


def worker_identity(dp: int | None = None) -> tuple[Worker | None, int | None]:
    """This process's ranks, read from vLLM's parallel state if this process has one (`dp`, when known
    from the engine's config, overrides the DP group's rank). Only modules already imported are read:
    at flush time, never at plugin load, and nothing is initialised."""
    ps = sys.modules.get("vllm.distributed.parallel_state")
    if ps is None:
        return None, None
    ranks = {}
    for key, group in (("tp", "_TP"), ("pp", "_PP"), ("dp", "_DP")):
        coordinator = getattr(ps, group, None)
        if coordinator is not None:
            ranks[key] = int(coordinator.rank_in_group)
    if dp is not None and "dp" in ranks:
        ranks["dp"] = dp
    world = getattr(ps, "_WORLD", None)
    world_rank = int(world.rank) if world is not None else None
    # The TP group exists exactly when vLLM has set up model parallelism in this process.
    return (Worker(**ranks) if "tp" in ranks else None), world_rank


class CountsWriter:
    """Flushes one bank, and the coverage of the models this process loaded, to its file."""

    def __init__(self, bank: CounterBank, directory: Path, instance: str | None):
        self.bank = bank
        self.directory = directory
        self.instance = instance
        self.models: dict[int, ModelCoverage] = {}  # id(model) -> its coverage
        self.started = False
        self._lock = threading.Lock()
        self._last: dict[str, int] | None = None
        self._unchanged = 0
        self._identity: tuple[Worker | None, int | None] = (None, None)
        self._dp_index: int | None = None

    @property
    def file(self) -> Path:
        return self.directory / f"counts-{socket.gethostname()}-{os.getpid()}.json"

    def ensure_started(self) -> None:
        """Start the flush thread of this process (once; again after a fork)."""
        if self.started:
            return
        with self._lock:
            if self.started:
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            threading.Thread(target=self._loop, name="rope-eval-counts", daemon=True).start()
            atexit.register(self.flush, final=True)
            self.started = True

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self.models, self.started, self._last, self._unchanged = {}, False, None, 0
        self._identity, self._dp_index = (None, None), None

    def identity(self) -> tuple[Worker | None, int | None]:
        """The ranks, kept once known: vLLM tears its parallel state down before the final flush."""
        if self._identity[0] is None:
            self._identity = worker_identity(self._dp_index)
        return self._identity

    def add_model(self, key: int, coverage: ModelCoverage, dp: int | None = None) -> None:
        self.models[key] = coverage
        self._dp_index = dp if dp is not None else self._dp_index
        self.ensure_started()
        self.flush()  # a worker that loaded a model shows up even before its first call

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self, final: bool = False) -> None:
        if self.started is False:
            return  # atexit registered by the parent of a fork: not this process's file
        counts = self.bank.snapshot()
        if not any(counts.values()) and not self.models:
            return  # processes that never run the model (the API server) leave no file
        self._unchanged = self._unchanged + 1 if counts == self._last else 0
        self._last = counts
        worker, world_rank = self.identity()
        record = ProcessCounts(
            pid=os.getpid(),
            host=socket.gethostname(),
            path=self.bank.path,
            counts=counts,
            updated=time.time(),
            instance=self.instance,
            worker=worker,
            world_rank=world_rank,
            models=list(self.models.values()),
            idle=final or self._unchanged >= IDLE_FLUSHES,
            format=FORMAT,
        )
        file = self.file
        tmp = file.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(record.to_json()))
        os.replace(tmp, file)  # atomic: the harness never reads half a file
