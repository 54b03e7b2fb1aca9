"""Distance to the reference: how far one arm's served model is from the high-precision yardstick.

Comparing two paths with each other cannot say which is wrong: in bf16 a correct kernel that computes in
fp32 differs from bf16 native at every level, and a deterministic floor can be exactly zero. So every arm
is measured against the reference arm (RoPE in float64, rounded once, or the model in fp32) and the
verdict asks whether a path is as close to it as the correct anchors are (docs/architecture.md).

L1: per teacher-forced sequence, the summed per-token KL, |Δlogprob| of the realised token and top-1
disagreements against the reference, kept per prompt (the bootstrap cluster) so `closeness` can resample.
L2: each greedy continuation against the reference's; a fork is "rounding" when the reference itself was
nearly tied there (its margin between its token and the arm's is under the tie threshold), and an error
when the reference was confident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eval_harness.diff.logprob import L1Summary, LogprobSeq, compare_sequence, summarize_l1
from eval_harness.stats import Interval, RatioInterval, Result, cluster_rate_diff_ci, cluster_ratio_ci

# The L1 metrics a verdict weighs, as per-position means: KL(ref‖arm) from the top-k, |Δlogprob| of the
# realised token (continuous: judged as a ratio to the anchors'), and the share of positions whose top-1
# token differs (a rare event for a correct path, where a ratio of two small counts is mostly noise: judged
# as a difference of rates).
L1_METRICS = ("kl", "abs_dlogprob", "top1_disagreement")
RATE_METRICS = ("top1_disagreement",)
PRIMARY = "abs_dlogprob"  # the verdict line's figure: needs no top-k, and is in nats per token
# Smallest tie threshold: below this a fork is rounding whatever the anchors show. In fp32 the anchors'
# |Δlogprob| is ~1e-7 (tests/test_serving.py bounds it by 1e-4), so only exact ties fall under it.
TIE_FLOOR = 1e-4


@dataclass(frozen=True)
class ClusterTotals(Result):
    """One prompt's L1 totals over all its positions (one or more sequences)."""

    cluster: str
    positions: int
    kl: float
    abs_dlogprob: float
    top1_disagreement: float


@dataclass(frozen=True)
class L1Distance(Result):
    n_sequences: int
    n_positions: int
    kl: float  # means per position
    abs_dlogprob: float
    top1_disagreement: float
    abs_dlogprob_p99: float
    summary: L1Summary
    clusters: tuple[ClusterTotals, ...]

    def mean(self, metric: str) -> float:
        return float(getattr(self, metric))


def l1_distance(pairs: Sequence[tuple[str, LogprobSeq, LogprobSeq]]) -> L1Distance:
    """(cluster, reference sequence, arm sequence) triples -> the arm's L1 distance to the reference."""
    totals: dict[str, list[float]] = {}
    for cluster, ref, arm in pairs:
        s = compare_sequence(ref, arm)
        t = totals.setdefault(cluster, [0, 0.0, 0.0, 0.0])
        t[0] += s.kl.size
        t[1] += float(s.kl.sum())
        t[2] += float(s.abs_dlogprob.sum())
        t[3] += float((~s.top1_agree).sum())
    summary = summarize_l1((ref, arm) for _, ref, arm in pairs)
    clusters = tuple(ClusterTotals(c, int(t[0]), t[1], t[2], t[3]) for c, t in sorted(totals.items()))
    n = summary.n_positions
    return L1Distance(
        n_sequences=summary.n_sequences,
        n_positions=n,
        kl=sum(c.kl for c in clusters) / n,
        abs_dlogprob=sum(c.abs_dlogprob for c in clusters) / n,
        top1_disagreement=sum(c.top1_disagreement for c in clusters) / n,
        abs_dlogprob_p99=summary.abs_dlogprob_p99,
        summary=summary,
        clusters=clusters,
    )


# ----------------------------------------------------------------------------- L2


@dataclass(frozen=True)
class Fork(Result):
    key: str
    cluster: str
    position: int
    token_reference: int | None
    token_arm: int | None
    # log p_ref(reference's token) - log p_ref(arm's token) at the fork; a lower bound when the arm's token
    # is outside the reference's top-k; None when one continuation simply ended earlier
    reference_margin: float | None
    confident: bool


@dataclass(frozen=True)
class L2Distance(Result):
    n_prompts: int
    n_identical: int
    tie_threshold: float
    n_confident: int
    forks: tuple[Fork, ...]
    prompts: tuple[tuple[str, str], ...]  # (key, cluster) of every compared prompt

    @property
    def confident_rate(self) -> float:
        return self.n_confident / self.n_prompts if self.n_prompts else 0.0


