"""`rope-eval plan`: what a profile will cost and what it can detect, before running it.

The point it makes to a release manager: task accuracy is an expensive detector. A 1-point
AIME change needs about 260 samples per problem, which is why L1 and L2 exist.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from eval_harness.config import LM_EVAL_PREFIX, ModelEntry, Profile, RunConfig
from eval_harness.stats import mde_mcnemar, mde_paired_proportion, samples_needed
from eval_harness.suites import DataSource, Item, get_suite

CHARS_PER_TOKEN = 4.0  # rough BPE average for English and LaTeX; enough for a budget
DEFAULT_DISCORDANCE = 0.05  # share of greedy problems that flip between two equivalent paths

# Sizing a greedy suite whose baseline accuracy is known (a suite's `baseline_accuracy`): problems for
# POWER to detect a DROP in accuracy with McNemar's exact test at ALPHA, under `DropModel`.
DROP = 0.10
POWER = 0.90
ALPHA = 0.05
BACKGROUND = 0.02  # discordant pairs that are not the drop's, half each way (see DropModel)


@dataclass(frozen=True)
class DropModel:
    """Paired greedy outcomes (baseline, path) under a path that costs `drop` accuracy.

    A share `drop` of the problems goes from right to wrong, all in the drop's direction, and on top of it a
    `background` share flips at random, half each way (a broken path also fixes a few problems by luck).
    So p10 = P(baseline right, path wrong) = drop + background/2 and p01 = background/2; the net drop is
    `drop`. The flips must fit: p10 <= baseline and p01 <= 1 - baseline."""

    baseline: float
    drop: float = DROP
    background: float = BACKGROUND

    def __post_init__(self) -> None:
        if not 0.0 < self.drop <= self.baseline <= 1.0 or self.background < 0.0:
            raise ValueError(f"need 0 < drop <= baseline <= 1 and background >= 0: {self}")
        if self.p10 > self.baseline or self.p01 > 1.0 - self.baseline:
            raise ValueError(f"{self}: the flips exceed the problems the baseline gets right or wrong")

    @property
    def p10(self) -> float:
        return self.drop + self.background / 2

    @property
    def p01(self) -> float:
        return self.background / 2


def mcnemar_critical(m: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Per count m of discordant pairs, the largest minority count c whose exact two-sided McNemar p-value
    2·P[Binom(m, 1/2) <= c] is <= alpha (the test rejects iff min(b, c) <= this); -1 where none is."""
    half = alpha / 2
    c = st.binom.ppf(half, m, 0.5)  # smallest c with cdf >= alpha/2; step back where cdf overshoots
    c = np.where(st.binom.cdf(c, m, 0.5) > half * (1 + 1e-12), c - 1, c)
    return np.where(m > 0, c, -1).astype(np.int64)


def _reject_given_discordant(m_max: int, model: DropModel, alpha: float) -> np.ndarray:
    """P(the test rejects in the drop's direction | M = m discordant pairs), m = 0..m_max: given m, the
    drop-direction count B is Binomial(m, p10 / (p10 + p01)), and the test rejects iff
    m - B <= mcnemar_critical(m) (which implies B > m - B)."""
    m = np.arange(m_max + 1)
    crit = mcnemar_critical(m, alpha)
    share = model.p10 / (model.p10 + model.p01)
    return np.where(crit >= 0, st.binom.sf(m - crit - 1, m, share), 0.0)


def power_curve(n_max: int, model: DropModel, alpha: float = ALPHA) -> np.ndarray:
    """Exact power of the two-sided exact McNemar test to reject in the drop's direction, for n = 1..n_max
    problems (entry n - 1). The count of discordant pairs M is Binomial(n, p10 + p01); its distribution for
    n + 1 follows from n's by one Bernoulli step, so the whole curve costs O(n_max^2) additions."""
    if n_max <= 0:
        raise ValueError(f"need n > 0 problems, got {n_max}")
    psi = model.p10 + model.p01
    reject = _reject_given_discordant(n_max, model, alpha)
    pmf = np.zeros(n_max + 1)
    pmf[0] = 1.0
    out = np.empty(n_max)
    for n in range(1, n_max + 1):
        pmf[1 : n + 1] = pmf[1 : n + 1] * (1 - psi) + pmf[:n] * psi
        pmf[0] *= 1 - psi
        out[n - 1] = pmf[: n + 1] @ reject[: n + 1]
    return out


def mcnemar_power(n: int, model: DropModel, alpha: float = ALPHA) -> float:
    """Exact power on n problems (see power_curve)."""
    return float(power_curve(n, model, alpha)[-1])


