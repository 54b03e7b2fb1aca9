"""`rope-eval report`: Markdown (PR comment / nightly summary), JSON (dashboards) and a self-contained
HTML sign-off page, from the evaluation and the gate's checks. The headline states, for each path, its
distance to the reference relative to the anchors', with its CI and the verdict."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pydantic_core
from jinja2 import Environment, PackageLoader, StrictUndefined

from eval_harness import plots
from eval_harness.analyze import EVALUATION_TYPE, Kind, ModelEvaluation, RunEvaluation
from eval_harness.diff.distance import PRIMARY
from eval_harness.gate import Check, Policy, concerns, junit_xml, passed
from eval_harness.records import Role
from eval_harness.stats import cluster_ratio_ci
from eval_harness.store import RunStore, fingerprint

PUBLIC_TESTS_NOTE = (
    "LiveCodeBench is scored on public tests only: pass@1 is higher than official LCB figures, "
    "which also run the hidden tests."
)
REPORTS = {"md": "report.md", "json": "report.json", "html": "report.html", "junit": "gate-junit.xml"}
FIGURES = "figures.json"  # the HTML page's SVGs, keyed by the evaluation and the policy


def reference_name(ev: RunEvaluation) -> str:
    return "the fp32 model" if ev.run.reference.endswith("fp32") else "the fp64-RoPE reference"


@dataclass(frozen=True)
class ArmVerdict:
    """One arm's headline: its primary L1 distance relative to the anchors', and whether it passed."""

    model: str
    label: str
    role: str
    anchors: str
    ratio: float | None
    low: float | None
    high: float | None
    passed: bool
    failed: tuple[str, ...]

    def line(self, reference: str) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        if self.ratio is None:
            return f"{self.label}: {verdict}" + (f" ({'; '.join(self.failed)})" if self.failed else "")
        text = (
            f"{self.label}: {self.ratio:.3g}x {self.anchors}'s distance to {reference}, "
            f"95% CI [{self.low:.3g}, {self.high:.3g}], {verdict}"
        )
        return text + (f" (failed: {'; '.join(self.failed)})" if self.failed else "")


def arm_verdicts(ev: RunEvaluation, checks: list[Check]) -> list[ArmVerdict]:
    out = []
    for model, me in ev.models.items():
        for label, arm in me.arms.items():
            if arm.role in (Role.REFERENCE, Role.BASELINE):
                continue
            mine = [c for c in checks if c.model == model and concerns(c, label, me.baseline)]
            c = me.closeness.get(label)
            m = c.metric(PRIMARY).ratio if c else None
            out.append(
                ArmVerdict(
                    model,
                    label,
                    arm.role.value,
                    " and ".join(c.anchors) if c else me.baseline,
                    m.estimate if m else None,
                    m.low if m else None,
                    m.high if m else None,
                    all(x.passed for x in mine),
                    tuple(f"{x.name}: {x.detail}" for x in mine if not x.passed),
                )
            )
    return out


def verdict_line(ev: RunEvaluation, checks: list[Check]) -> str:
    fails = [c for c in checks if not c.passed]
    paths = ", ".join(ev.run.paths[1:]) or f"the A/A arms of {ev.run.baseline}"  # a noise-floor run
    if not fails:
        where = f"on {len(ev.models)} model(s) ({len(checks)} checks)"
        return f"{paths} as close to {reference_name(ev)} as {ev.run.baseline} {where}"
    first = fails[0]
    where = f"{first.model} {first.subject} {first.name}"
    return f"{len(fails)} of {len(checks)} checks failed; first: {where}: {first.detail}"


# ----------------------------------------------------------------------------- figures


def _color(me: ModelEvaluation, label: str) -> str:
    role = me.arms[label].role
    if label in me.anchors:
        return plots.ANCHOR
    return plots.AA if role is Role.AA else plots.CANDIDATE


def _distance_rows(me: ModelEvaluation) -> list[plots.Interval]:
    rows = []
    for label, d in me.distances.items():
        if d.l1 is None:
            continue
        sums = [c.abs_dlogprob for c in d.l1.clusters]
        positions = [[c.positions for c in d.l1.clusters]]
        ci = cluster_ratio_ci(sums, positions)  # mean per position, clusters resampled
        floor = 1e-12  # a log axis cannot show an exact zero
        rows.append(
            plots.Interval(
                label, max(ci.estimate, floor), max(ci.low, floor), max(ci.high, floor), _color(me, label)
            )
        )
    return rows


def _ratio_rows(me: ModelEvaluation) -> list[plots.Interval]:
    rows = []
    for label, c in me.closeness.items():
        r = c.metric(PRIMARY).ratio
        rows.append(plots.Interval(label, r.estimate, r.low, r.high, _color(me, label)))
    return rows


def _forest_rows(me: ModelEvaluation) -> list[plots.Interval]:
    return [
        plots.Interval(
            f"{c.b} {suite}",
            r.delta,
            r.delta_low,
            r.delta_high,
            plots.AA if c.kind is Kind.AA else plots.CANDIDATE,
        )
        for c in me.comparisons
        if c.kind is not Kind.REF
        for suite, r in c.l3.items()
    ]


def _kl_histograms(me: ModelEvaluation) -> tuple[list[float], dict[str, list[int]]] | None:
    series, edges = {}, None
    for label, d in me.distances.items():
        if d.l1 is not None:
            h = d.l1.summary.kl_histogram
            edges = list(h.edges)
            series[label] = list(h.counts)
    return (edges, series) if edges else None


def _acceptance_series(me: ModelEvaluation) -> dict[str, list[float]]:
    """Acceptance rate per draft position of each arm, pooled over its suites (weighted by drafts)."""
    pooled: dict[str, list[tuple[float, tuple[float, ...]]]] = {}
    for c in me.comparisons:
        if c.kind is Kind.REF:
            for acc in c.acceptance.values():
                pooled.setdefault(c.a, []).append((acc.a.num_drafts, acc.a.per_position_rate))
                pooled.setdefault(c.b, []).append((acc.b.num_drafts, acc.b.per_position_rate))
    series = {}
    for label, parts in pooled.items():
        drafts = sum(d for d, _ in parts)
        width = max(len(r) for _, r in parts)
        if drafts > 0:
            series[label] = [
                sum(d * (r[i] if i < len(r) else 0.0) for d, r in parts) / drafts for i in range(width)
            ]
    return series


def _spans_decades(rows: list[plots.Interval]) -> bool:
    values = [v for r in rows for v in (r.low, r.high) if v > 0]
    return bool(values) and max(values) / min(values) > 20


def figures(me: ModelEvaluation, policy: Policy) -> list[str]:
    out = [
        plots.intervals(
            _distance_rows(me),
            "L1: mean |Δlogprob| per token against the reference, 95% CI (blue: anchors)",
            "nats per token (log scale)",
            log=True,
        ),
        plots.intervals(
            _ratio_rows(me),
            "L1: distance relative to the farthest anchor, 95% CI",
            "ratio (1 = as close as the anchors)",
            log=_spans_decades(_ratio_rows(me)),
            lines=[(1.0, "anchors"), (1.0 + policy.l1.margins.get(PRIMARY, 0.0), "limit")],
        ),
        plots.intervals(
            _forest_rows(me),
            "L3: Δ accuracy against the baseline, 95% CI",
            "Δ accuracy (B − A)",
            lines=[(0.0, "0")],
        ),
    ]
    kl = _kl_histograms(me)
    if kl:
        edges, series = kl
        note = f"every per-token KL against the reference is below {edges[0]:.0e} (exact agreement)"
        out.append(
            plots.histograms(edges, series, "L1: per-token KL(reference ‖ arm)", "KL (nats, log scale)", note)
        )
    out.append(plots.per_position(_acceptance_series(me), "eagle3: acceptance rate per draft position"))
    return out


# ----------------------------------------------------------------------------- render


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("eval_harness", "templates"),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = lambda v, spec=".3g": "–" if v is None else format(v, spec)
    return env


def cached_figures(store: RunStore, ev: RunEvaluation, policy: Policy) -> dict[str, list[str]]:
    """The figures are the slow part of a report (matplotlib: seconds); they depend only on the evaluation
    and the policy, so a report of an unchanged run reuses them."""
    key = fingerprint({"evaluation": ev.key, "policy": policy.model_dump(mode="json")})
    doc = store.read_document(FIGURES)
    cached = json.loads(doc) if doc else {}
    if cached.get("key") == key:
        return cached["figures"]
    figs = {m: figures(me, policy) for m, me in ev.models.items()}
    store.write_document(FIGURES, json.dumps({"key": key, "figures": figs}))
    return figs


def render(ev: RunEvaluation, checks: list[Check], policy: Policy, run_dir: Path) -> dict[str, Path]:
    """Write report.md, report.json, report.html and gate-junit.xml into the run directory."""
    store = RunStore(run_dir)
    verdicts = arm_verdicts(ev, checks)
    ctx = {
        "ev": ev,
        "checks": checks,
        "verdict": verdict_line(ev, checks),
        "passed": passed(checks),
        "reference": reference_name(ev),
        "verdicts": verdicts,
        "lcb_note": PUBLIC_TESTS_NOTE,
        "has_lcb": any("livecodebench" in c.l3 for me in ev.models.values() for c in me.comparisons),
        "Role": Role,
        "Kind": Kind,
    }
    env = _env()
    md = env.get_template("report.md.j2").render(**ctx)
    html = env.get_template("report.html.j2").render(
        **ctx, figures=cached_figures(store, ev, policy), markdown=md
    )
    doc = {
        "verdict": ctx["verdict"],
        "passed": ctx["passed"],
        "paths": [asdict(v) | {"line": v.line(ctx["reference"])} for v in verdicts],
        "checks": [asdict(c) for c in checks],
        "evaluation": json.loads(pydantic_core.to_json(EVALUATION_TYPE.dump_python(ev), inf_nan_mode="null")),
    }
    return {
        "md": store.write_document(REPORTS["md"], md),
        "html": store.write_document(REPORTS["html"], html),
        "json": store.write_document(REPORTS["json"], json.dumps(doc, indent=1)),
        "junit": store.write_document(REPORTS["junit"], junit_xml(checks)),
    }