TopK = Mapping[int, float]


def _fork(
    key: str, cluster: str, ref: Sequence[int], arm: Sequence[int], ref_top: Sequence[TopK], tie: float
) -> Fork | None:
    for i, (r, a) in enumerate(zip(ref, arm)):  # noqa: B905 - walking the common prefix
        if r != a:
            top = ref_top[i] if i < len(ref_top) else {}
            if r in top and a in top:
                margin = top[r] - top[a]
            elif r in top:
                margin = top[r] - min(top.values())  # the arm's token is below every listed one
            else:
                return Fork(key, cluster, i, int(r), int(a), None, False)
            return Fork(key, cluster, i, int(r), int(a), float(margin), margin >= tie)
    if len(ref) == len(arm):
        return None
    return Fork(key, cluster, min(len(ref), len(arm)), None, None, None, False)


def l2_distance(
    prompts: Sequence[tuple[str, str, Sequence[int], Sequence[int], Sequence[TopK]]], tie_threshold: float
) -> L2Distance:
    """(key, cluster, reference tokens, arm tokens, reference top-k per step) -> forks classified by the
    reference's own margin at the fork."""
    forks = []
    for key, cluster, ref, arm, ref_top in prompts:
        fork = _fork(key, cluster, ref, arm, ref_top, tie_threshold)
        if fork is not None:
            forks.append(fork)
    return L2Distance(
        n_prompts=len(prompts),
        n_identical=len(prompts) - len(forks),
        tie_threshold=tie_threshold,
        n_confident=sum(f.confident for f in forks),
        forks=tuple(forks),
        prompts=tuple((k, c) for k, c, *_ in prompts),
    )


def tie_threshold(anchors: Sequence[L1Distance]) -> float:
    """A fork flips by rounding when the two tokens' logprob gap moves by less than the anchors' own
    swing: each token's logprob moves up to the anchors' p99 |Δlogprob|, so the gap by twice that."""
    return max([TIE_FLOOR, *(2.0 * a.abs_dlogprob_p99 for a in anchors)])


# ----------------------------------------------------------------------------- closeness


@dataclass(frozen=True)
class MetricCloseness(Result):
    """One L1 metric: the arm's distance over the farthest anchor's, and their difference, each with its
    cluster-bootstrap CI (prompts resampled, the same draw for the arm and its anchors)."""

    metric: str
    arm: float  # per-position mean distance
    anchor: float  # the farthest anchor's
    ratio: RatioInterval
    difference: Interval


@dataclass(frozen=True)
class ForkCloseness(Result):
    """L2: the arm's confident-fork rate minus the worst anchor's, with its CI."""

    arm_rate: float
    anchor_rate: float
    difference: Interval


def l1_closeness(
    arm: L1Distance, anchors: Sequence[L1Distance], seed: int = 0
) -> tuple[MetricCloseness, ...]:
    common = sorted(set.intersection(*({c.cluster for c in d.clusters} for d in (arm, *anchors))))
    if not common:
        raise ValueError("the arm and its anchors share no teacher-forced prompt")

    def column(d: L1Distance, metric: str) -> np.ndarray:
        by = {c.cluster: c for c in d.clusters}
        return np.array([getattr(by[c], metric) for c in common])

    out = []
    positions = column(arm, "positions")
    for metric in L1_METRICS:
        mine, theirs = column(arm, metric), [column(a, metric) for a in anchors]
        ratio = cluster_ratio_ci(mine, theirs, seed=seed)
        diff = cluster_rate_diff_ci(mine, theirs, positions, seed=seed)
        out.append(
            MetricCloseness(metric, arm.mean(metric), max(a.mean(metric) for a in anchors), ratio, diff)
        )
    return tuple(out)


def l2_closeness(arm: L2Distance, anchors: Sequence[L2Distance], seed: int = 0) -> ForkCloseness:
    clusters = sorted({c for _, c in arm.prompts})
    index = {c: i for i, c in enumerate(clusters)}

    def per_cluster(d: L2Distance) -> np.ndarray:
        x = np.zeros(len(clusters))
        for f in d.forks:
            if f.confident and f.cluster in index:
                x[index[f.cluster]] += 1
        return x

    trials = np.zeros(len(clusters))
    for _, c in arm.prompts:
        trials[index[c]] += 1
    diff = cluster_rate_diff_ci(per_cluster(arm), [per_cluster(a) for a in anchors], trials, seed=seed)
    return ForkCloseness(arm.confident_rate, max(a.confident_rate for a in anchors), diff)
