"""The committed toy checkpoints' sha256s: written by train.py, checked whenever a toy model is resolved.

A toy model's accuracy and acceptance figures are only meaningful for the exact bytes that were measured, and
the weights live in git where a merge, an LFS filter or a stray `git add` can change them silently. So
`resolve_model("builtin:<toy>")` checks every file vLLM or the harness reads against SHA256SUMS.json and
refuses a mismatch, naming the file. Hashes are cached per (path, size, mtime, inode): the ~10 MB of weights
are hashed once per process, and any rewrite of a file is seen. Import-light: no torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from eval_harness.model_source import ModelNotFound

CHECKSUMS_FILE = "SHA256SUMS.json"
# What vLLM reads to serve a model, plus the draft's probe prompts (the harness's acceptance workload).
SERVED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
DRAFT_FILES = ("eagle3_prompts.jsonl",)

_cache: dict[tuple[str, int, int, int], str] = {}


class ChecksumMismatch(ModelNotFound):
    """A committed toy checkpoint's file is missing or differs from its recorded sha256."""


def sha256(path: Path) -> str:
    """The file's sha256, cached until its size, mtime or inode changes."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _cache:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _cache[key] = digest.hexdigest()
    return _cache[key]


def checked_files(is_draft: bool) -> tuple[str, ...]:
    return SERVED_FILES + (DRAFT_FILES if is_draft else ())


def write_checksums(weights: Path, models: dict[str, bool]) -> Path:
    """Record the sha256s of `models` (name -> is_draft) under `weights` in SHA256SUMS.json, keeping the
    other models' entries as they were; returns the record's path."""
    path = weights / CHECKSUMS_FILE
    record = recorded(weights) if path.is_file() else {}
    for name, is_draft in models.items():
        record[name] = {f: sha256(weights / name / f) for f in checked_files(is_draft)}
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def recorded(weights: Path) -> dict[str, dict[str, str]]:
    path = weights / CHECKSUMS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChecksumMismatch(f"cannot read the toy checkpoints' record {path}: {exc}") from exc


def verify(weights: Path, name: str) -> Path:
    """Check `weights/name` against the record; returns the directory, or raises ChecksumMismatch naming the
    first file that is missing or differs."""
    record = recorded(weights)
    if name not in record:
        raise ChecksumMismatch(f"toy model {name!r} has no entry in {weights / CHECKSUMS_FILE}")
    for file, want in sorted(record[name].items()):
        path = weights / name / file
        if not path.is_file():
            raise ChecksumMismatch(f"toy model {name!r}: {path} is missing (recorded in {CHECKSUMS_FILE})")
        got = sha256(path)
        if got != want:
            raise ChecksumMismatch(
                f"toy model {name!r}: {path} has sha256 {got}, but {weights / CHECKSUMS_FILE} records "
                f"{want}. The committed checkpoint changed after it was measured: restore it (git checkout "
                f"-- {path.parent}) or retrain with `python -m eval_harness.toy.train` (rewrites the record)."
            )
    return weights / name