def problems_for_power(model: DropModel, power: float = POWER, alpha: float = ALPHA) -> int:
    """The smallest n from which the exact power stays >= `power`.

    An exact test's power saw-tooths in n, so the first n that reaches `power` can be followed by ones that
    do not; this looks up to twice the first crossing (plus 50) and returns the n after the last miss."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    n_max = 256
    while True:
        curve = power_curve(n_max, model, alpha)
        hits = np.flatnonzero(curve >= power)
        if hits.size and n_max >= 2 * (hits[0] + 1) + 50:
            first = int(hits[0]) + 1
            misses = np.flatnonzero(curve[: 2 * first + 50] < power) + 1
            return int(misses[-1]) + 1 if misses.size else 1
        if n_max > 100_000:
            raise ValueError(f"{model}: more than 100000 problems needed")
        n_max *= 2


def mde_drop(n: int, baseline: float, background: float = BACKGROUND, power: float = 0.8) -> float:
    """The smallest accuracy drop from `baseline` that n problems detect with `power` under DropModel
    (bisection: more drop-direction flips only raise the power); inf when even the largest cannot."""
    top = baseline - background / 2  # p10 <= baseline
    if mcnemar_power(n, DropModel(baseline, top, background)) < power:
        return math.inf
    lo, hi = 0.0, top
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if mcnemar_power(n, DropModel(baseline, mid, background)) >= power else (mid, hi)
    return hi


@dataclass(frozen=True)
class SuitePlan:
    model: str
    suite: str
    problems: int
    k: int
    requests_per_path: int
    est_tokens_per_path: int
    mde: float  # minimum detectable Δ accuracy at 80% power (a proportion)
    mde_method: str
    k_for_effect: int | None  # samples per problem to detect the target effect
    sizing: DropSizing | None = None  # greedy suites with a measured baseline accuracy


@dataclass(frozen=True)
class DropSizing:
    """How many problems McNemar needs to see a DROP from a suite's measured baseline, and what the profile's
    problem count gives."""

    model: DropModel
    problems_needed: int  # for POWER at ALPHA
    power_at_limit: float  # exact power with the profile's problems


@functools.lru_cache(maxsize=32)
def drop_sizing(model: DropModel, problems: int) -> DropSizing:
    return DropSizing(model, problems_for_power(model), mcnemar_power(problems, model))


def _prompt_chars(suite_name: str, items: list[Item], style: str) -> float:
    suite = get_suite(suite_name)
    total = 0
    for it in items:
        p = suite.prompt(it, style)
        total += len(p.text or "") + sum(len(m["content"]) for m in p.messages or [])
    return total / max(1, len(items))


def plan_suite(
    cfg: RunConfig, model: ModelEntry, name: str, items: list[Item], effect: float, discordance: float
) -> SuitePlan:
    sc = cfg.suites[name]
    n, k = len(items), sc.sampling.k
    tokens = int(n * k * (_prompt_chars(name, items, sc.style) / CHARS_PER_TOKEN + sc.sampling.max_tokens))
    sizing = None
    if sc.sampling.greedy:
        mde, method = mde_mcnemar(n, discordance), f"McNemar, {discordance:.0%} discordant"
        k_eff = None
        baseline = getattr(get_suite(name), "baseline_accuracy", None)  # measured, where a suite has one
        if baseline is not None and n > 0:
            sizing = drop_sizing(DropModel(baseline), n)
            mde = mde_drop(n, baseline)
            method = f"McNemar exact, drop from {baseline:.0%}, {BACKGROUND / 2:.0%} flips each way"
    else:
        mde, method = mde_paired_proportion(n, k), "clustered bootstrap (ICC 0.6)"
        k_eff = samples_needed(effect, n)
    return SuitePlan(model.name, name, n, k, n * k, tokens, mde, method, k_eff, sizing)


def plan(
    cfg: RunConfig,
    profile: Profile,
    source: DataSource,
    effect: float = 0.01,
    discordance: float = DEFAULT_DISCORDANCE,
) -> list[SuitePlan]:
    out = []
    for model in cfg.models:
        # `lm-eval:` suites load their documents inside lm-eval, at run time
        for name in [s for s in cfg.suites_for(model) if not s.startswith(LM_EVAL_PREFIX)]:
            items = get_suite(name).load(source, "test", cfg.suites[name].limit.get(profile))
            out.append(plan_suite(cfg, model, name, items, effect, discordance))
    return out


def render(plans: list[SuitePlan], cfg: RunConfig, profile: Profile, effect: float) -> str:
    from eval_harness.runner import plan_arms  # the arms as the runner will serve them (reference, A/A)

    arms = plan_arms(cfg, profile)
    paths = len(arms)
    lines = [
        f"plan for {cfg.name} ({profile}): {paths} arms per model: {', '.join(a.label for a in arms)}",
        f"{'model':<16} {'suite':<14} {'problems':>8} {'k':>4} {'requests':>9} {'~tokens':>10} "
        f"{'MDE@80%':>8}  method; k to detect {effect:.1%}",
    ]
    for p in plans:
        mde = "none" if math.isinf(p.mde) else f"{p.mde:.1%}"
        k_eff = f"; k={p.k_for_effect}" if p.k_for_effect else ""
        lines.append(
            f"{p.model:<16} {p.suite:<14} {p.problems:>8} {p.k:>4} {p.requests_per_path:>9} "
            f"{p.est_tokens_per_path:>10} {mde:>8}  {p.mde_method}{k_eff}"
        )
    total = sum(p.requests_per_path for p in plans) * paths
    lines.append(
        f"total generation requests (all arms): {total}; L1 adds "
        f"{cfg.l1.sequences[profile]} teacher-forced sequences per arm"
    )
    lines += _sizing_lines(plans)
    return "\n".join(lines)


def _sizing_lines(plans: list[SuitePlan]) -> list[str]:
    """One line per suite with a measured baseline (the sizing depends on the suite, not the model)."""
    lines = []
    seen = set()
    for p in plans:
        if p.sizing is None or (p.suite, p.problems) in seen:
            continue
        seen.add((p.suite, p.problems))
        m = p.sizing.model
        lines.append(
            f"{p.suite}: McNemar exact (two-sided, alpha {ALPHA}) needs {p.sizing.problems_needed} problems "
            f"for {POWER:.0%} power to detect a {m.drop * 100:.0f}-point accuracy drop from the measured "
            f"{m.baseline:.0%} (flips: {m.p10:.1%} right->wrong, {m.p01:.1%} wrong->right); "
            f"this profile's {p.problems} give {p.sizing.power_at_limit:.1%}"
        )
    return lines
