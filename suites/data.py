"""Where benchmark data comes from: a local directory (the layout of ../shared/data, see its
PROVENANCE.md) or the Hugging Face Hub through `datasets`. Local files are read as plain JSON lines:
byte-exact, no Arrow type inference and no cache writes under ~/.cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ENV_DATA = "ROPE_EVAL_DATA"


class DataMissingError(Exception):
    """Benchmark data could not be found; the message names the suite, the source and the remedy."""


@dataclass(frozen=True)
class DataSource:
    kind: Literal["local", "hub"]
    root: Path | None = None

    def describe(self) -> str:
        return f"local directory {self.root}" if self.kind == "local" else "the Hugging Face Hub"


def resolve_source(data_dir: Path | str | None = None) -> DataSource:
    """`--data-dir` first, then $ROPE_EVAL_DATA, else the Hub."""
    chosen = data_dir or os.environ.get(ENV_DATA) or None
    if chosen:
        return DataSource("local", Path(chosen).expanduser().resolve())
    return DataSource("hub")


def _local_remedy(relpath: str) -> str:
    return (
        f"--data-dir DIR or {ENV_DATA}=DIR, where DIR/{relpath} exists "
        "(the layout of ../shared/data, described in its PROVENANCE.md)"
    )


def _how_to_provide(suite: str, relpath: str, hub_id: str) -> str:
    return f"Provide it with {_local_remedy(relpath)}, or leave both unset to download {hub_id} from the Hub."


def read_local_jsonl(source: DataSource, suite: str, relpath: str, hub_id: str) -> list[dict]:
    """Rows of DIR/relpath (JSON lines, or one JSON array)."""
    assert source.root is not None
    path = source.root / relpath
    if not path.is_file():
        raise DataMissingError(
            f"suite {suite!r}: no data at {path} (tried the {source.describe()}). "
            + _how_to_provide(suite, relpath, hub_id)
        )
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_hub_rows(
    suite: str,
    relpath: str,
    path: str,
    *,
    name: str | None = None,
    split: str = "test",
    data_files: Any = None,
    revision: str | None = None,
    what: str | None = None,
) -> list[dict]:
    """Rows of a Hub dataset through `datasets.load_dataset`; any failure becomes DataMissingError.
    `what` names the dataset in the message when `path` is a builder such as "json"."""
    try:
        import datasets

        ds = datasets.load_dataset(path, name, split=split, data_files=data_files, revision=revision)
        return [dict(r) for r in ds]
    except Exception as e:  # offline, gated, renamed, ... all mean the same thing to the user
        what = what or path + (f" ({name})" if name else "")
        raise DataMissingError(
            f"suite {suite!r}: could not load {what}, split {split!r}, from the Hugging Face Hub "
            f"({type(e).__name__}: {str(e)[:300]}). Provide the data locally with {_local_remedy(relpath)}, "
            "or make the Hub reachable (network access, HF_TOKEN, HF_HUB_OFFLINE unset)."
        ) from e
