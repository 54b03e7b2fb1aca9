"""Per-process call counters for RoPE implementations, readable without a device sync.

Why not a Python int: under torch.compile the op body runs on every call, but under CUDA
graphs only the captured kernels replay, so the count must be bumped by a kernel. On CUDA
the counters live in pinned host memory and a one-thread Triton kernel adds to them through
the unified address space: graph replays keep counting, and a host thread reads them with
no CUDA call at all (a sync there could break a graph capture in progress). On the CPU a
plain tensor add does the same job.

A daemon thread writes `counts-<host>-<pid>.json` into `ROPE_EVAL_COUNTS_DIR` twice a second
and at exit; the harness reads them back with `eval_harness.proof` (no torch there).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch

from eval_harness.proof import ProcessCounts

FLUSH_SECONDS = 0.5
MAX_SLOTS = 16


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
    """Slots of int64 counters, one slot per implementation name."""

    def __init__(self, path: str):
        self.path = path
        self.slots: dict[str, int] = {}
        pin = torch.cuda.is_available()
        self.host = torch.zeros(MAX_SLOTS, dtype=torch.int64, pin_memory=pin)
        self._cuda_bump = None
        self._lock = threading.Lock()

    def slot(self, name: str) -> int:
        with self._lock:
            if name not in self.slots:
                if len(self.slots) >= MAX_SLOTS:
                    raise RuntimeError(f"more than {MAX_SLOTS} RoPE implementations in one process")
                self.slots[name] = len(self.slots)
            return self.slots[name]

    def bump(self, name: str, device: torch.device) -> None:
        slot = self.slot(name)
        if device.type == "cuda":
            if self._cuda_bump is None:
                self._cuda_bump = _bump_kernel()
            self._cuda_bump[(1,)](_HostPointer(self.host), slot)
        else:
            self.host[slot] += 1

    def snapshot(self) -> dict[str, int]:
        values = self.host.tolist()  # host memory: no device sync
        return {name: int(values[i]) for name, i in self.slots.items()}


class CountsWriter:
    """Flushes one bank to its file periodically and at exit."""

    def __init__(self, bank: CounterBank, directory: Path):
        self.bank = bank
        directory.mkdir(parents=True, exist_ok=True)
        self.file = directory / f"counts-{socket.gethostname()}-{os.getpid()}.json"
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="rope-eval-counts", daemon=True).start()
        atexit.register(self.flush)

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        counts = self.bank.snapshot()
        if not any(counts.values()):
            return  # processes that never run the model (the API server) leave no file
        record = ProcessCounts(os.getpid(), socket.gethostname(), self.bank.path, counts, time.time())
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, self.file)  # atomic: the harness never reads half a file
