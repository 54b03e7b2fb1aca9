"""L1: teacher-forced logprobs of the same token sequences under path A and path B.

Input per sequence and path: one entry per position, ``None`` where there is no logprob (the
first prompt token under vLLM's ``prompt_logprobs``) or a `PositionLogprobs` with the actual
next token, its logprob and the reported top-k ``{token_id: logprob}`` (vLLM includes the
actual token, so a dict may hold k or k + 1 entries).

KL estimator (`kl_topk`): only the top-k of each distribution is known, so KL(A‖B) is computed
between two distributions on a shared partition of the vocabulary: every token reported by
either side (the union) is its own bucket, and one "rest" bucket holds all other tokens.
Each side keeps its reported probabilities. A union token that one side did not report gets
that side's unreported mass R = 1 - Σ reported spread evenly over its missing union tokens
plus the rest bucket, capped at the side's smallest reported top-k probability (a true upper
bound for any unreported token); the rest bucket takes what is left of R. Buckets are floored
at 1e-12 and renormalised. The result is the exact KL of two proper distributions, hence
>= 0, and exactly 0 when both sides report the same numbers. When both sides report the same
token set it equals the KL of a coarsening and so is a lower bound on the true KL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from eval_harness.stats import Histogram, Result, histogram, log10_edges, quantiles

PROB_FLOOR = 1e-12
KL_QUANTILES = (0.5, 0.9, 0.99, 0.999)


@dataclass(frozen=True, slots=True)
class PositionLogprobs:
    token_id: int
    logprob: float
    top: Mapping[int, float]

    def reported(self) -> dict[int, float]:
        """Top-k plus the actual token (the actual token's own logprob wins)."""
        return {**{int(t): float(v) for t, v in self.top.items()}, self.token_id: float(self.logprob)}


LogprobSeq = Sequence[PositionLogprobs | None]


def _as_logprob(value: Any) -> float:
    if isinstance(value, Mapping):
        return float(value["logprob"])
    return float(getattr(value, "logprob", value))


def from_prompt_logprobs(
    token_ids: Sequence[int], entries: Sequence[Mapping[Any, Any] | None]
) -> list[PositionLogprobs | None]:
    """Convert vLLM ``prompt_logprobs`` (per position: None, or {token_id: float | {"logprob": x}
    | Logprob}; JSON keys may be strings) for ``token_ids`` into a list of `PositionLogprobs`."""
    if len(token_ids) != len(entries):
        raise ValueError(f"{len(token_ids)} token ids but {len(entries)} logprob entries")
    out: list[PositionLogprobs | None] = []
    for i, (tok, entry) in enumerate(zip(token_ids, entries, strict=True)):
        if entry is None:
            out.append(None)
            continue
        top = {int(k): _as_logprob(v) for k, v in entry.items()}
        if int(tok) not in top:
            raise ValueError(f"position {i}: actual token {tok} missing from its logprob entry")
        out.append(PositionLogprobs(int(tok), top[int(tok)], top))
    return out


# ----------------------------------------------------------------------------- per position


def _side_probs(reported: dict[int, float], actual: int, union: list[int]) -> list[float]:
    probs = {t: math.exp(lp) for t, lp in reported.items()}
    residual = max(0.0, 1.0 - sum(probs.values()))
    missing = [t for t in union if t not in probs]
    topk = [p for t, p in probs.items() if t != actual]
    cap = min(topk) if topk else math.inf
    fill = min(cap, residual / (len(missing) + 1)) if missing else 0.0
    vec = [probs.get(t, fill) for t in union] + [residual - fill * len(missing)]
    vec = [max(p, PROB_FLOOR) for p in vec]
    total = sum(vec)
    return [p / total for p in vec]


def kl_topk(a: PositionLogprobs, b: PositionLogprobs) -> float:
    """KL(A‖B) in nats from the two top-k reports (estimator in the module docstring)."""
    ra, rb = a.reported(), b.reported()
    union = sorted(ra.keys() | rb.keys())
    pa = _side_probs(ra, a.token_id, union)
    pb = _side_probs(rb, b.token_id, union)
    return max(0.0, sum(p * (math.log(p) - math.log(q)) for p, q in zip(pa, pb, strict=True)))


def top1(pos: PositionLogprobs) -> int:
    """Argmax of the reported tokens; ties go to the smallest token id."""
    return min(pos.reported().items(), key=lambda kv: (-kv[1], kv[0]))[0]


def _abs_dlogprob(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b)


@dataclass(frozen=True)
class SequenceL1:
    """Per-position metrics of one sequence (positions without logprobs are dropped)."""

    positions: NDArray[np.int64]
    kl: NDArray[np.float64]
    top1_agree: NDArray[np.bool_]
    abs_dlogprob: NDArray[np.float64]


def compare_sequence(a: LogprobSeq, b: LogprobSeq) -> SequenceL1:
    """Compare one teacher-forced sequence position by position. Raises ValueError when the
    lengths differ, when only one side has logprobs at a position, or when the actual tokens
    differ (the sequences are not the same)."""
    if len(a) != len(b):
        raise ValueError(f"sequence lengths differ: A has {len(a)} positions, B has {len(b)}")
    pos, kl, agree, dlp = [], [], [], []
    for i, (pa, pb) in enumerate(zip(a, b, strict=True)):
        if pa is None and pb is None:
            continue
        if pa is None or pb is None:
            raise ValueError(f"position {i}: logprobs present for only one path")
        if pa.token_id != pb.token_id:
            raise ValueError(f"position {i}: actual tokens differ ({pa.token_id} vs {pb.token_id})")
        pos.append(i)
        kl.append(kl_topk(pa, pb))
        agree.append(top1(pa) == top1(pb))
        dlp.append(_abs_dlogprob(pa.logprob, pb.logprob))
    return SequenceL1(
        np.asarray(pos, dtype=np.int64),
        np.asarray(kl, dtype=np.float64),
        np.asarray(agree, dtype=np.bool_),
        np.asarray(dlp, dtype=np.float64),
    )


# ----------------------------------------------------------------------------- aggregate


@dataclass(frozen=True)
class PositionBin(Result):
    """Metrics over token positions [start, end) (for position-dependent, long-context bugs)."""

    start: int
    end: int
    n: int
    kl_mean: float
    kl_max: float
    top1_agreement: float
    abs_dlogprob_max: float


@dataclass(frozen=True)
class L1Summary(Result):
    n_sequences: int
    n_positions: int
    kl_mean: float
    kl_p50: float
    kl_p99: float
    kl_max: float
    top1_agreement: float
    n_top1_disagree: int
    abs_dlogprob_mean: float
    abs_dlogprob_p99: float
    abs_dlogprob_max: float
    kl_quantiles: dict[str, float]
    abs_dlogprob_quantiles: dict[str, float]
    kl_histogram: Histogram
    abs_dlogprob_histogram: Histogram
    by_position: tuple[PositionBin, ...]


def _position_bins(pos: NDArray[np.int64], kl: NDArray, agree: NDArray, dlp: NDArray) -> tuple:
    """Bins [0, 64), [64, 128), [128, 256), ... covering every position."""
    bins, start, end = [], 0, 64
    top = int(pos.max())
    while start <= top:
        m = (pos >= start) & (pos < end)
        if m.any():
            bins.append(
                PositionBin(
                    start,
                    end,
                    int(m.sum()),
                    float(kl[m].mean()),
                    float(kl[m].max()),
                    float(agree[m].mean()),
                    float(dlp[m].max()),
                )
            )
        start, end = end, end * 2
    return tuple(bins)


def summarize_l1(pairs: Iterable[tuple[LogprobSeq, LogprobSeq]]) -> L1Summary:
    """Aggregate `compare_sequence` over (A, B) sequence pairs."""
    seqs = [compare_sequence(a, b) for a, b in pairs]
    if not seqs or sum(s.kl.size for s in seqs) == 0:
        raise ValueError("no positions with logprobs to compare")
    pos = np.concatenate([s.positions for s in seqs])
    kl = np.concatenate([s.kl for s in seqs])
    agree = np.concatenate([s.top1_agree for s in seqs])
    dlp = np.concatenate([s.abs_dlogprob for s in seqs])
    kq, dq = quantiles(kl, KL_QUANTILES), quantiles(dlp, KL_QUANTILES)
    return L1Summary(
        n_sequences=len(seqs),
        n_positions=int(kl.size),
        kl_mean=float(kl.mean()),
        kl_p50=kq["0.5"],
        kl_p99=kq["0.99"],
        kl_max=float(kl.max()),
        top1_agreement=float(agree.mean()),
        n_top1_disagree=int((~agree).sum()),
        abs_dlogprob_mean=float(dlp.mean()),
        abs_dlogprob_p99=dq["0.99"],
        abs_dlogprob_max=float(dlp.max()),
        kl_quantiles=kq,
        abs_dlogprob_quantiles=dq,
        kl_histogram=histogram(kl, log10_edges(-12, 2)),
        abs_dlogprob_histogram=histogram(dlp, log10_edges(-9, 2)),
        by_position=_position_bins(pos, kl, agree, dlp),
    )
