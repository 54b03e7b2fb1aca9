"""L3: paired task accuracy of path A and path B on the same workload.

Scores come per suite and path as {problem_id: [score of sample 0, sample 1, ...]}, 0/1 or
float in [0, 1]. A and B are paired by problem id and sample index; the workloads must match
exactly (same ids, same k everywhere).

Greedy (k = 1, 0/1 scores): Wilson CIs per path, exact McNemar on the discordant pairs, the
Agresti–Min interval for Δ and `tost_paired_counts`. Otherwise: per-path CIs and the Δ CI from
the bootstrap clustered by problem, and `tost_paired_bootstrap`. Δ = acc(B) - acc(A).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from eval_harness.stats import (
    Interval,
    Result,
    TostResult,
    discordant_counts,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap_clustered,
    paired_diff_ci,
    tost_paired_bootstrap,
    tost_paired_counts,
    wilson_ci,
)

Scores = Mapping[str, Sequence[float]]


@dataclass(frozen=True)
class L3Result(Result):
    suite: str
    n_problems: int
    k_samples: int
    accuracy_a: Interval
    accuracy_b: Interval
    delta: float
    delta_low: float
    delta_high: float
    conf: float
    method: str
    significant: bool
    mcnemar_b: int | None = None
    mcnemar_c: int | None = None
    mcnemar_p: float | None = None
    tost: TostResult | None = None


def paired_arrays(a: Scores, b: Scores) -> tuple[list[str], NDArray[np.float64], NDArray[np.float64]]:
    """(problem ids in sorted order, A scores [P, k], B scores [P, k]); raises if unpaired."""
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(f"workloads differ: only in A {only_a[:5]}, only in B {only_b[:5]}")
    ids = sorted(a)
    if not ids:
        raise ValueError("empty workload")
    ks = {len(a[i]) for i in ids} | {len(b[i]) for i in ids}
    if len(ks) != 1 or 0 in ks:
        bad = [i for i in ids if len(a[i]) != len(b[i])][:5]
        raise ValueError(f"sample counts differ or vary across problems (k in {sorted(ks)}); e.g. {bad}")
    xa = np.asarray([a[i] for i in ids], dtype=np.float64)
    xb = np.asarray([b[i] for i in ids], dtype=np.float64)
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError("scores contain non-finite values")
    return ids, xa, xb


def _is_binary(*xs: NDArray[np.float64]) -> bool:
    return all(np.isin(x, (0.0, 1.0)).all() for x in xs)


def _greedy(
    suite: str, xa: NDArray, xb: NDArray, margin: float | None, alpha: float, conf: float
) -> L3Result:
    b, c, n = discordant_counts(xa[:, 0], xb[:, 0])
    ci = paired_diff_ci(b, c, n, conf)
    p = mcnemar_exact(b, c)
    return L3Result(
        suite=suite,
        n_problems=n,
        k_samples=1,
        accuracy_a=wilson_ci(int(xa.sum()), n, conf),
        accuracy_b=wilson_ci(int(xb.sum()), n, conf),
        delta=(c - b) / n,
        delta_low=ci.low,
        delta_high=ci.high,
        conf=conf,
        method="mcnemar-exact",
        significant=p < 1 - conf,
        mcnemar_b=b,
        mcnemar_c=c,
        mcnemar_p=p,
        tost=None if margin is None else tost_paired_counts(b, c, n, margin, alpha),
    )


def _sampled(
    suite: str,
    xa: NDArray,
    xb: NDArray,
    margin: float | None,
    alpha: float,
    conf: float,
    n_boot: int,
    seed: int,
) -> L3Result:
    boot = paired_bootstrap_clustered(xa, xb, n_boot=n_boot, seed=seed, conf=conf)
    tost = None if margin is None else tost_paired_bootstrap(xa, xb, margin, alpha, n_boot, seed)
    return L3Result(
        suite=suite,
        n_problems=xa.shape[0],
        k_samples=xa.shape[1],
        accuracy_a=mean_ci(xa.mean(axis=1), conf, "bootstrap", n_boot, seed),
        accuracy_b=mean_ci(xb.mean(axis=1), conf, "bootstrap", n_boot, seed),
        delta=boot.delta,
        delta_low=boot.low,
        delta_high=boot.high,
        conf=conf,
        method="clustered-bootstrap",
        significant=not boot.low <= 0.0 <= boot.high,
        tost=tost,
    )


def compare_suite(
    suite: str,
    a: Scores,
    b: Scores,
    margin: float | None = None,
    alpha: float = 0.05,
    conf: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> L3Result:
    """Paired comparison of one suite. ``margin`` (a proportion, 0.01 = 1 point) enables TOST at
    level ``alpha``; ``significant`` means Δ ≠ 0 at confidence ``conf``."""
    _, xa, xb = paired_arrays(a, b)
    if xa.shape[1] == 1 and _is_binary(xa, xb):
        return _greedy(suite, xa, xb, margin, alpha, conf)
    return _sampled(suite, xa, xb, margin, alpha, conf, n_boot, seed)


def compare_suites(
    a: Mapping[str, Scores],
    b: Mapping[str, Scores],
    margin: float | Mapping[str, float] | None = None,
    alpha: float = 0.05,
    conf: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, L3Result]:
    """`compare_suite` for every suite (``margin`` may be per suite); both paths must have run
    the same suites."""
    if a.keys() != b.keys():
        raise ValueError(f"suites differ: A {sorted(a)} vs B {sorted(b)}")
    margins = margin if isinstance(margin, Mapping) else dict.fromkeys(a, margin)
    return {s: compare_suite(s, a[s], b[s], margins.get(s), alpha, conf, n_boot, seed) for s in sorted(a)}
