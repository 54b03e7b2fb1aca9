"""The run store: the one module that reads and writes a run directory.

    RUN/manifest.json                     RunManifest: config, provenance, data hashes, arms per model
    RUN/<model>/<arm>/arm.json            ArmMeta: fingerprint, role, verification (which RoPE ran)
    RUN/<model>/<arm>/samples.jsonl       Sample per request, appended as results arrive
    RUN/<model>/<arm>/scores.jsonl        Score per generated sample
    RUN/<model>/<arm>/acceptance.jsonl    AcceptanceBatch per batch (eagle3 models)
    RUN/<model>/<arm>/server.log          written by that arm's vLLM server
    RUN/<model>/<arm>/counts/             written by the rope-eval plugin in every vLLM process
    RUN/diff.json                         the evaluation (analyze.py), cached
    RUN/figures.json                      the HTML page's figures (report.py), cached
    RUN/report.{md,json,html}, RUN/gate-junit.xml

Every write is flushed and fsynced, JSON documents are replaced atomically, and a torn last line (a crash
mid-write) is dropped on read, so an interrupted run resumes without losing or duplicating a sample.
Resume is keyed on the arm's fingerprint (model, path, sampling, data hash, serve args, versions): an arm
made under other settings is refused, never silently mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from eval_harness.errors import StoreError
from eval_harness.proof import ProcessCounts, read_counts
from eval_harness.records import AcceptanceBatch, ArmMeta, RunManifest, Sample, Score

R = TypeVar("R", bound=BaseModel)
MANIFEST = "manifest.json"
EVALUATION = "diff.json"


def fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def normalized(parts: dict[str, Any]) -> dict[str, Any]:
    """The parts as they read back from arm.json, so a restart compares equal."""
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def _fsync_write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, mode, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _fsync_write(tmp, text.encode(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.replace(tmp, path)


def append_lines(path: Path, records: Iterable[BaseModel]) -> None:
    """One write for all records, fsynced: a crash loses at most the records being written."""
    data = "".join(r.model_dump_json(exclude_none=True) + "\n" for r in records).encode()
    if data:
        _fsync_write(path, data, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def read_lines(path: Path, model: type[R]) -> Iterator[R]:
    """Records of a JSON-lines file; a torn last line is truncated away (its request is redone)."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield model.model_validate_json(line)
        except ValidationError as exc:
            if i == len(lines) - 1:
                with path.open("rb+") as f:
                    f.truncate(path.stat().st_size - len(line))
                return
            raise StoreError(f"corrupt record at {path}:{i + 1}: {exc.errors()[0]['msg']}") from None


def read_model(path: Path, model: type[R]) -> R:
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"{path} is missing: is this a rope-eval run directory?") from None
    except ValidationError as exc:
        raise StoreError(f"{path} is corrupt: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None


class ArmStore:
    """One (model, arm) directory."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.samples_file = directory / "samples.jsonl"
        self.scores_file = directory / "scores.jsonl"
        self.acceptance_file = directory / "acceptance.jsonl"
        self.meta_file = directory / "arm.json"
        self.server_log = directory / "server.log"
        self.counts_dir = directory / "counts"

    # ---- meta and resume
    def open(self, meta: ArmMeta, resume: bool) -> dict[str, Sample]:
        """Create the arm, or (resume) check its fingerprint; returns the samples already stored."""
        if self.meta_file.exists():
            if not resume:
                raise StoreError(f"{self.dir} already holds results; pass --resume or use a new --out")
            old = self.read_meta()
            if old.fingerprint != meta.fingerprint:
                keys = set(old.parts) | set(meta.parts)
                changed = sorted(k for k in keys if old.parts.get(k) != meta.parts.get(k))
                raise StoreError(f"cannot resume {self.dir}: settings changed ({', '.join(changed)})")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.write_meta(meta)
        return {s.key: s for s in self.samples()}

    def read_meta(self) -> ArmMeta:
        return read_model(self.meta_file, ArmMeta)

    def write_meta(self, meta: ArmMeta) -> None:
        write_text_atomic(self.meta_file, meta.model_dump_json(indent=1))

    # ---- records
    def samples(self) -> Iterator[Sample]:
        seen: set[str] = set()
        for sample in read_lines(self.samples_file, Sample):
            if sample.key in seen:
                raise StoreError(f"duplicate record {sample.key} in {self.samples_file}")
            seen.add(sample.key)
            yield sample

    def append_sample(self, sample: Sample) -> None:
        append_lines(self.samples_file, [sample])

    def scores(self) -> dict[str, Score]:
        return {s.key: s for s in read_lines(self.scores_file, Score)}

    def append_scores(self, scores: list[Score]) -> None:
        append_lines(self.scores_file, scores)

    def acceptance(self) -> list[AcceptanceBatch]:
        """Per (suite, batch); a batch split by an interruption was recorded in parts, which add up."""
        merged: dict[tuple[str, int], AcceptanceBatch] = {}
        for rec in read_lines(self.acceptance_file, AcceptanceBatch):
            key = (rec.suite, rec.batch)
            if key in merged:
                old = merged[key]
                rec = AcceptanceBatch(
                    suite=rec.suite,
                    batch=rec.batch,
                    requests=old.requests + rec.requests,
                    counters=old.counters + rec.counters,
                )
            merged[key] = rec
        return [merged[k] for k in sorted(merged)]

    def append_acceptance(self, batch: AcceptanceBatch) -> None:
        append_lines(self.acceptance_file, [batch])

    # ---- what the server and the plugin write
    def new_counts_dir(self, instance: str) -> Path:
        """An empty counts directory for one server start. A resumed arm had an earlier server; its counts
        stay in their own directory, so each start is judged on its own files and none can stand in for
        another."""
        path = self.counts_dir / instance
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def counts(self) -> dict[str, list[ProcessCounts]]:
        """Count records per server start of this arm."""
        if not self.counts_dir.is_dir():
            return {}
        # a directory is named after its server start, whose id every count file of it carries
        return {
            d.name: read_counts(d, instance=d.name) for d in sorted(self.counts_dir.iterdir()) if d.is_dir()
        }


class RunStore:
    """A run directory: its manifest, its arms, and the documents derived from them."""

    def __init__(self, root: Path):
        self.root = root

    def exists(self) -> bool:
        return (self.root / MANIFEST).exists()

    def read_manifest(self) -> RunManifest:
        return read_model(self.root / MANIFEST, RunManifest)

    def write_manifest(self, manifest: RunManifest) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.root / MANIFEST, manifest.model_dump_json(indent=1))

    def arm(self, model: str, label: str) -> ArmStore:
        return ArmStore(self.root / model / arm_dirname(label))

    def state_key(self) -> str:
        """Changes whenever a record of the run changes: keys the cached evaluation."""
        files = [self.root / MANIFEST, *sorted(self.root.glob("*/*/*.json*"))]
        stat = [(str(f.relative_to(self.root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        return fingerprint({"files": stat})

    def read_document(self, name: str) -> str | None:
        path = self.root / name
        return path.read_text() if path.exists() else None

    def write_document(self, name: str, text: str) -> Path:
        """diff.json, the reports, the JUnit XML: documents derived from the records."""
        path = self.root / name
        write_text_atomic(path, text)
        return path


def arm_dirname(label: str) -> str:
    return "".join(c if c.isalnum() or c in "_.~-" else "-" for c in label)
