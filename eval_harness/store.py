"""The run store: one directory per run, one sub-directory ("arm") per model and path.

    RUN/manifest.json                    provenance, path-call counts, metrics snapshots
    RUN/<model>/<arm>/arm.json           the fingerprint this arm's samples were made under
    RUN/<model>/<arm>/samples.jsonl      one record per request, appended as results arrive
    RUN/<model>/<arm>/server.log, counts/

Resume is keyed on the fingerprint (model, path, sampling, data hash, serve args, versions):
an arm made under other settings is refused, never silently mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class StoreError(RuntimeError):
    """A corrupt or mismatched run directory."""


class Sample(BaseModel):
    """One request's result. `key` is stable across paths: it pairs A with B."""

    model_config = ConfigDict(extra="forbid")

    key: str
    kind: str  # "gen" (suite generation) or "l1" (teacher-forced scoring)
    suite: str | None = None
    item_id: str | None = None
    sample_idx: int = 0
    seed: int | None = None
    prompt_hash: str
    text: str = ""
    reasoning: str | None = None
    token_ids: list[int] = Field(default_factory=list)
    prompt_token_ids: list[int] | None = None
    # top-k per generated step / per prompt position, as [[token_id, logprob], ...]
    top_logprobs: list[list[list[float]]] | None = None
    prompt_logprobs: list[list[list[float]] | None] | None = None
    finish_reason: str | None = None
    batch: int | None = None


def fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ArmStore:
    """Append-only samples of one (model, path) arm, safe to resume."""

    def __init__(self, directory: Path, fingerprint_parts: dict[str, Any]):
        self.dir = directory
        self.file = directory / "samples.jsonl"
        # JSON round trip: the parts compare equal to what arm.json holds after a restart
        self.parts = json.loads(json.dumps(fingerprint_parts, sort_keys=True, default=str))
        self.fp = fingerprint(self.parts)

    def open(self, resume: bool) -> dict[str, Sample]:
        """Create the arm, or (resume) check its fingerprint and return the samples done."""
        meta = self.dir / "arm.json"
        if meta.exists():
            if not resume:
                raise StoreError(f"{self.dir} already holds results; pass --resume or use a new --out")
            old = json.loads(meta.read_text())
            if old.get("fingerprint") != self.fp:
                keys = set(old["parts"]) | set(self.parts)
                changed = sorted(k for k in keys if old["parts"].get(k) != self.parts.get(k))
                raise StoreError(f"cannot resume {self.dir}: settings changed ({', '.join(changed)})")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"fingerprint": self.fp, "parts": self.parts}, indent=1, default=str))
        return {s.key: s for s in self.read()}

    def read(self) -> Iterator[Sample]:
        if not self.file.exists():
            return
        lines = self.file.read_bytes().split(b"\n")
        seen: set[str] = set()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                sample = Sample.model_validate_json(line)
            except ValidationError as exc:
                if i == len(lines) - 1:
                    self._drop_torn_tail(len(line))  # a crash mid-write; that request is redone
                    return
                raise StoreError(f"corrupt record at {self.file}:{i + 1}: {exc.errors()[0]['msg']}") from None
            if sample.key in seen:
                raise StoreError(f"duplicate record {sample.key} at {self.file}:{i + 1}")
            seen.add(sample.key)
            yield sample

    def _drop_torn_tail(self, nbytes: int) -> None:
        with self.file.open("rb+") as f:
            f.truncate(self.file.stat().st_size - nbytes)

    def append(self, sample: Sample) -> None:
        # One write per record, flushed and fsynced: an interrupted run loses at most the
        # record being written, which resume detects and redoes.
        data = (sample.model_dump_json(exclude_none=True) + "\n").encode()
        fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path} is missing: is this a rope-eval run directory?") from None
    except ValueError as exc:
        raise StoreError(f"{path} is corrupt: {exc}") from None
