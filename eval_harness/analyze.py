"""The back half's one entry point: read a run directory and evaluate it (`rope-eval diff`).

Per model: each arm's **distance to the reference** at L1 (teacher-forced logprobs) and L2 (greedy forks
classified by the reference's own margin), each path's **closeness** (its distance over the correct
anchors', with a cluster-bootstrap CI), and the paired **comparisons** with the baseline (A/B, A/A) and
with the reference at L3 (task accuracy) and eagle3 acceptance. The result is policy-free; `gate` applies
a policy to it and `report` renders it. No torch, no vLLM, no runner: this only reads records.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter

from eval_harness.config import RunConfig
from eval_harness.diff import (
    AcceptanceDiff,
    L1Summary,
    L2Summary,
    L3Result,
    compare_acceptance,
    compare_greedy,
    compare_suites,
    from_prompt_logprobs,
    summarize_l1,
    summarize_l2,
)
from eval_harness.diff.distance import (
    ForkCloseness,
    L1Distance,
    L2Distance,
    MetricCloseness,
    l1_closeness,
    l1_distance,
    l2_closeness,
    l2_distance,
    tie_threshold,
)
from eval_harness.diff.logprob import LogprobSeq
from eval_harness.errors import StoreError
from eval_harness.proof import Verification
from eval_harness.records import AcceptanceBatch, ArmMeta, ModelMeta, Role, RunManifest, Sample, Score
from eval_harness.stats import Result
from eval_harness.store import EVALUATION, RunStore
from eval_harness.suites.base import ModelOutput, OutputStats, output_stats

# ----------------------------------------------------------------------------- reading arms


@dataclass
class ArmView:
    """One arm's records, as the analysis reads them."""

    meta: ArmMeta
    samples: dict[str, Sample]
    scores: dict[str, Score]
    acceptance: list[AcceptanceBatch]

    @property
    def label(self) -> str:
        return self.meta.label

    def gen(self, greedy_only: bool = False) -> dict[str, Sample]:
        return {
            k: s
            for k, s in self.samples.items()
            if s.kind == "gen" and (not greedy_only or s.temperature == 0.0)
        }

    def l1(self) -> dict[str, Sample]:
        return {k: s for k, s in self.samples.items() if s.kind == "l1"}


def load_arm(store: RunStore, model: str, label: str) -> ArmView:
    arm = store.arm(model, label)
    return ArmView(arm.read_meta(), {s.key: s for s in arm.samples()}, arm.scores(), arm.acceptance())


# ----------------------------------------------------------------------------- result types


class Kind(StrEnum):
    AB = "A/B"  # a configured path against the baseline
    AA = "A/A"  # the baseline against itself, served again: the noise floor
    REF = "vs reference"  # an arm against the reference (L3 and acceptance; L1/L2 are its Distance)


@dataclass(frozen=True)
class Comparison(Result):
    a: str
    b: str
    kind: Kind
    l1: L1Summary | None = None
    l2: L2Summary | None = None
    l3: dict[str, L3Result] = field(default_factory=dict)
    acceptance: dict[str, AcceptanceDiff] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.a} vs {self.b}"


@dataclass(frozen=True)
class Distance(Result):
    """One arm against the reference."""

    l1: L1Distance | None
    l2: L2Distance | None


@dataclass(frozen=True)
class Closeness(Result):
    """One arm's distance to the reference relative to the correct anchors'."""

    anchors: tuple[str, ...]
    l1: tuple[MetricCloseness, ...]
    l2: ForkCloseness | None

    def metric(self, name: str) -> MetricCloseness:
        return next(m for m in self.l1 if m.metric == name)


@dataclass(frozen=True)
class ArmSummary(Result):
    label: str
    path: str
    role: Role
    verification: Verification | None
    seconds: float | None
    health: dict[str, OutputStats]


@dataclass(frozen=True)
class ModelEvaluation(Result):
    reference: str
    baseline: str
    anchors: tuple[str, ...]
    arms: dict[str, ArmSummary]
    distances: dict[str, Distance]
    closeness: dict[str, Closeness]
    comparisons: tuple[Comparison, ...]

    def arms_with(self, role: Role) -> list[ArmSummary]:
        return [a for a in self.arms.values() if a.role is role]


@dataclass(frozen=True)
class RunInfo(Result):
    name: str
    profile: str
    baseline: str
    reference: str
    paths: tuple[str, ...]
    started: str
    finished: str | None
    data_source: str
    provenance: dict[str, Any]
    data_hashes: dict[str, dict[str, str]]
    departures: dict[str, tuple[str, ...]]  # suite -> scoring options on (departures from the reference)


@dataclass(frozen=True)
class RunEvaluation(Result):
    key: str  # the run's state when evaluated: a cached evaluation is reused only while it matches
    run: RunInfo
    models: dict[str, ModelEvaluation]


