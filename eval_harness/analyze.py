"""`rope-eval diff`: read a run directory and compare every path with the baseline.

For each model: baseline vs each other path (A/B), and baseline vs its own repeat (A/A, the
noise floor), at L1 (teacher-forced logprobs), L2 (greedy tokens), L3 (task accuracy) and
eagle3 acceptance. Output is `diff.json`, the input of `report` and `gate`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from eval_harness.runner import AA_SUFFIX
from eval_harness.store import ArmStore, Sample, StoreError, read_json, write_json


@dataclass
class Arm:
    label: str
    path: str
    verified: str
    counts: dict[str, int] | None
    samples: dict[str, Sample]
    scores: dict[str, dict[str, Any]]
    acceptance: list[dict[str, Any]]

    def gen(self) -> dict[str, Sample]:
        return {k: s for k, s in self.samples.items() if s.kind == "gen"}

    def l1(self) -> dict[str, Sample]:
        return {k: s for k, s in self.samples.items() if s.kind == "l1"}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise StoreError(f"corrupt {path}: {exc}") from None


def load_arm(run_dir: Path, meta: dict[str, Any], label: str) -> Arm:
    d = run_dir / meta["dir"]
    store = ArmStore(d, {})
    return Arm(
        label,
        meta["path"],
        meta.get("verified", "unknown"),
        meta.get("counts"),
        {s.key: s for s in store.read()},
        {r["key"]: r for r in _jsonl(d / "scores.jsonl")},
        _jsonl(d / "acceptance.jsonl"),
    )


@dataclass
class Comparison:
    a: str
    b: str
    kind: str  # "A/B" or "A/A"
    l1: L1Summary | None = None
    l2: L2Summary | None = None
    l3: dict[str, L3Result] = field(default_factory=dict)
    acceptance: dict[str, AcceptanceDiff] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "kind": self.kind,
            "l1": self.l1.to_dict() if self.l1 else None,
            "l2": self.l2.to_dict() if self.l2 else None,
            "l3": {k: v.to_dict() for k, v in self.l3.items()},
            "acceptance": {k: v.to_dict() for k, v in self.acceptance.items()},
            "notes": self.notes,
        }


def _pairs(rows: list[list[float]] | None) -> dict[int, float]:
    return {int(t): lp for t, lp in rows or []}


def l1_summary(a: Arm, b: Arm) -> L1Summary | None:
    la, lb = a.l1(), b.l1()
    pairs = []
    for key in sorted(la.keys() & lb.keys()):
        sa, sb = la[key], lb[key]
        ids = sa.prompt_token_ids or []
        if ids != (sb.prompt_token_ids or []):
            raise StoreError(
                f"L1 sequence {key} differs between {a.label} and {b.label}: not the same tokens"
            )
        pairs.append(
            (
                from_prompt_logprobs(
                    ids, [None if p is None else _pairs(p) for p in sa.prompt_logprobs or []]
                ),
                from_prompt_logprobs(
                    ids, [None if p is None else _pairs(p) for p in sb.prompt_logprobs or []]
                ),
            )
        )
    return summarize_l1(pairs) if pairs else None


def l2_summary(a: Arm, b: Arm) -> L2Summary | None:
    ga, gb = a.gen(), b.gen()
    diffs = []
    for key in sorted(ga.keys() & gb.keys()):
        sa, sb = ga[key], gb[key]
        top_a = [_pairs(t) for t in sa.top_logprobs] if sa.top_logprobs else None
        top_b = [_pairs(t) for t in sb.top_logprobs] if sb.top_logprobs else None
        diffs.append(compare_greedy(sa.token_ids, sb.token_ids, top_a, top_b))
    return summarize_l2(diffs) if diffs else None


def suite_scores(arm: Arm) -> dict[str, dict[str, list[float]]]:
    """suite -> item id -> correctness per sample index."""
    out: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in arm.scores.values():
        out[r["suite"]][r["item_id"]][r["sample_idx"]] = float(r["correct"])
    return {s: {i: [v[j] for j in sorted(v)] for i, v in items.items()} for s, items in out.items()}


def acceptance_by_suite(arm: Arm) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in sorted(arm.acceptance, key=lambda r: (r["suite"], r["batch"])):
        out[rec["suite"]].append(rec)
    return out


def compare(a: Arm, b: Arm, cfg: RunConfig, kind: str) -> Comparison:
    c = Comparison(a.label, b.label, kind, l1_summary(a, b), l2_summary(a, b))
    sa, sb = suite_scores(a), suite_scores(b)
    common = sa.keys() & sb.keys()
    if sa.keys() != sb.keys():
        c.notes.append(f"suites scored on one side only: {sorted(sa.keys() ^ sb.keys())}")
    margins = {s: cfg.suites[s].margin for s in common if s in cfg.suites}
    c.l3 = compare_suites({s: sa[s] for s in common}, {s: sb[s] for s in common}, margins)
    acc_a, acc_b = acceptance_by_suite(a), acceptance_by_suite(b)
    for suite in sorted(acc_a.keys() & acc_b.keys()):
        c.acceptance[suite] = compare_acceptance(
            [_batch(r) for r in acc_a[suite]], [_batch(r) for r in acc_b[suite]]
        )
    return c


def _batch(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in ("drafts", "draft_tokens", "accepted", "accepted_per_pos")}


def suite_health(arm: Arm) -> dict[str, dict[str, float]]:
    """Per suite: truncation (finish_reason=length), empty answers, mean reasoning length."""
    by_suite: dict[str, list[Sample]] = defaultdict(list)
    for s in arm.gen().values():
        by_suite[s.suite or "?"].append(s)
    out = {}
    for suite, samples in by_suite.items():
        n = len(samples)
        out[suite] = {
            "n": n,
            "length_rate": sum(s.finish_reason == "length" for s in samples) / n,
            "empty_rate": sum(not s.text.strip() for s in samples) / n,
            "mean_reasoning_chars": sum(len(s.reasoning or "") for s in samples) / n,
            "mean_tokens": sum(len(s.token_ids) for s in samples) / n,
        }
    return out


def diff_run(run_dir: Path) -> dict[str, Any]:
    manifest = read_json(run_dir / "manifest.json")
    cfg = RunConfig.model_validate(manifest["config"])
    base = manifest["baseline"]
    models = {}
    for name, mr in manifest["models"].items():
        arms = {label: load_arm(run_dir, meta, label) for label, meta in mr["arms"].items()}
        comps = []
        if base + AA_SUFFIX in arms:
            comps.append(compare(arms[base], arms[base + AA_SUFFIX], cfg, "A/A"))
        comps += [compare(arms[base], arms[p], cfg, "A/B") for p in cfg.paths[1:] if p in arms]
        models[name] = {
            "arms": {
                k: {"path": a.path, "verified": a.verified, "counts": a.counts, "health": suite_health(a)}
                for k, a in arms.items()
            },
            "comparisons": [c.to_dict() for c in comps],
        }
    out = {
        "run": {
            k: manifest.get(k)
            for k in (
                "name",
                "profile",
                "baseline",
                "paths",
                "started",
                "finished",
                "provenance",
                "data_source",
            )
        },
        "models": models,
        "data_hashes": {m: mr.get("data_hashes") for m, mr in manifest["models"].items()},
    }
    write_json(run_dir / "diff.json", out)
    return out
