"""Tiny models trained on the toy-arith suite, committed so that L3 and eagle3 acceptance have signal without
a real checkpoint (in CI, `make eval` on a fresh machine, `selftest`).

`train.py` makes them (plain PyTorch on the CPU); `weights/` holds the result, one HF directory per model in
`eval_harness.models.specs.TOY_SPECS`, plus TRAINING.md (command, seed, wall time, log summary, sha256s).
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_dir(name: str) -> Path:
    """The committed checkpoint directory of a toy model."""
    return WEIGHTS_DIR / name