# NaN (an interval from one sample) and infinity must survive the cache round trip: written as JSON's
# NaN/Infinity constants, which Python and pydantic read back; report.json is written strict (null).
RunEvaluation.__pydantic_config__ = ConfigDict(ser_json_inf_nan="constants")  # type: ignore[attr-defined]
EVALUATION_TYPE = TypeAdapter(RunEvaluation)

# ----------------------------------------------------------------------------- per level


def _top(rows: list[list[float]] | None) -> dict[int, float]:
    return {int(t): lp for t, lp in rows or []}


def _logprob_seq(s: Sample) -> LogprobSeq:
    return from_prompt_logprobs(
        s.prompt_token_ids or [], [None if p is None else _top(p) for p in s.prompt_logprobs or []]
    )


def _l1_pairs(a: ArmView, b: ArmView) -> list[tuple[str, LogprobSeq, LogprobSeq]]:
    """(cluster, A's logprobs, B's logprobs) for each sequence both arms teacher-forced."""
    la, lb = a.l1(), b.l1()
    out = []
    for key in sorted(la.keys() & lb.keys()):
        sa, sb = la[key], lb[key]
        if (sa.prompt_token_ids or []) != (sb.prompt_token_ids or []):
            raise StoreError(
                f"L1 sequence {key} differs between {a.label} and {b.label}: not the same tokens"
            )
        out.append((sa.item_id or key, _logprob_seq(sa), _logprob_seq(sb)))
    return out


def l1_summary(a: ArmView, b: ArmView) -> L1Summary | None:
    pairs = _l1_pairs(a, b)
    return summarize_l1((x, y) for _, x, y in pairs) if pairs else None


def l2_summary(a: ArmView, b: ArmView) -> L2Summary | None:
    ga, gb = a.gen(greedy_only=True), b.gen(greedy_only=True)
    diffs = []
    for key in sorted(ga.keys() & gb.keys()):
        sa, sb = ga[key], gb[key]
        top_a = [_top(t) for t in sa.top_logprobs] if sa.top_logprobs else None
        top_b = [_top(t) for t in sb.top_logprobs] if sb.top_logprobs else None
        diffs.append(compare_greedy(sa.token_ids, sb.token_ids, top_a, top_b))
    return summarize_l2(diffs) if diffs else None


def suite_scores(arm: ArmView) -> dict[str, dict[str, list[float]]]:
    """suite -> item id -> correctness per sample index."""
    out: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in arm.scores.values():
        out[r.suite][r.item_id][r.sample_idx] = r.correct
    return {s: {i: [v[j] for j in sorted(v)] for i, v in items.items()} for s, items in out.items()}


def _acceptance_by_suite(arm: ArmView) -> dict[str, list[AcceptanceBatch]]:
    out: dict[str, list[AcceptanceBatch]] = defaultdict(list)
    for rec in arm.acceptance:
        out[rec.suite].append(rec)
    return out


def compare(a: ArmView, b: ArmView, cfg: RunConfig, kind: Kind) -> Comparison:
    notes = []
    sa, sb = suite_scores(a), suite_scores(b)
    if sa.keys() != sb.keys():
        notes.append(f"suites scored on one side only: {sorted(sa.keys() ^ sb.keys())}")
    common = sorted(sa.keys() & sb.keys())
    margins = {s: cfg.suites[s].margin for s in common if s in cfg.suites}
    l3 = compare_suites({s: sa[s] for s in common}, {s: sb[s] for s in common}, margins)
    # Batches pair up only when both arms sent the same requests in the same order.
    paired = None if a.meta.shuffle_seed == b.meta.shuffle_seed else False
    acc_a, acc_b = _acceptance_by_suite(a), _acceptance_by_suite(b)
    acceptance = {
        suite: compare_acceptance(
            [r.counters for r in acc_a[suite]], [r.counters for r in acc_b[suite]], paired=paired
        )
        for suite in sorted(acc_a.keys() & acc_b.keys())
    }
    if kind is Kind.REF:
        return Comparison(a.label, b.label, kind, None, None, l3, acceptance, tuple(notes))
    return Comparison(
        a.label, b.label, kind, l1_summary(a, b), l2_summary(a, b), l3, acceptance, tuple(notes)
    )


def l1_to_reference(ref: ArmView, arm: ArmView) -> L1Distance | None:
    pairs = _l1_pairs(ref, arm)
    return l1_distance(pairs) if pairs else None


def l2_to_reference(ref: ArmView, arm: ArmView, tie: float) -> L2Distance | None:
    gr, ga = ref.gen(greedy_only=True), arm.gen(greedy_only=True)
    rows = []
    for key in sorted(gr.keys() & ga.keys()):
        r, a = gr[key], ga[key]
        ref_top = [_top(t) for t in r.top_logprobs or []]
        rows.append((key, r.item_id or key, r.token_ids, a.token_ids, ref_top))
    return l2_distance(rows, tie) if rows else None


