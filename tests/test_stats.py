"""eval_harness.stats against scipy, hand-computed textbook values and invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import stats as st

from eval_harness import stats

FAST = settings(max_examples=60, deadline=None)


# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(
    ("k", "n", "conf"), [(0, 10, 0.95), (8, 10, 0.95), (81, 263, 0.9), (1319, 1319, 0.99)]
)
def test_wilson_matches_scipy(k: int, n: int, conf: float) -> None:
    ref = st.binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
    got = stats.wilson_ci(k, n, conf)
    assert got.estimate == pytest.approx(k / n)
    assert (got.low, got.high) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_textbook_zero_of_ten() -> None:
    # Upper bound for 0/n is z²/(n + z²): 3.8415/13.8415 = 0.27753.
    ci = stats.wilson_ci(0, 10)
    assert ci.low == 0.0
    assert ci.high == pytest.approx(0.27753, abs=1e-5)


@given(hst.integers(1, 500).flatmap(lambda n: hst.tuples(hst.integers(0, n), hst.just(n))))
@FAST
def test_wilson_brackets_estimate(kn: tuple[int, int]) -> None:
    ci = stats.wilson_ci(*kn)
    assert 0.0 <= ci.low <= ci.estimate <= ci.high <= 1.0


def test_wilson_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        stats.wilson_ci(3, 0)
    with pytest.raises(ValueError):
        stats.wilson_ci(5, 4)


def test_mean_ci_t_textbook_and_scipy() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ci = stats.mean_ci(x, 0.95, "t")
    # mean 3, s = sqrt(2.5), t_{4, .975} = 2.776445 -> half width 1.963243.
    assert (ci.low, ci.high) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-6)
    ref = st.t.interval(0.95, 4, loc=3.0, scale=st.sem(x))
    assert (ci.low, ci.high) == pytest.approx(ref, abs=1e-12)


def test_mean_ci_bootstrap_close_to_t_and_deterministic() -> None:
    x = np.random.default_rng(1).normal(10.0, 2.0, size=400)
    t_ci = stats.mean_ci(x, method="t")
    b_ci = stats.mean_ci(x, method="bootstrap", n_boot=4000, seed=3)
    assert b_ci == stats.mean_ci(x, method="bootstrap", n_boot=4000, seed=3)
    assert b_ci.low == pytest.approx(t_ci.low, abs=0.03)
    assert b_ci.high == pytest.approx(t_ci.high, abs=0.03)


def test_mean_ci_edge_cases() -> None:
    one = stats.mean_ci([0.7])
    assert one.estimate == 0.7 and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(ValueError):
        stats.mean_ci([])
    with pytest.raises(ValueError):
        stats.mean_ci([1.0, 2.0], method="magic")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- McNemar


def test_mcnemar_textbook_values() -> None:
    assert stats.mcnemar_exact(2, 8) == pytest.approx(0.109375, abs=1e-12)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)


@pytest.mark.parametrize(("b", "c"), [(0, 1), (3, 17), (40, 60), (100, 80), (7, 7), (1, 30)])
def test_mcnemar_matches_scipy_binomtest(b: int, c: int) -> None:
    ref = st.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-10)


@given(hst.integers(0, 300), hst.integers(0, 300))
@FAST
def test_mcnemar_symmetric_and_bounded(b: int, c: int) -> None:
    p = stats.mcnemar_exact(b, c)
    assert p == stats.mcnemar_exact(c, b)
    assert 0.0 < p <= 1.0


def test_discordant_counts() -> None:
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 1, 1, 1, 0]
    assert stats.discordant_counts(a, b) == (1, 2, 6)
    with pytest.raises(ValueError):
        stats.discordant_counts([1, 0], [1])
    with pytest.raises(ValueError):
        stats.discordant_counts([0.5], [1])


# ----------------------------------------------------------------------------- clustered bootstrap


def test_bootstrap_point_estimate_and_determinism() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, size=(50, 8))
    b = rng.integers(0, 2, size=(50, 8))
    r1 = stats.paired_bootstrap_clustered(a, b, n_boot=2000, seed=7)
    r2 = stats.paired_bootstrap_clustered(a, b, n_boot=2000, seed=7)
    r3 = stats.paired_bootstrap_clustered(a, b, n_boot=2000, seed=8)
    assert r1 == r2
    assert r1 != r3
    assert r1.delta == pytest.approx(b.mean() - a.mean())
    assert (r1.n_problems, r1.k_samples) == (50, 8)


def test_bootstrap_clusters_by_problem() -> None:
    # Samples that repeat within a problem carry no extra information: a [P, K] array whose rows
    # are constant must give the same interval as the [P, 1] array. An i.i.d. bootstrap over all
    # P*K samples would shrink it by about sqrt(K).
    rng = np.random.default_rng(2)
    a1 = rng.integers(0, 2, size=(200, 1)).astype(float)
    b1 = rng.integers(0, 2, size=(200, 1)).astype(float)
    narrow = stats.paired_bootstrap_clustered(a1, b1, n_boot=3000, seed=1)
    wide = stats.paired_bootstrap_clustered(np.repeat(a1, 16, axis=1), np.repeat(b1, 16, axis=1), 3000, 1)
    assert (wide.low, wide.high) == pytest.approx((narrow.low, narrow.high), abs=1e-12)


def test_bootstrap_se_matches_analytic() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((500, 4))
    b = a + rng.normal(0.01, 0.2, size=(500, 4))
    r = stats.paired_bootstrap_clustered(a, b, n_boot=4000, seed=0)
    d = b.mean(axis=1) - a.mean(axis=1)
    assert r.se == pytest.approx(d.std(ddof=0) / math.sqrt(d.size), rel=0.06)


def test_bootstrap_fast_for_gsm8k_size() -> None:
    import time

    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, size=(1319, 10))
    b = rng.integers(0, 2, size=(1319, 10))
    t0 = time.perf_counter()
    stats.paired_bootstrap_clustered(a, b, n_boot=10_000, seed=0)
    assert time.perf_counter() - t0 < 3.0


@given(
    hst.integers(1, 30).flatmap(
        lambda p: hst.tuples(
            hst.lists(hst.integers(0, 1), min_size=p * 3, max_size=p * 3),
            hst.lists(hst.integers(0, 1), min_size=p * 3, max_size=p * 3),
        )
    )
)
@FAST
def test_bootstrap_ci_contains_delta(ab: tuple[list[int], list[int]]) -> None:
    a = np.asarray(ab[0], dtype=float).reshape(-1, 3)
    b = np.asarray(ab[1], dtype=float).reshape(-1, 3)
    r = stats.paired_bootstrap_clustered(a, b, n_boot=500, seed=0)
    assert r.low - 1e-12 <= r.delta <= r.high + 1e-12


def test_bootstrap_rejects_unpaired_shapes() -> None:
    with pytest.raises(ValueError):
        stats.paired_bootstrap_clustered(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        stats.paired_bootstrap_clustered(np.zeros((0, 2)), np.zeros((0, 2)))


# ----------------------------------------------------------------------------- TOST


def test_tost_counts_hand_computed() -> None:
    # b = c = 0, n = 98: Δ̃ = 0, se = sqrt((1/100)/100) = 0.01; 90% interval ±1.644854·0.01.
    r = stats.tost_paired_counts(0, 0, 98, margin=0.02)
    assert (r.low, r.high) == pytest.approx((-0.01644854, 0.01644854), abs=1e-7)
    assert r.p_value == pytest.approx(st.norm.sf(2.0), rel=1e-9)  # (0 + 0.02) / 0.01 = 2
    assert r.equivalent
    assert not stats.tost_paired_counts(0, 0, 98, margin=0.015).equivalent


def test_tost_counts_interval_is_agresti_min_at_1_minus_2alpha() -> None:
    r = stats.tost_paired_counts(12, 20, 500, margin=0.03, alpha=0.05)
    ci = stats.paired_diff_ci(12, 20, 500, conf=0.90)
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high))
    assert r.delta == pytest.approx(8 / 500)
    assert r.note is None
    assert stats.tost_paired_counts(1, 2, 500, margin=0.03).note is not None


@given(
    hst.integers(1, 2000).flatmap(
        lambda n: hst.tuples(hst.integers(0, n // 2), hst.integers(0, n // 2), hst.just(n))
    )
)
@FAST
def test_tost_counts_decision_matches_p_and_is_antisymmetric(bcn: tuple[int, int, int]) -> None:
    b, c, n = bcn
    r = stats.tost_paired_counts(b, c, n, margin=0.02)
    assert r.equivalent == (r.p_value < 0.05)
    s = stats.tost_paired_counts(c, b, n, margin=0.02)
    assert (s.low, s.high) == pytest.approx((-r.high, -r.low), abs=1e-12)
    assert s.p_value == pytest.approx(r.p_value, abs=1e-12)


def test_tost_diffs_matches_scipy_one_sided_t_tests() -> None:
    d = np.random.default_rng(5).normal(0.004, 0.05, size=60)
    m = 0.02
    r = stats.tost_paired_diffs(d, m)
    p_lo = st.ttest_1samp(d, -m, alternative="greater").pvalue
    p_hi = st.ttest_1samp(d, m, alternative="less").pvalue
    assert r.p_value == pytest.approx(max(p_lo, p_hi), rel=1e-9)
    ci = st.t.interval(0.90, d.size - 1, loc=d.mean(), scale=st.sem(d))
    assert (r.low, r.high) == pytest.approx(ci, rel=1e-9)
    assert r.equivalent == (r.p_value < 0.05)


def test_tost_diffs_zero_variance() -> None:
    assert stats.tost_paired_diffs([0.0] * 5, 0.01).equivalent
    assert not stats.tost_paired_diffs([0.05] * 5, 0.01).equivalent
    with pytest.raises(ValueError):
        stats.tost_paired_diffs([0.1], 0.01)


def test_tost_bootstrap_decisions() -> None:
    rng = np.random.default_rng(6)
    a = rng.integers(0, 2, size=(1000, 4)).astype(float)
    same = stats.tost_paired_bootstrap(a, a.copy(), margin=0.01, n_boot=2000)
    assert same.equivalent and same.p_value == 0.0 and same.low == same.high == 0.0
    noisy = rng.integers(0, 2, size=(1000, 4)).astype(float)
    r = stats.tost_paired_bootstrap(a, noisy, margin=0.01, n_boot=2000)
    assert not r.equivalent  # independent samples: Δ's 90% CI is about ±0.03
    assert r.p_value >= 0.05
    boot = stats.paired_bootstrap_clustered(a, noisy, n_boot=2000, conf=0.90)
    assert (r.low, r.high) == pytest.approx((boot.low, boot.high))


# ----------------------------------------------------------------------------- power planning


def test_samples_needed_reproduces_design_aime_figure() -> None:
    # A 1-point AIME change needs about 260 samples per problem on 60 problems.
    k = stats.samples_needed(0.01, n_problems=60, p_base=0.5)
    assert 208 <= k <= 312
    assert k == 262  # 2 * 0.1 * (1.959964 + 0.841621)^2 / (60 * 1e-4) = 261.6


def test_mde_and_samples_needed_are_inverse() -> None:
    for eff in (0.005, 0.01, 0.03):
        k = stats.samples_needed(eff, n_problems=30, p_base=0.3)
        assert stats.mde_paired_proportion(30, k, p_base=0.3) <= eff
        assert stats.mde_paired_proportion(30, k - 1, p_base=0.3) > eff


def test_mde_uses_given_variance() -> None:
    v = stats.per_problem_variance([0.0, 1.0, 0.5, 0.5])  # mean p(1-p) = 0.125
    assert v == pytest.approx(0.125)
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    assert stats.mde_paired_proportion(100, 10, per_problem_var=v) == pytest.approx(
        z * math.sqrt(0.25 / 1000)
    )


def test_planning_variance_matches_simulation() -> None:
    # Under the stated model (rates ~ Beta with icc 0.6, independent A/B samples) the spread of
    # Δ̂ must match sqrt(2v/(P k)), which is what the MDE is built on.
    rng = np.random.default_rng(7)
    sims, p_count, k = 4000, 60, 262
    kappa = (1 - stats.DEFAULT_ICC) / stats.DEFAULT_ICC
    rates = rng.beta(0.5 * kappa, 0.5 * kappa, size=(sims, p_count))
    delta_hat = (rng.binomial(k, rates) - rng.binomial(k, rates)).mean(axis=1) / k
    predicted = math.sqrt(2 * stats.within_problem_variance(0.5) / (p_count * k))
    assert delta_hat.std() == pytest.approx(predicted, rel=0.05)


def _exact_mcnemar_power(n: int, p10: float, p01: float, alpha: float) -> float:
    psi, power = p10 + p01, 0.0
    for m in range(1, n + 1):
        pm = st.binom.pmf(m, n, psi)
        if pm < 1e-14:
            continue
        c = np.arange(m + 1)
        pvals = np.minimum(1.0, 2 * st.binom.cdf(np.minimum(c, m - c), m, 0.5))
        power += pm * st.binom.pmf(c, m, p01 / psi)[pvals < alpha].sum()
    return float(power)


def test_mde_mcnemar_gives_about_80_percent_exact_power() -> None:
    n, psi = 1000, 0.05
    d = stats.mde_mcnemar(n, psi)
    assert 0.015 < d < 0.025
    power = _exact_mcnemar_power(n, (psi - d) / 2, (psi + d) / 2, 0.05)
    assert 0.72 <= power <= 0.86
    assert stats.mcnemar_pairs_needed(d, psi) == pytest.approx(n, abs=1)


def test_mde_mcnemar_undetectable_and_bad_input() -> None:
    assert stats.mde_mcnemar(3, 0.01) == math.inf
    with pytest.raises(ValueError):
        stats.mcnemar_pairs_needed(0.1, 0.05)
    with pytest.raises(ValueError):
        stats.samples_needed(0.01, 60, alpha=0.7)


# ----------------------------------------------------------------------------- helpers and JSON


def test_histogram_and_quantiles() -> None:
    h = stats.histogram([0.0, 1e-9, 5e-5, 0.5, 500.0], stats.log10_edges(-10, 0))
    assert h.n_below == 1 and h.n_above == 1
    assert sum(h.counts) == 3
    assert h.counts[1] == 1  # 1e-9 is in [1e-9, 1e-8)
    assert stats.pow2_edges(5) == (0.0, 1.0, 2.0, 4.0, 8.0)
    q = stats.quantiles([1.0, 2.0, 3.0], (0.5,))
    assert q == {"0.5": 2.0}
    assert math.isnan(stats.quantiles([], (0.5,))["0.5"])


def test_to_dict_is_strict_json() -> None:
    r = stats.mean_ci([3.0])
    d = r.to_dict()
    assert d == {"estimate": 3.0, "low": None, "high": None, "conf": 0.95}
    json.dumps(stats.tost_paired_counts(1, 2, 10, 0.1).to_dict(), allow_nan=False)
