"""Sampling metrics: the unbiased pass@k estimator (Chen et al. 2021) and avg@k."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples, drawn without replacement from n samples of which
    c are correct, is correct: 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(per_problem: Mapping[str, Sequence[bool]], k: int = 1) -> float:
    """pass@k averaged over problems; each problem's samples are its list of correctness flags."""
    if not per_problem:
        return 0.0
    return sum(pass_at_k(len(v), sum(map(bool, v)), k) for v in per_problem.values()) / len(per_problem)


def avg_at_k(per_problem: Mapping[str, Sequence[bool]]) -> float:
    """Mean correctness per problem, then the mean over problems (problems weigh equally even if
    their sample counts differ). With k samples each this is AIME's avg@k."""
    if not per_problem:
        return 0.0
    return sum(sum(map(bool, v)) / len(v) for v in per_problem.values() if v) / len(per_problem)