def suite_health(arm: ArmView) -> dict[str, OutputStats]:
    """Per suite: thinking length, truncation (finish_reason=length) and empty answers."""
    by_suite: dict[str, list[ModelOutput]] = defaultdict(list)
    for s in arm.gen().values():
        by_suite[s.suite or "?"].append(ModelOutput(s.text, s.reasoning, s.finish_reason))
    return {suite: output_stats(outputs) for suite, outputs in sorted(by_suite.items())}


# ----------------------------------------------------------------------------- a model, a run


def anchors_of(manifest: RunManifest, arms: dict[str, ArmView]) -> tuple[str, ...]:
    """The correct anchors: the baseline, plus vLLM's own op (`platform`) where it ran."""
    extra = [
        label for label, a in arms.items() if a.meta.role is Role.CANDIDATE and a.meta.path == "platform"
    ]
    return (manifest.baseline, *extra)


def _distances(ref: ArmView, arms: dict[str, ArmView], anchors: tuple[str, ...]) -> dict[str, Distance]:
    l1 = {label: l1_to_reference(ref, a) for label, a in arms.items() if label != ref.label}
    tie = tie_threshold([d for label, d in l1.items() if label in anchors and d is not None])
    return {label: Distance(l1[label], l2_to_reference(ref, arms[label], tie)) for label in l1}


def _closeness(distances: dict[str, Distance], anchors: tuple[str, ...], label: str) -> Closeness | None:
    """A path against the anchors other than itself; the baseline alone has nothing to be judged against."""
    mine = distances[label]
    others = [a for a in anchors if a != label and distances.get(a) is not None]
    l1_anchors = [distances[a].l1 for a in others if distances[a].l1 is not None]
    if mine.l1 is None or not l1_anchors:
        return None
    l2_anchors = [distances[a].l2 for a in others if distances[a].l2 is not None]
    l2 = l2_closeness(mine.l2, l2_anchors) if mine.l2 is not None and l2_anchors else None
    return Closeness(tuple(others), l1_closeness(mine.l1, l1_anchors), l2)


def evaluate_model(
    manifest: RunManifest, cfg: RunConfig, store: RunStore, name: str, mm: ModelMeta
) -> ModelEvaluation:
    arms = {label: load_arm(store, name, label) for label in mm.arms}
    ref_label, base = manifest.reference, manifest.baseline
    if ref_label not in arms or base not in arms:
        raise StoreError(f"{name}: the reference or baseline arm is missing from {store.root}")
    ref = arms[ref_label]
    anchors = anchors_of(manifest, arms)
    distances = _distances(ref, arms, anchors)
    closeness = {label: c for label in distances if (c := _closeness(distances, anchors, label)) is not None}
    comparisons = []
    for a in arms.values():
        if a.meta.role is Role.AA:
            comparisons.append(compare(arms[base], a, cfg, Kind.AA))
        elif a.meta.role is Role.CANDIDATE:
            comparisons.append(compare(arms[base], a, cfg, Kind.AB))
    comparisons += [compare(ref, a, cfg, Kind.REF) for label, a in arms.items() if label != ref_label]
    summaries = {
        label: ArmSummary(
            label, a.meta.path, a.meta.role, a.meta.verification, a.meta.seconds, suite_health(a)
        )
        for label, a in arms.items()
    }
    return ModelEvaluation(ref_label, base, anchors, summaries, distances, closeness, tuple(comparisons))


def evaluate_run(run_dir: Path) -> RunEvaluation:
    """Evaluate a run directory and cache the result as diff.json."""
    store = RunStore(run_dir)
    key = store.state_key()
    manifest = store.read_manifest()
    cfg = RunConfig.model_validate(manifest.config)
    models = {name: evaluate_model(manifest, cfg, store, name, mm) for name, mm in manifest.models.items()}
    info = RunInfo(
        name=manifest.name,
        profile=manifest.profile,
        baseline=manifest.baseline,
        reference=manifest.reference,
        paths=tuple(manifest.paths),
        started=manifest.started,
        finished=manifest.finished,
        data_source=manifest.data_source,
        provenance=manifest.provenance,
        data_hashes={name: mm.data_hashes for name, mm in manifest.models.items()},
        departures={
            n: tuple(k for k, on in sc.options.items() if on)
            for n, sc in cfg.suites.items()
            if any(sc.options.values())
        },
    )
    evaluation = RunEvaluation(key, info, models)
    store.write_document(EVALUATION, EVALUATION_TYPE.dump_json(evaluation, indent=1).decode())
    return evaluation


def load_evaluation(run_dir: Path) -> RunEvaluation:
    """The cached evaluation when it matches the run's current records, else a fresh one."""
    store = RunStore(run_dir)
    text = store.read_document(EVALUATION)
    if text is not None:
        try:
            cached = EVALUATION_TYPE.validate_json(text)
        except ValueError:
            cached = None  # written by another version: evaluate again
        if cached is not None and cached.key == store.state_key():
            return cached
    return evaluate_run(run_dir)
