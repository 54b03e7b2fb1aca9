"""Pure diff math: L1 logprobs, L2 greedy tokens, L3 paired accuracy, eagle3 acceptance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import stats as st

from eval_harness.diff import (
    PositionLogprobs,
    compare_acceptance,
    compare_greedy,
    compare_sequence,
    compare_suite,
    compare_suites,
    from_prompt_logprobs,
    kl_topk,
    summarize_l1,
    summarize_l2,
)
from eval_harness.diff.logprob import top1
from eval_harness.records import SpecDecodeCounters
from eval_harness.stats import wilson_ci

FAST = settings(max_examples=60, deadline=None)
VOCAB = 24


def _report(probs: np.ndarray, k: int, actual: int) -> PositionLogprobs:
    """A vLLM-style report: top-k of a full distribution plus the actual token."""
    order = np.argsort(-probs, kind="stable")[:k]
    top = {int(t): float(np.log(probs[t])) for t in order}
    top[actual] = float(np.log(probs[actual]))
    return PositionLogprobs(actual, top[actual], top)


dists = hst.lists(hst.floats(0.01, 10.0), min_size=VOCAB, max_size=VOCAB).map(
    lambda w: np.asarray(w) / np.sum(w)
)


# ----------------------------------------------------------------------------- L1


@given(dists, hst.integers(1, 8), hst.integers(0, VOCAB - 1))
@FAST
def test_kl_is_exactly_zero_for_identical_reports(p: np.ndarray, k: int, actual: int) -> None:
    pos = _report(p, k, actual)
    assert kl_topk(pos, pos) == 0.0


@given(dists, dists, hst.integers(1, 8), hst.integers(0, VOCAB - 1))
@FAST
def test_kl_non_negative(p: np.ndarray, q: np.ndarray, k: int, actual: int) -> None:
    assert kl_topk(_report(p, k, actual), _report(q, k, actual)) >= 0.0


@given(dists, dists)
@FAST
def test_kl_exact_when_full_vocabulary_reported(p: np.ndarray, q: np.ndarray) -> None:
    est = kl_topk(_report(p, VOCAB, 0), _report(q, VOCAB, 0))
    assert est == pytest.approx(st.entropy(p, q), rel=1e-6, abs=1e-9)


@given(dists, dists, hst.integers(1, VOCAB - 1))
@FAST
def test_kl_lower_bound_when_both_report_same_tokens(p: np.ndarray, q: np.ndarray, k: int) -> None:
    tokens = list(range(k))  # both sides report the same set: a coarsening, so KL_est <= KL
    a = PositionLogprobs(0, float(np.log(p[0])), {t: float(np.log(p[t])) for t in tokens})
    b = PositionLogprobs(0, float(np.log(q[0])), {t: float(np.log(q[t])) for t in tokens})
    assert kl_topk(a, b) <= st.entropy(p, q) + 1e-9


def test_kl_hand_computed_same_support() -> None:
    a = PositionLogprobs(1, math.log(0.5), {1: math.log(0.5), 2: math.log(0.3)})
    b = PositionLogprobs(1, math.log(0.4), {1: math.log(0.4), 2: math.log(0.4)})
    expected = 0.5 * math.log(0.5 / 0.4) + 0.3 * math.log(0.3 / 0.4)  # rest 0.2 on both sides
    assert kl_topk(a, b) == pytest.approx(expected, rel=1e-9)


def test_kl_hand_computed_imputation() -> None:
    # A reports {1: .6, 2: .3}, B reports {1: .6, 3: .3}. Each side's missing union token gets
    # min(cap .3, residual .1 / 2) = .05 and the rest bucket .05:
    # A = [.6, .3, .05, .05], B = [.6, .05, .3, .05] -> KL = .3 ln 6 + .05 ln(1/6) = .25 ln 6.
    a = PositionLogprobs(1, math.log(0.6), {1: math.log(0.6), 2: math.log(0.3)})
    b = PositionLogprobs(1, math.log(0.6), {1: math.log(0.6), 3: math.log(0.3)})
    assert kl_topk(a, b) == pytest.approx(0.25 * math.log(6), rel=1e-9)


def test_kl_imputation_cap_makes_tail_swaps_cheap() -> None:
    # The imputed probability is capped at the side's smallest reported top-k probability (a
    # true upper bound for unreported tokens), not its residual share (.099 / 2 here).
    a = PositionLogprobs(1, math.log(0.9), {1: math.log(0.9), 2: math.log(0.001)})
    b = PositionLogprobs(1, math.log(0.9), {1: math.log(0.9), 3: math.log(0.002)})
    # A = [.9, .001, .001 (capped), .098], B = [.9, .002 (capped), .002, .096]
    expected = 2 * 0.001 * math.log(0.5) + 0.098 * math.log(0.098 / 0.096)
    assert kl_topk(a, b) == pytest.approx(expected, rel=1e-6)
    swap = PositionLogprobs(1, math.log(0.9), {1: math.log(0.9), 3: math.log(0.001)})
    assert kl_topk(a, swap) == pytest.approx(0.0, abs=1e-15)


def test_disjoint_tops_give_large_kl_and_disagreement() -> None:
    a = PositionLogprobs(3, math.log(0.005), {1: math.log(0.99), 3: math.log(0.005)})
    b = PositionLogprobs(3, math.log(0.005), {2: math.log(0.99), 3: math.log(0.005)})
    assert kl_topk(a, b) > 3.0
    assert top1(a) == 1 and top1(b) == 2


def test_top1_tie_breaks_on_smallest_id() -> None:
    assert top1(PositionLogprobs(9, -5.0, {7: -0.7, 4: -0.7, 9: -5.0})) == 4


def _seq(rng: np.random.Generator, n: int, noise: float = 0.0) -> tuple[list, list]:
    a: list[PositionLogprobs | None] = [None]
    b: list[PositionLogprobs | None] = [None]
    for _ in range(n - 1):
        logits = rng.normal(size=VOCAB)
        p = np.exp(logits) / np.exp(logits).sum()
        q = np.exp(logits + rng.normal(scale=noise, size=VOCAB))
        q /= q.sum()
        tok = int(rng.integers(VOCAB))
        a.append(_report(p, 5, tok))
        b.append(_report(q, 5, tok))
    return a, b


def test_compare_sequence_metrics() -> None:
    a = [
        None,
        PositionLogprobs(5, -1.0, {5: -1.0, 6: -0.6}),
        PositionLogprobs(7, -0.2, {7: -0.2}),
    ]
    b = [
        None,
        PositionLogprobs(5, -1.5, {5: -1.5, 6: -0.4}),
        PositionLogprobs(7, -0.2, {7: -0.2}),
    ]
    r = compare_sequence(a, b)
    assert r.positions.tolist() == [1, 2]
    assert r.abs_dlogprob.tolist() == pytest.approx([0.5, 0.0])
    assert r.top1_agree.tolist() == [True, True]
    assert r.kl[0] > 0 and r.kl[1] == 0.0


def test_compare_sequence_errors() -> None:
    p = PositionLogprobs(1, -0.1, {1: -0.1})
    with pytest.raises(ValueError, match="lengths differ"):
        compare_sequence([None, p], [None, p, p])
    with pytest.raises(ValueError, match="only one path"):
        compare_sequence([None, p], [p, p])
    with pytest.raises(ValueError, match="actual tokens differ"):
        compare_sequence([p], [PositionLogprobs(2, -0.1, {2: -0.1})])
    with pytest.raises(ValueError, match="no positions"):
        summarize_l1([([None], [None])])


def test_from_prompt_logprobs_accepts_vllm_json() -> None:
    entries = [None, {"5": {"logprob": -1.0, "rank": 2}, "6": {"logprob": -0.5, "rank": 1}}, {7: -0.1}]
    out = from_prompt_logprobs([4, 5, 7], entries)
    assert out[0] is None
    assert out[1] == PositionLogprobs(5, -1.0, {5: -1.0, 6: -0.5})
    assert out[2] is not None and out[2].logprob == -0.1
    with pytest.raises(ValueError, match="missing"):
        from_prompt_logprobs([4, 9], [None, {5: -1.0}])


def test_summarize_l1_aa_and_ab() -> None:
    rng = np.random.default_rng(0)
    same = [_seq(rng, 40) for _ in range(5)]
    aa = summarize_l1((a, a) for a, _ in same)
    assert aa.n_positions == 5 * 39 and aa.n_sequences == 5
    assert aa.kl_max == 0.0 and aa.top1_agreement == 1.0 and aa.abs_dlogprob_max == 0.0
    assert aa.kl_histogram.n_below == aa.n_positions  # every KL is exactly zero

    ab = summarize_l1(_seq(rng, 300, noise=0.05) for _ in range(4))
    assert 0 < ab.kl_p50 <= ab.kl_p99 <= ab.kl_max
    assert ab.kl_mean > 0 and ab.abs_dlogprob_max > 0
    h = ab.kl_histogram
    assert sum(h.counts) + h.n_below + h.n_above == ab.n_positions
    assert [(b.start, b.end) for b in ab.by_position] == [(0, 64), (64, 128), (128, 256), (256, 512)]
    assert sum(b.n for b in ab.by_position) == ab.n_positions
    json.dumps(ab.to_dict(), allow_nan=False)


def test_l1_by_position_localises_a_long_context_bug() -> None:
    rng = np.random.default_rng(1)
    a, b = _seq(rng, 200)
    b = b[:150] + [_report(np.full(VOCAB, 1 / VOCAB), 5, p.token_id) for p in a[150:]]  # type: ignore[union-attr]
    s = summarize_l1([(a, b)])
    early = [x for x in s.by_position if x.end <= 128]
    late = [x for x in s.by_position if x.start >= 128]
    assert all(x.kl_max == 0.0 for x in early)
    assert late[0].kl_max > 0.1


# ----------------------------------------------------------------------------- L2


def test_greedy_identical() -> None:
    d = compare_greedy([1, 2, 3], [1, 2, 3], [{1: 0}] * 3, [{1: 0}] * 3)
    assert d.identical and d.first_divergence is None and d.kind == "none" and d.close


def test_greedy_token_divergence_containment_follows_vllm_rule() -> None:
    top_a = [{1: -0.1}, {2: -0.5, 9: -0.9}, {}]
    top_b = [{1: -0.1}, {9: -0.6, 2: -0.7}, {}]
    d = compare_greedy([1, 2, 3], [1, 9, 4], top_a, top_b)
    assert (d.identical, d.first_divergence, d.kind, d.token_a, d.token_b) == (False, 1, "token", 2, 9)
    assert d.contained is True and d.close  # later steps (empty top-k) are not compared
    # B's token missing from A's top-k -> fails
    d2 = compare_greedy([1, 2], [1, 9], [{1: 0}, {2: -0.5}], [{1: 0}, {9: -0.6, 2: -0.7}])
    assert d2.contained is False and not d2.close
    # A's token missing from B's top-k -> fails
    d3 = compare_greedy([1, 2], [1, 9], [{1: 0}, {2: -0.5, 9: -1}], [{1: 0}, {9: -0.6}])
    assert d3.contained is False


def test_greedy_prefix_diverges_at_shorter_length() -> None:
    d = compare_greedy([1, 2], [1, 2, 3, 4], [{}] * 2, [{}] * 4)
    assert (d.identical, d.first_divergence, d.kind, d.contained) == (False, 2, "length", None)
    assert compare_greedy([], [5]).first_divergence == 0


def test_greedy_top_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="path B"):
        compare_greedy([1, 2], [1, 3], [{}, {}], [{}])


def test_summarize_l2() -> None:
    diffs = [compare_greedy([1, 2, 3], [1, 2, 3]) for _ in range(6)]
    diffs.append(
        compare_greedy([1, 2, 3], [1, 5, 3], [{1: 0}, {2: 0, 5: -1}, {}], [{1: 0}, {5: 0, 2: -1}, {}])
    )
    diffs.append(compare_greedy([7, 2], [8, 2], [{7: 0}, {}], [{8: 0}, {}]))
    diffs.append(compare_greedy([1] * 10, [1] * 12))
    s = summarize_l2(diffs)
    assert (s.n_prompts, s.n_identical, s.n_token_divergence, s.n_length_divergence) == (9, 6, 2, 1)
    assert s.identical_rate == wilson_ci(6, 9)
    assert (s.n_contained, s.containment_rate) == (1, 0.5)
    assert s.close_rate == pytest.approx(8 / 9)
    assert s.first_divergence_quantiles["0.0"] == 0.0 and s.first_divergence_quantiles["1.0"] == 10.0
    assert s.first_divergence_histogram is not None and sum(s.first_divergence_histogram.counts) == 3
    assert summarize_l2(diffs[:6]).first_divergence_histogram is None
    json.dumps(s.to_dict(), allow_nan=False)


# ----------------------------------------------------------------------------- L3


def test_l3_greedy_mcnemar() -> None:
    a = {f"q{i}": [int(i % 3 != 0)] for i in range(100)}
    b = dict(a)
    for i in (1, 2):  # A right, B wrong
        b[f"q{i}"] = [0]
    for i in (0, 3, 6, 9, 12, 15, 18, 21):  # A wrong, B right
        b[f"q{i}"] = [1]
    r = compare_suite("gsm8k", a, b, margin=0.05)
    assert (r.mcnemar_b, r.mcnemar_c, r.k_samples, r.n_problems) == (2, 8, 1, 100)
    assert r.mcnemar_p == pytest.approx(0.109375)
    assert r.delta == pytest.approx(0.06)
    assert r.accuracy_a == wilson_ci(66, 100)
    assert r.delta_low < 0.06 < r.delta_high
    assert not r.significant
    assert r.tost is not None and not r.tost.equivalent  # 6 points off with margin 5
    json.dumps(r.to_dict(), allow_nan=False)


def test_l3_aa_greedy_is_equivalent_and_null() -> None:
    a = {str(i): [i % 2] for i in range(1319)}
    r = compare_suite("gsm8k", a, a, margin=0.01)
    assert r.delta == 0.0 and r.mcnemar_p == 1.0 and r.tost is not None and r.tost.equivalent


def test_l3_sampled_uses_clustered_bootstrap() -> None:
    rng = np.random.default_rng(0)
    rates = rng.beta(0.3, 0.3, size=60)
    a = {f"p{i}": rng.binomial(1, r, size=16).tolist() for i, r in enumerate(rates)}
    b = {f"p{i}": rng.binomial(1, min(1.0, r + 0.3), size=16).tolist() for i, r in enumerate(rates)}
    r = compare_suite("aime", a, b, margin=0.02, n_boot=2000)
    assert r.method == "clustered-bootstrap" and r.mcnemar_p is None and r.k_samples == 16
    assert r.significant and r.delta > 0.1 and r.delta_low > 0
    assert r.tost is not None and not r.tost.equivalent
    acc_b = np.mean([np.mean(v) for v in b.values()])
    assert r.accuracy_b.estimate == pytest.approx(acc_b)


def test_l3_workload_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="workloads differ"):
        compare_suite("s", {"a": [1]}, {"b": [1]})
    with pytest.raises(ValueError, match="sample counts"):
        compare_suite("s", {"a": [1, 0]}, {"a": [1]})
    with pytest.raises(ValueError, match="suites differ"):
        compare_suites({"x": {"a": [1]}}, {"y": {"a": [1]}})


def test_compare_suites_per_suite_margin() -> None:
    a = {"g": {str(i): [1] for i in range(50)}, "h": {str(i): [0, 1] for i in range(20)}}
    out = compare_suites(a, a, margin={"g": 0.1}, n_boot=500)
    assert list(out) == ["g", "h"]
    assert out["g"].tost is not None and out["h"].tost is None
    assert out["h"].method == "clustered-bootstrap"


# ----------------------------------------------------------------------------- acceptance


def _batch(drafts: float, toks: float, acc: float, per_pos: list[float]) -> SpecDecodeCounters:
    return SpecDecodeCounters(drafts=drafts, draft_tokens=toks, accepted=acc, accepted_per_pos=tuple(per_pos))


def test_acceptance_hand_computed() -> None:
    a = [_batch(10, 30, 12, [8, 4, 0]), _batch(10, 30, 18, [10, 6, 2])]
    b = [_batch(10, 30, 15, [9, 6])] * 2
    r = compare_acceptance(a, b, n_boot=500)
    assert r.a.mean_acceptance_length == pytest.approx(2.5)
    assert r.a.acceptance_rate == pytest.approx(0.5)
    assert r.a.per_position_rate == pytest.approx((0.9, 0.5, 0.1))
    assert r.b.per_position_rate == pytest.approx((0.9, 0.6, 0.0))  # missing position padded with 0
    assert r.paired
    assert r.mean_acceptance_length.delta == pytest.approx(0.0)
    assert [x.delta for x in r.per_position_rate] == pytest.approx([0.0, 0.1, -0.1])
    json.dumps(r.to_dict(), allow_nan=False)


def test_acceptance_paired_ci_removes_batch_effect() -> None:
    rng = np.random.default_rng(0)
    a, b = [], []
    for _ in range(40):  # batches differ a lot in difficulty, shared by both paths
        drafts = int(rng.integers(50, 200))
        rate = rng.uniform(0.2, 0.8)
        a.append(_batch(drafts, 3 * drafts, round(3 * drafts * rate), []))
        b.append(_batch(drafts, 3 * drafts, round(3 * drafts * rate) + 1, []))
    paired = compare_acceptance(a, b, n_boot=2000, seed=1)
    unpaired = compare_acceptance(a, b, n_boot=2000, seed=1, paired=False)
    assert paired.paired and not unpaired.paired
    w_p = paired.acceptance_rate.high - paired.acceptance_rate.low  # type: ignore[operator]
    w_u = unpaired.acceptance_rate.high - unpaired.acceptance_rate.low  # type: ignore[operator]
    assert paired.acceptance_rate.low > 0  # B accepts one more token per batch, always
    assert w_p < w_u / 5


def test_acceptance_zero_drafts_and_single_batch() -> None:
    r = compare_acceptance([_batch(0, 0, 0, [])], [_batch(0, 0, 0, [])])
    assert r.a.mean_acceptance_length is None and r.a.reason is not None
    assert r.mean_acceptance_length.delta is None and r.reason is not None
    one = compare_acceptance([_batch(5, 15, 6, [])], [_batch(5, 15, 9, [])])
    assert one.mean_acceptance_length.delta == pytest.approx(0.6)
    assert one.mean_acceptance_length.low is None and "fewer than 2" in (one.reason or "")
    json.dumps(r.to_dict(), allow_nan=False)


def test_acceptance_unequal_batches_and_validation() -> None:
    a = [_batch(10, 30, 12, [])] * 3
    b = [_batch(10, 30, 15, [])] * 4
    r = compare_acceptance(a, b, n_boot=200)
    assert not r.paired and r.acceptance_rate.delta == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equal batch counts"):
        compare_acceptance(a, b, paired=True)
    with pytest.raises(ValueError, match="more accepted"):
        compare_acceptance([_batch(1, 3, 4, [])], a)


def test_acceptance_delta_is_b_minus_a() -> None:
    r = compare_acceptance([_batch(10, 30, 10, [])] * 2, [_batch(10, 30, 20, [])] * 2, n_boot=100)
    assert r.mean_acceptance_length.delta == pytest.approx(1.0)
