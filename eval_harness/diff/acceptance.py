"""eagle3 speculative-decoding acceptance of path A vs path B.

Input per path: one counter delta per batch of the workload (vLLM ``/metrics`` spec-decode
counters taken around each batch). Pooled over batches:
mean acceptance length = 1 + accepted / drafts, acceptance rate = accepted / draft_tokens,
rate at position i = accepted_per_pos[i] / drafts.

Δ = B - A with a percentile bootstrap over batches: each resample reweights batches by
multinomial counts and recomputes the pooled ratios. When both paths ran the same number of
batches (the workload is identical and ordered) the batches pair up and A and B share the
resample weights (paired CI); otherwise the two paths are resampled independently. Resamples
whose drafts sum to zero are dropped; a path with no drafts at all gives None with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from eval_harness.records import SpecDecodeCounters
from eval_harness.stats import Result


@dataclass(frozen=True)
class PathAcceptance(Result):
    n_batches: int
    num_drafts: float
    num_draft_tokens: float
    num_accepted_tokens: float
    mean_acceptance_length: float | None
    acceptance_rate: float | None
    per_position_rate: tuple[float, ...]
    reason: str | None = None


@dataclass(frozen=True)
class DeltaCI(Result):
    delta: float | None
    low: float | None
    high: float | None
    conf: float


@dataclass(frozen=True)
class AcceptanceDiff(Result):
    a: PathAcceptance
    b: PathAcceptance
    mean_acceptance_length: DeltaCI
    acceptance_rate: DeltaCI
    per_position_rate: tuple[DeltaCI, ...]
    paired: bool
    n_boot: int
    reason: str | None = None


class _Table:
    """Per-batch counters as arrays: drafts, draft_tokens, accepted [n]; per_pos [n, K]."""

    def __init__(self, batches: Sequence[SpecDecodeCounters], width: int) -> None:
        bs = list(batches)
        for i, x in enumerate(bs):
            vals = (x.drafts, x.draft_tokens, x.accepted, *x.accepted_per_pos)
            if any(v < 0 or not math.isfinite(v) for v in vals):
                raise ValueError(f"batch {i}: counter deltas must be finite and >= 0")
            if x.accepted > x.draft_tokens:
                raise ValueError(f"batch {i}: more accepted tokens than draft tokens")
        self.drafts = np.asarray([x.drafts for x in bs], dtype=np.float64)
        self.draft_tokens = np.asarray([x.draft_tokens for x in bs], dtype=np.float64)
        self.accepted = np.asarray([x.accepted for x in bs], dtype=np.float64)
        self.per_pos = np.zeros((len(bs), width), dtype=np.float64)
        for i, x in enumerate(bs):
            self.per_pos[i, : len(x.accepted_per_pos)] = x.accepted_per_pos

    def ratios(self, w: NDArray[np.float64]) -> NDArray[np.float64]:
        """Pooled [mean length, rate, per-pos...] for weight rows ``w`` [R, n] -> [R, 2 + K]."""
        d, t = w @ self.drafts, w @ self.draft_tokens
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = w @ self.accepted
            length = np.where(d > 0, 1.0 + acc / d, np.nan)
            rate = np.where(t > 0, acc / t, np.nan)
            pos = np.where(d[:, None] > 0, (w @ self.per_pos) / d[:, None], np.nan)
        return np.column_stack([length, rate, pos])


def _width(*paths: Sequence[SpecDecodeCounters]) -> int:
    return max((len(x.accepted_per_pos) for p in paths for x in p), default=0)


def _none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _summary(table: _Table) -> PathAcceptance:
    r = table.ratios(np.ones((1, table.drafts.size)))[0]
    reason = None if table.drafts.sum() > 0 else "no drafts (speculative decoding off or no decode steps)"
    return PathAcceptance(
        n_batches=int(table.drafts.size),
        num_drafts=float(table.drafts.sum()),
        num_draft_tokens=float(table.draft_tokens.sum()),
        num_accepted_tokens=float(table.accepted.sum()),
        mean_acceptance_length=_none(r[0]),
        acceptance_rate=_none(r[1]),
        per_position_rate=tuple(float(v) for v in r[2:]) if reason is None else (),
        reason=reason,
    )


def _weights(rng: np.random.Generator, n: int, n_boot: int) -> NDArray[np.float64]:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _delta_cis(point: NDArray, boot: NDArray, conf: float) -> list[DeltaCI]:
    out = []
    for j in range(point.size):
        col = boot[:, j][np.isfinite(boot[:, j])]
        if not math.isfinite(point[j]) or col.size < 2:
            out.append(DeltaCI(_none(point[j]), None, None, conf))
            continue
        lo, hi = np.quantile(col, [0.5 - conf / 2, 0.5 + conf / 2])
        out.append(DeltaCI(float(point[j]), float(lo), float(hi), conf))
    return out


def compare_acceptance(
    batches_a: Sequence[SpecDecodeCounters],
    batches_b: Sequence[SpecDecodeCounters],
    conf: float = 0.95,
    n_boot: int = 5_000,
    seed: int = 0,
    paired: bool | None = None,
) -> AcceptanceDiff:
    """Acceptance of both paths and Δ = B - A with bootstrap CIs over batches. ``paired=None``
    pairs batches when both paths have the same number of them; an arm that sent its requests in another
    order (A/A) must pass ``paired=False``: its batch i holds other requests than A's batch i."""
    if not batches_a or not batches_b:
        raise ValueError("each path needs at least one batch of counters")
    width = _width(batches_a, batches_b)
    ta, tb = _Table(batches_a, width), _Table(batches_b, width)
    na, nb = ta.drafts.size, tb.drafts.size
    paired = na == nb if paired is None else paired
    if paired and na != nb:
        raise ValueError(f"paired comparison needs equal batch counts, got {na} and {nb}")
    sa, sb = _summary(ta), _summary(tb)
    point = tb.ratios(np.ones((1, nb)))[0] - ta.ratios(np.ones((1, na)))[0]
    reason = sa.reason or sb.reason
    if min(na, nb) < 2:
        reason = reason or "fewer than 2 batches: no interval"
        boot = np.full((1, point.size), np.nan)
    else:
        rng = np.random.default_rng(seed)
        wa = _weights(rng, na, n_boot)
        wb = wa if paired else _weights(rng, nb, n_boot)
        boot = tb.ratios(wb) - ta.ratios(wa)
    cis = _delta_cis(point, boot, conf)
    return AcceptanceDiff(sa, sb, cis[0], cis[1], tuple(cis[2:]), paired, n_boot, reason)
