"""Statistics for rope-eval: intervals, paired tests, equivalence (TOST) and power planning.

Everything here is a pure function over numbers or numpy arrays. Results with more than one
number are small frozen dataclasses with a ``to_dict()`` that is safe for strict JSON (non-finite
floats become ``None``).

Conventions: Δ is always ``B - A`` (candidate minus baseline). For paired 0/1 outcomes,
``b`` counts pairs where A is right and B wrong, ``c`` pairs where A is wrong and B right, so
Δ = (c - b) / n.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray


class _LazyModule:
    """scipy.stats takes about a second to import; `gate` and `report` on a cached evaluation never call
    into it, so it is imported on first use."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


st = _LazyModule("scipy.stats")
optimize = _LazyModule("scipy.optimize")

FloatArray = NDArray[np.float64]

# Power planning default: intraclass correlation of a suite's 0/1 outcomes within one problem
# (share of a single sample's Bernoulli variance that lies between problems). 0.6 describes
# the U-shaped per-problem solve rates of AIME-like suites; see `within_problem_variance`.
DEFAULT_ICC = 0.6


def _jsonable(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class Result:
    """Base for result dataclasses: ``to_dict()`` gives a strict-JSON-safe dict."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Interval(Result):
    estimate: float
    low: float
    high: float
    conf: float


@dataclass(frozen=True)
class BootstrapResult(Result):
    """Clustered paired bootstrap of Δ = mean(b) - mean(a); percentile interval."""

    delta: float
    low: float
    high: float
    conf: float
    se: float
    n_problems: int
    k_samples: int
    n_boot: int
    seed: int


@dataclass(frozen=True)
class TostResult(Result):
    """Two one-sided tests for |Δ| < margin.

    ``low``/``high`` are the (1 - 2·alpha) interval of Δ; ``equivalent`` is True iff that interval
    lies strictly inside (-margin, +margin). ``p_value`` = max of the two one-sided p-values.
    """

    delta: float
    low: float
    high: float
    margin: float
    alpha: float
    p_value: float
    equivalent: bool
    method: str
    note: str | None = None


@dataclass(frozen=True)
class Histogram(Result):
    """Counts over ``edges`` (len(counts) == len(edges) - 1; bins are [lo, hi), the last one closed);
    values below the first / above the last edge are counted in ``n_below`` / ``n_above``."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    n_below: int
    n_above: int


# ----------------------------------------------------------------------------- helpers


def _z(conf: float) -> float:
    """Two-sided normal critical value for confidence ``conf``."""
    return float(st.norm.ppf(0.5 + conf / 2.0))


def _check_conf(conf: float) -> None:
    if not 0.0 < conf < 1.0:
        raise ValueError(f"conf must be in (0, 1), got {conf}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")


def quantiles(values: ArrayLike, qs: Sequence[float] = (0.5, 0.9, 0.99, 0.999)) -> dict[str, float]:
    """Quantiles keyed by their level as a string (``"0.99"``); NaN for empty input."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return {str(q): math.nan for q in qs}
    return {str(q): float(v) for q, v in zip(qs, np.quantile(x, qs), strict=True)}


def histogram(values: ArrayLike, edges: Sequence[float]) -> Histogram:
    x = np.asarray(values, dtype=np.float64).ravel()
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be strictly increasing with at least two entries")
    counts, _ = np.histogram(x, bins=e)
    return Histogram(
        edges=tuple(float(v) for v in e),
        counts=tuple(int(c) for c in counts),
        n_below=int(np.sum(x < e[0])),
        n_above=int(np.sum(x > e[-1])),
    )


def log10_edges(lo_exp: int, hi_exp: int) -> tuple[float, ...]:
    """Decade edges 10**lo_exp .. 10**hi_exp (for KL and |Δ logprob|, which span many decades)."""
    return tuple(10.0**e for e in range(lo_exp, hi_exp + 1))


def pow2_edges(max_value: float) -> tuple[float, ...]:
    """Edges 0, 1, 2, 4, ... up to the first power of two > ``max_value`` (token positions)."""
    edges = [0.0, 1.0]
    while edges[-1] <= max_value:
        edges.append(edges[-1] * 2.0)
    return tuple(edges)


# ----------------------------------------------------------------------------- intervals


def wilson_ci(successes: int, n: int, conf: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion (no continuity correction)."""
    _check_conf(conf)
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = _z(conf)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact bounds at the edges
    high = 1.0 if successes == n else min(1.0, center + half)
    return Interval(p, low, high, conf)


def _bootstrap_means(x: FloatArray, n_boot: int, seed: int) -> FloatArray:
    """Means of ``n_boot`` resamples (with replacement) of the 1-D array ``x``; chunked so the
    index matrix stays small. Deterministic for a given (x.size, n_boot, seed)."""
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    rng = np.random.default_rng(seed)
    n = x.size
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def mean_ci(
    values: ArrayLike,
    conf: float = 0.95,
    method: Literal["t", "bootstrap"] = "t",
    n_boot: int = 10_000,
    seed: int = 0,
) -> Interval:
    """CI of a mean. ``t``: mean ± t_{n-1}·s/√n (use for roughly symmetric data or n ≳ 30);
    ``bootstrap``: percentile interval of resampled means (skewed or bounded data).
    With n == 1 the bounds are NaN."""
    _check_conf(conf)
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_ci of an empty sample")
    m = float(x.mean())
    if x.size == 1:
        return Interval(m, math.nan, math.nan, conf)
    if method == "t":
        half = float(st.t.ppf(0.5 + conf / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
        return Interval(m, m - half, m + half, conf)
    if method == "bootstrap":
        boot = _bootstrap_means(x, n_boot, seed)
        lo, hi = np.quantile(boot, [0.5 - conf / 2, 0.5 + conf / 2])
        return Interval(m, float(lo), float(hi), conf)
    raise ValueError(f"unknown method {method!r}")


# ----------------------------------------------------------------------------- paired tests


def discordant_counts(a: ArrayLike, b: ArrayLike) -> tuple[int, int, int]:
    """(b, c, n) from paired 0/1 outcomes: b = A right & B wrong, c = A wrong & B right."""
    x = np.asarray(a).ravel()
    y = np.asarray(b).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired outcomes differ in length: {x.size} vs {y.size}")
    if not (np.isin(x, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise ValueError("discordant_counts needs 0/1 outcomes")
    xb, yb = x.astype(bool), y.astype(bool)
    return int(np.sum(xb & ~yb)), int(np.sum(~xb & yb)), int(x.size)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of b vs Binomial(b + c, 1/2);
    p = min(1, 2·P[X <= min(b, c)]). Returns 1.0 when there are no discordant pairs."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * st.binom.cdf(min(b, c), n, 0.5)))


def paired_bootstrap_clustered(
    a: ArrayLike, b: ArrayLike, n_boot: int = 10_000, seed: int = 0, conf: float = 0.95
) -> BootstrapResult:
    """Paired bootstrap clustered by problem.

    ``a`` and ``b`` are ``[problems, samples]`` (1-D means one sample per problem); row p of both
    is the same problem and column j the same sample index. Each resample draws problems with
    replacement and keeps every chosen problem's A and B samples together, so the statistic is
    the mean over drawn problems of d_p = mean_j b[p, j] - mean_j a[p, j]. The interval is the
    percentile interval of the resampled Δ.
    """
    _check_conf(conf)
    d, n_problems, k = _per_problem_diffs(a, b)
    boot = _bootstrap_means(d, n_boot, seed)
    lo, hi = np.quantile(boot, [0.5 - conf / 2, 0.5 + conf / 2])
    se = float(boot.std(ddof=1)) if n_boot > 1 else math.nan
    return BootstrapResult(float(d.mean()), float(lo), float(hi), conf, se, n_problems, k, n_boot, seed)


def _per_problem_diffs(a: ArrayLike, b: ArrayLike) -> tuple[FloatArray, int, int]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"paired arrays must both be [problems, samples]; got {x.shape} and {y.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError("paired arrays are empty")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired arrays contain non-finite values")
    return y.mean(axis=1) - x.mean(axis=1), x.shape[0], x.shape[1]


# ----------------------------------------------------------------------------- equivalence (TOST)


def _tost_from_normal(center: float, se: float, margin: float, alpha: float) -> tuple[float, float, float]:
    """(low, high, p) of a z-based TOST around ``center`` with standard error ``se``."""
    z = float(st.norm.ppf(1 - alpha))
    p_lower = float(st.norm.sf((center + margin) / se))  # H0: Δ <= -margin
    p_upper = float(st.norm.sf((margin - center) / se))  # H0: Δ >= +margin
    return center - z * se, center + z * se, max(p_lower, p_upper)


def _agresti_min(b: int, c: int, n: int) -> tuple[float, float]:
    """(adjusted Δ̃, se) of the Agresti–Min interval: add 1/2 to each of the four cells."""
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"invalid paired counts: b={b} c={c} n={n}")
    bp, cp, n2 = b + 0.5, c + 0.5, n + 2.0
    center = (cp - bp) / n2
    return center, math.sqrt(max((bp + cp) / n2 - center * center, 0.0) / n2)


def paired_diff_ci(b: int, c: int, n: int, conf: float = 0.95) -> Interval:
    """CI of Δ = (c - b)/n for paired 0/1 outcomes: Agresti–Min adjusted Wald interval
    (Agresti & Min 2005), Δ̃ ± z·se with Δ̃ and se as in `tost_paired_counts`."""
    _check_conf(conf)
    center, se = _agresti_min(b, c, n)
    z = _z(conf)
    return Interval((c - b) / n, center - z * se, center + z * se, conf)


def tost_paired_counts(b: int, c: int, n: int, margin: float, alpha: float = 0.05) -> TostResult:
    """TOST for paired 0/1 outcomes (greedy runs) from the discordant counts.

    Definition: the Agresti–Min adjusted Wald interval for a difference of paired proportions
    (add 1/2 to each of the four cells: b' = b + 1/2, c' = c + 1/2, n' = n + 2) gives
    Δ̃ = (c' - b')/n' and se = sqrt(((b' + c')/n' - Δ̃²)/n'); the adjustment keeps se > 0 even
    with no discordant pairs. The one-sided z-tests of H0: Δ <= -margin and H0: Δ >= margin
    use Δ̃ and se; p = max of the two. ``equivalent`` iff Δ̃ ± z_{1-α}·se lies inside ±margin,
    which is the same decision as p < alpha. ``delta`` is the raw (c - b)/n. A note flags
    fewer than 10 discordant pairs or n < 30, where the normal approximation is rough.
    """
    _check_alpha(alpha)
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    center, se = _agresti_min(b, c, n)
    low, high, p = _tost_from_normal(center, se, margin, alpha)
    note = None
    if b + c < 10 or n < 30:
        note = f"small sample (n={n}, discordant={b + c}): normal approximation is rough"
    return TostResult(
        (c - b) / n, low, high, margin, alpha, p, -margin < low and high < margin, "agresti-min-z", note
    )


def tost_paired_diffs(diffs: ArrayLike, margin: float, alpha: float = 0.05) -> TostResult:
    """Paired t TOST on per-problem differences d_p (B - A): mean ± t_{n-1, 1-α}·s/√n; one-sided
    t-tests of H0: mean <= -margin and H0: mean >= margin; p = max. Needs n >= 2. A zero-variance
    sample is decided exactly (equivalent iff |mean| < margin)."""
    _check_alpha(alpha)
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if margin <= 0 or d.size < 2:
        raise ValueError("tost_paired_diffs needs margin > 0 and at least two differences")
    m, se, df = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1
    if se == 0.0:
        inside = abs(m) < margin
        return TostResult(m, m, m, margin, alpha, 0.0 if inside else 1.0, inside, "paired-t", "zero variance")
    tq = float(st.t.ppf(1 - alpha, df))
    p = max(float(st.t.sf((m + margin) / se, df)), float(st.t.sf((margin - m) / se, df)))
    low, high = m - tq * se, m + tq * se
    note = "small sample (n < 10)" if d.size < 10 else None
    return TostResult(m, low, high, margin, alpha, p, -margin < low and high < margin, "paired-t", note)


def tost_paired_bootstrap(
    a: ArrayLike, b: ArrayLike, margin: float, alpha: float = 0.05, n_boot: int = 10_000, seed: int = 0
) -> TostResult:
    """TOST from the clustered paired bootstrap (k-sample runs; see `paired_bootstrap_clustered`).

    The interval is the percentile (α, 1 - α) interval of the resampled Δ and ``equivalent`` is
    True iff it lies inside ±margin. ``p_value`` = max(P*[Δ* <= -margin], P*[Δ* >= margin]) over
    the resamples; it agrees with the interval decision up to quantile interpolation.
    """
    _check_alpha(alpha)
    if margin <= 0:
        raise ValueError("margin must be > 0")
    d, n_problems, _ = _per_problem_diffs(a, b)
    boot = _bootstrap_means(d, n_boot, seed)
    low, high = (float(v) for v in np.quantile(boot, [alpha, 1 - alpha]))
    p = max(float(np.mean(boot <= -margin)), float(np.mean(boot >= margin)))
    note = "small sample (fewer than 10 problems)" if n_problems < 10 else None
    equivalent = -margin < low and high < margin
    return TostResult(float(d.mean()), low, high, margin, alpha, p, equivalent, "clustered-bootstrap", note)


# ----------------------------------------------------------------------------- power planning


def _z_power(alpha: float, power: float) -> float:
    _check_alpha(alpha)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    return float(st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power))


def within_problem_variance(p_base: float, icc: float = DEFAULT_ICC) -> float:
    """Mean per-problem Bernoulli variance E[p_i(1 - p_i)] when the suite's mean solve rate is
    ``p_base`` and a share ``icc`` of a single sample's variance p(1-p) lies between problems:
    E[p_i(1-p_i)] = p_base(1 - p_base)(1 - icc). For per-problem rates p_i ~ Beta with mean
    p_base and concentration κ this is exact with icc = 1/(κ + 1); the default 0.6 (κ = 2/3, a
    U-shaped spread: most AIME problems are almost always or almost never solved) gives 0.1 at
    p_base = 0.5."""
    if not 0.0 <= p_base <= 1.0 or not 0.0 <= icc < 1.0:
        raise ValueError("need 0 <= p_base <= 1 and 0 <= icc < 1")
    return p_base * (1.0 - p_base) * (1.0 - icc)


def per_problem_variance(rates: ArrayLike) -> float:
    """E[p_i(1-p_i)] from observed per-problem solve rates (e.g. from a previous run)."""
    r = np.asarray(rates, dtype=np.float64).ravel()
    if r.size == 0 or np.any((r < 0) | (r > 1)):
        raise ValueError("rates must be a non-empty array in [0, 1]")
    return float(np.mean(r * (1 - r)))


def _variance(p_base: float, per_problem_var: float | None, icc: float) -> float:
    v = within_problem_variance(p_base, icc) if per_problem_var is None else per_problem_var
    if v <= 0:
        raise ValueError("per-problem variance must be > 0")
    return v


def mde_paired_proportion(
    n_problems: int,
    k_samples: int,
    p_base: float = 0.5,
    per_problem_var: float | None = None,
    icc: float = DEFAULT_ICC,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Minimum detectable Δ (as a proportion: 0.01 = 1 point) of a k-sample paired comparison.

    Assumptions: every problem's A and B samples are independent Bernoulli draws at the
    problem's solve rate p_i; the change shifts all problems alike; Δ̂ = mean over problems of
    (mean_k B - mean_k A), so Var(Δ̂) = 2·v/(n_problems·k) with v = E[p_i(1-p_i)] (between-problem
    spread cancels in the pairing). ``per_problem_var`` gives v directly; otherwise it comes from
    `within_problem_variance(p_base, icc)`. Two-sided level ``alpha``, normal approximation:
    MDE = (z_{1-α/2} + z_power)·sqrt(2v/(n_problems·k)). With the defaults, 60 AIME problems need
    k ≈ 262 to detect 1 point (`samples_needed`).
    """
    if n_problems <= 0 or k_samples <= 0:
        raise ValueError("n_problems and k_samples must be positive")
    v = _variance(p_base, per_problem_var, icc)
    return _z_power(alpha, power) * math.sqrt(2.0 * v / (n_problems * k_samples))


def samples_needed(
    effect: float,
    n_problems: int,
    p_base: float = 0.5,
    per_problem_var: float | None = None,
    icc: float = DEFAULT_ICC,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Samples per problem (per path) to detect ``effect`` (the inverse of `mde_paired_proportion`):
    k = ceil(2v·(z_{1-α/2} + z_power)² / (n_problems·effect²))."""
    if effect <= 0 or n_problems <= 0:
        raise ValueError("effect and n_problems must be positive")
    v = _variance(p_base, per_problem_var, icc)
    return math.ceil(2.0 * v * _z_power(alpha, power) ** 2 / (n_problems * effect**2))


def _mcnemar_n(effect: float, discordance: float, z_a: float, z_b: float) -> float:
    return (z_a * math.sqrt(discordance) + z_b * math.sqrt(discordance - effect**2)) ** 2 / effect**2


def mde_mcnemar(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable Δ = p01 - p10 of greedy McNemar with n pairs and discordance rate
    ψ = p01 + p10 (Connor 1987 normal approximation): n = (z_{1-α/2}√ψ + z_power√(ψ - Δ²))²/Δ²,
    solved for Δ. Returns inf when no Δ <= ψ is detectable (too few pairs)."""
    if n <= 0 or not 0.0 < discordance <= 1.0:
        raise ValueError("need n > 0 and 0 < discordance <= 1")
    _z_power(alpha, power)
    z_a, z_b = float(st.norm.ppf(1 - alpha / 2)), float(st.norm.ppf(power))
    f = lambda d: _mcnemar_n(d, discordance, z_a, z_b) - n  # decreasing in d
    if f(discordance) > 0:
        return math.inf
    return float(optimize.brentq(f, 1e-12, discordance, xtol=1e-12))


def mcnemar_pairs_needed(effect: float, discordance: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Pairs (prompts) a greedy McNemar comparison needs to detect Δ = ``effect`` (Connor 1987)."""
    if not 0.0 < effect <= discordance <= 1.0:
        raise ValueError("need 0 < effect <= discordance <= 1")
    _z_power(alpha, power)
    z_a, z_b = float(st.norm.ppf(1 - alpha / 2)), float(st.norm.ppf(power))
    return math.ceil(_mcnemar_n(effect, discordance, z_a, z_b))


# ----------------------------------------------------------------------------- distance to a reference

# A ratio whose denominator is exactly zero (anchors identical to the reference) is reported as this cap,
# not as infinity, so every figure stays a finite JSON number; 0/0 is 1 (both at exactly zero distance).
RATIO_CAP = 1e9


@dataclass(frozen=True)
class RatioInterval(Result):
    estimate: float
    low: float
    high: float
    conf: float
    n_clusters: int
    n_boot: int


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, RATIO_CAP, 1.0))
    return np.minimum(r, RATIO_CAP)


def _cluster_draws(n_clusters: int, n_boot: int, seed: int) -> NDArray[np.int64]:
    """Resample counts per cluster [n_boot, C]: a multinomial draw is one bootstrap resample of clusters."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)


def cluster_ratio_ci(
    num: ArrayLike, dens: ArrayLike, n_boot: int = 2000, seed: int = 0, conf: float = 0.95
) -> RatioInterval:
    """Σ num / max_j Σ dens[j] over clusters, with a percentile CI from resampling clusters.

    ``num`` is [C] (one arm's per-cluster totals, e.g. summed |Δlogprob| over a prompt's positions) and
    ``dens`` [J, C] (each correct anchor's totals on the same clusters). Numerator and denominators share
    every resample (paired), so what the prompts have in common cancels. The largest anchor total is the
    denominator: a path passes when it is no farther from the reference than the farthest correct anchor.
    """
    _check_conf(conf)
    x = np.asarray(num, dtype=np.float64)
    d = np.atleast_2d(np.asarray(dens, dtype=np.float64))
    if x.ndim != 1 or x.size == 0 or d.shape[1] != x.size:
        raise ValueError(f"need [C] numerators and [J, C] denominators; got {x.shape} and {d.shape}")
    point = float(_ratio(np.array([x.sum()]), np.array([d.sum(axis=1).max()]))[0])
    w = _cluster_draws(x.size, n_boot, seed).astype(np.float64)
    boot = _ratio(w @ x, (w @ d.T).max(axis=1))
    lo, hi = np.quantile(boot, [0.5 - conf / 2, 0.5 + conf / 2])
    return RatioInterval(point, float(lo), float(hi), conf, int(x.size), n_boot)


def cluster_rate_diff_ci(
    events: ArrayLike,
    anchor_events: ArrayLike,
    trials: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    conf: float = 0.95,
) -> Interval:
    """Σ events / Σ trials - max_j Σ anchor_events[j] / Σ trials, clusters resampled together.

    For rates over the same trials (e.g. prompts whose continuation forked at a confident position): the
    arm's rate against the worst correct anchor's, paired by cluster."""
    _check_conf(conf)
    x = np.asarray(events, dtype=np.float64)
    a = np.atleast_2d(np.asarray(anchor_events, dtype=np.float64))
    n = np.asarray(trials, dtype=np.float64)
    if x.shape != n.shape or a.shape[1] != x.size or x.size == 0 or n.sum() <= 0:
        raise ValueError(f"need [C] events and trials and [J, C] anchor events; got {x.shape}, {a.shape}")
    point = float(x.sum() / n.sum() - (a.sum(axis=1) / n.sum()).max())
    w = _cluster_draws(x.size, n_boot, seed).astype(np.float64)
    total = np.maximum(w @ n, 1e-300)
    boot = (w @ x) / total - ((w @ a.T) / total[:, None]).max(axis=1)
    lo, hi = np.quantile(boot, [0.5 - conf / 2, 0.5 + conf / 2])
    return Interval(point, float(lo), float(hi), conf)
