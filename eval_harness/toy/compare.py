"""Compare toy-model runs (`python -m eval_harness.toy.verify --out FILE`) against their native baseline.

    python -m eval_harness.toy.compare benchmarks/toy-vllm-2026-11-29.jsonl [--first 120]

Per arm: accuracy, the paired discordant counts (b: native right and path wrong, c: the reverse), McNemar's
exact two-sided p-value, and with a draft the mean acceptance length, its Δ against native with a 95%
paired bootstrap CI over requests (acceptance length is a ratio of sums, so requests are resampled whole),
and the per-position acceptance rates. `--first N` restricts every arm to its first N problems (a prefix of
the split, as a smaller `limit` would load).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from eval_harness.stats import mcnemar_exact

BASELINE = "native"
N_BOOT = 10_000


@dataclass(frozen=True)
class Acceptance:
    length: float  # 1 + accepted / verify steps
    per_position: list[float]  # share of verify steps whose draft i was accepted


@dataclass(frozen=True)
class ArmDiff:
    model: str
    draft: str | None
    path: str
    problems: int
    accuracy: float
    b: int  # baseline right, path wrong
    c: int  # baseline wrong, path right
    p_value: float
    identical_outputs: bool
    acceptance: Acceptance | None = None
    delta_length: float | None = None
    delta_ci: tuple[float, float] | None = None


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def acceptance(rows: Sequence[dict[str, Any]]) -> Acceptance:
    """Mean acceptance length and per-position rates from the requests' histograms (index j: verify steps
    with j drafts accepted; draft i is accepted in every step with j > i)."""
    hist = np.sum([r["spec"]["histogram"] for r in rows], axis=0)
    steps = int(hist.sum())
    if steps == 0:
        raise ValueError("no speculative verify steps in these requests")
    accepted = float(np.dot(np.arange(len(hist)), hist))
    per_pos = [round(float(hist[i + 1 :].sum()) / steps, 4) for i in range(len(hist) - 1)]
    return Acceptance(1.0 + accepted / steps, per_pos)


def delta_length_ci(
    base: Sequence[dict[str, Any]],
    other: Sequence[dict[str, Any]],
    n_boot: int = N_BOOT,
    seed: int = 0,
    conf: float = 0.95,
) -> tuple[float, tuple[float, float]]:
    """Δ mean acceptance length (other - base) and its percentile CI from a paired bootstrap over requests:
    each replicate draws the same request indices for both arms and recomputes both ratios of sums."""
    arr = {
        name: np.array([[r["spec"]["accepted"], r["spec"]["steps"]] for r in rows], dtype=float)
        for name, rows in (("base", base), ("other", other))
    }
    if len(arr["base"]) != len(arr["other"]):
        raise ValueError("paired arms must have the same requests")

    def length(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return 1.0 + a[idx, 0].sum(axis=-1) / a[idx, 1].sum(axis=-1)

    all_idx = np.arange(len(arr["base"]))
    delta = float(length(arr["other"], all_idx) - length(arr["base"], all_idx))
    idx = np.random.default_rng(seed).integers(0, len(all_idx), size=(n_boot, len(all_idx)))
    boot = length(arr["other"], idx) - length(arr["base"], idx)
    tail = (1 - conf) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return delta, (float(lo), float(hi))


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["model"], r["draft"], r["style"], r["max_tokens"])


def diff(base: dict[str, Any], arm: dict[str, Any], first: int | None = None) -> ArmDiff:
    rows_a, rows_b = base["rows"][:first], arm["rows"][:first]
    if [r["id"] for r in rows_a] != [r["id"] for r in rows_b]:
        raise ValueError(f"{arm['path']}: its problems differ from the baseline's")
    b = sum(x["correct"] and not y["correct"] for x, y in zip(rows_a, rows_b, strict=True))
    c = sum(y["correct"] and not x["correct"] for x, y in zip(rows_a, rows_b, strict=True))
    out = ArmDiff(
        model=arm["model"],
        draft=arm["draft"],
        path=arm["path"],
        problems=len(rows_b),
        accuracy=sum(r["correct"] for r in rows_b) / len(rows_b),
        b=b,
        c=c,
        p_value=mcnemar_exact(b, c),
        identical_outputs=[r["text"] for r in rows_a] == [r["text"] for r in rows_b],
    )
    if arm["draft"] is None:
        return out
    delta, ci = delta_length_ci(rows_a, rows_b)
    return replace(out, acceptance=acceptance(rows_b), delta_length=delta, delta_ci=ci)


def compare(records: Sequence[dict[str, Any]], first: int | None = None) -> list[ArmDiff]:
    """Every arm against the native arm of the same (model, draft, style, max_tokens); the latest record
    wins where an arm was run twice."""
    latest = {(*_key(r), r["path"]): r for r in records}
    out = []
    for (*key, _path), arm in latest.items():
        base = latest.get((*key, BASELINE))
        if base is None:
            raise ValueError(
                f"{arm['model']} ({arm['draft'] or 'no draft'}): no {BASELINE} arm to compare with"
            )
        out.append(diff(base, arm, first))
    return out


def _short(path: str) -> str:
    return path.rsplit(":", 1)[-1] if path.startswith("custom:") else path


def render(diffs: Sequence[ArmDiff]) -> str:
    lines = [
        "| model | draft | path | problems | accuracy | b / c | McNemar p | outputs = native | "
        "acceptance length | Δ length [95% CI] | per position |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in diffs:
        acc = d.acceptance
        delta = (
            "-"
            if d.delta_ci is None
            else f"{d.delta_length:+.3f} [{d.delta_ci[0]:+.3f}, {d.delta_ci[1]:+.3f}]"
        )
        lines.append(
            f"| {d.model} | {d.draft or '-'} | {_short(d.path)} | {d.problems} | {d.accuracy:.3f} | "
            f"{d.b} / {d.c} | {d.p_value:.2g} | {'yes' if d.identical_outputs else 'no'} | "
            f"{'-' if acc is None else f'{acc.length:.3f}'} | {delta} | "
            f"{'-' if acc is None else acc.per_position} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval_harness.toy.compare", description=__doc__)
    parser.add_argument("records", type=Path, help="JSONL written by eval_harness.toy.verify --out")
    parser.add_argument("--first", type=int, help="only each arm's first N problems")
    args = parser.parse_args(argv)
    print(render(compare(load(args.records), args.first)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
