"""`rope-eval gate`: turn an evaluation into pass/fail for CI, against a policy.

The decision is relative, not a hand-set tolerance: a path passes L1 and L2 when its distance to the
reference is no larger than the correct anchors' (the baseline, and `platform` where it ran), up to a
margin, tested on the upper bound of a cluster-bootstrap CI (non-inferiority). The A/A arms (the
baseline served again) are judged the same way against the plain margin; their own excess widens the
margin the candidates get, so a noisy floor is never mistaken for a regression. Absolute limits are
backstops only: a floor under which a distance is rounding whatever the ratio says, and a ceiling that a
distance must stay under whatever the anchors show; each one a policy file sets cites a measurement.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from eval_harness.analyze import (
    Closeness,
    Comparison,
    Kind,
    ModelEvaluation,
    RunEvaluation,
    evaluate_run,
    load_evaluation,
)
from eval_harness.config import ConfigError, Strict
from eval_harness.diff.distance import L1_METRICS, RATE_METRICS, MetricCloseness
from eval_harness.records import Role

LEVELS = ("verification", "L1", "L2", "L3", "acceptance")


class L1Policy(Strict):
    # The metrics that decide L1, each with how far a path may exceed the farthest anchor (upper 95% bound):
    # for a distance, as a ratio excess (0.5: up to 1.5x the anchor's); for top-1 disagreement, a rare event
    # for a correct path, as an absolute share of positions. KL is reported but not gated by default: its
    # top-k estimate is heavy-tailed (near-ties, the unreported mass), and between two correct arms its
    # ratio's CI spread to [1.04, 3.2] on 24 prompts (tests/test_verdict.py), where |Δlogprob| stayed tight.
    margins: dict[str, float] = Field(
        default_factory=lambda: {"abs_dlogprob": 0.5, "top1_disagreement": 0.02}
    )
    # per-position mean distances below these are rounding, so the ratio is not weighed
    floor: dict[str, float] = Field(default_factory=lambda: {"kl": 1e-8, "abs_dlogprob": 1e-5})
    ceiling: dict[str, float] = Field(default_factory=dict)  # backstop: fails whatever the anchors show


class L2Policy(Strict):
    # share of prompts whose greedy continuation forks where the reference was confident, above the worst
    # anchor's (upper 95% bound of the difference)
    margin: float = Field(0.1, ge=0, le=1)


class L3Policy(Strict):
    require_equivalence: bool = False  # TOST within each suite's margin (release)
    forbid_significant_drop: bool = True


class AcceptancePolicy(Strict):
    length_tol: float = Field(0.1, ge=0)  # |Δ mean acceptance length| beyond the A/A floor, in tokens
    require_noninferiority: bool = False  # release: the lower CI bound must stay within the tolerance


class Policy(Strict):
    name: str = "default"
    require_verified: bool = True
    l1: L1Policy = L1Policy()
    l2: L2Policy = L2Policy()
    l3: L3Policy = L3Policy()
    acceptance: AcceptancePolicy = AcceptancePolicy()


def load_policy(path) -> Policy:
    if path is None:
        return Policy()
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        policy = Policy.model_validate(raw)
    except OSError as exc:
        raise ConfigError(f"cannot read policy {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"policy {path} is invalid: {exc}") from None
    unknown = sorted(
        (set(policy.l1.margins) | set(policy.l1.floor) | set(policy.l1.ceiling)) - set(L1_METRICS)
    )
    if unknown:
        raise ConfigError(f"policy {path}: unknown L1 metrics {unknown}; known: {list(L1_METRICS)}")
    return policy


@dataclass(frozen=True)
class Check:
    model: str
    subject: str  # an arm label, or a comparison's name ("native vs triton")
    level: str  # one of LEVELS
    name: str
    passed: bool
    detail: str


# ----------------------------------------------------------------------------- L1 / L2


def _aa_excess(me: ModelEvaluation, metric: str | None) -> float:
    """How far the A/A arms' upper bounds reach above no difference: above 1 for an L1 ratio, above 0 for
    an L1 rate difference or the L2 fork-rate difference."""
    out = 0.0
    for arm in me.arms_with(Role.AA):
        c = me.closeness.get(arm.label)
        if c is None:
            continue
        if metric is None:
            out = max(out, c.l2.difference.high if c.l2 else 0.0)
        elif metric in RATE_METRICS:
            out = max(out, c.metric(metric).difference.high)
        else:
            out = max(out, c.metric(metric).ratio.high - 1.0)
    return out


def _l1_check(m: MetricCloseness, margin: float, floor: float | None) -> tuple[bool, str]:
    if m.metric in RATE_METRICS:
        d = m.difference
        detail = (
            f"{m.arm:.3g} vs the anchors' {m.anchor:.3g}: Δ {d.estimate:+.3g}, 95% CI [{d.low:+.3g}, "
            f"{d.high:+.3g}], limit +{margin:.3g}"
        )
        return d.high <= margin, detail
    r = m.ratio
    detail = (
        f"{r.estimate:.3g}x the anchors' distance to the reference, 95% CI [{r.low:.3g}, {r.high:.3g}], "
        f"limit {1 + margin:.3g}x; mean {m.arm:.3g} vs {m.anchor:.3g}"
        + (f" (floor {floor:.3g})" if floor is not None else "")
    )
    return r.high <= 1.0 + margin or (floor is not None and m.arm <= floor), detail


def _l1_checks(me: ModelEvaluation, label: str, c: Closeness, p: L1Policy) -> list[tuple]:
    out = []
    aa = me.arms[label].role is Role.AA
    for m in c.l1:
        if m.metric not in p.margins:
            continue
        base = p.margins[m.metric]
        margin = base if aa else max(base, _aa_excess(me, m.metric))
        ok, detail = _l1_check(m, margin, p.floor.get(m.metric))
        out.append(("L1", f"L1 {m.metric} vs anchors", ok, detail))
    return out


def _l2_checks(me: ModelEvaluation, label: str, c: Closeness, p: L2Policy) -> list[tuple]:
    if c.l2 is None:
        return []
    aa = me.arms[label].role is Role.AA
    margin = p.margin if aa else max(p.margin, _aa_excess(me, None))
    d = c.l2.difference
    dist = me.distances[label].l2
    detail = (
        f"confident forks {c.l2.arm_rate:.3f} vs anchors {c.l2.anchor_rate:.3f}: Δ {d.estimate:+.3f}, "
        f"95% CI [{d.low:+.3f}, {d.high:+.3f}], limit +{margin:.3f}"
        + (f" (tie threshold {dist.tie_threshold:.3g} nats)" if dist else "")
    )
    return [("L2", "L2 confident forks vs anchors", d.high <= margin, detail)]


def _ceiling_checks(me: ModelEvaluation, label: str, p: L1Policy) -> list[tuple]:
    d = me.distances[label].l1
    if d is None:
        return []
    return [
        (
            "L1",
            f"L1 {metric} ceiling",
            d.mean(metric) <= limit,
            f"{d.mean(metric):.3g} vs ceiling {limit:.3g}",
        )
        for metric, limit in p.ceiling.items()
    ]


# ----------------------------------------------------------------------------- L3 / acceptance


def _l3_checks(c: Comparison, p: L3Policy) -> list[tuple]:
    out = []
    for suite, r in c.l3.items():
        d = f"Δ {r.delta:+.3f} [{r.delta_low:+.3f}, {r.delta_high:+.3f}] ({r.method}"
        d += f", p={r.mcnemar_p:.3g})" if r.mcnemar_p is not None else ")"
        if p.forbid_significant_drop:
            out.append(("L3", f"L3 {suite} no significant drop", not (r.significant and r.delta < 0), d))
        if p.require_equivalence:
            margin = r.tost.margin if r.tost else None
            ok = bool(r.tost and r.tost.equivalent)
            out.append(("L3", f"L3 {suite} equivalent (TOST)", ok, f"{d}, margin ±{margin}"))
    return out


def _acc_floor(me: ModelEvaluation, suite: str) -> float:
    floors = [
        abs(c.acceptance[suite].mean_acceptance_length.delta or 0.0)
        for c in me.comparisons
        if c.kind is Kind.AA and suite in c.acceptance
    ]
    return max(floors, default=0.0)


def _acc_checks(me: ModelEvaluation, c: Comparison, p: AcceptancePolicy) -> list[tuple]:
    out = []
    for suite, acc in c.acceptance.items():
        ci = acc.mean_acceptance_length
        if ci.delta is None:
            out.append(("acceptance", f"acceptance {suite}", False, f"no acceptance data: {acc.reason}"))
            continue
        tol = _acc_floor(me, suite) + p.length_tol
        significant = ci.low is not None and ci.high is not None and not ci.low <= 0.0 <= ci.high
        ok = not (significant and abs(ci.delta) > tol)
        if p.require_noninferiority:
            ok = ok and ci.low is not None and ci.low >= -tol
        span = f"[{ci.low:+.3f}, {ci.high:+.3f}]" if ci.low is not None and ci.high is not None else "(no CI)"
        out.append(
            (
                "acceptance",
                f"acceptance {suite} Δ length",
                ok,
                f"Δ {ci.delta:+.3f} {span} vs tolerance ±{tol:.3f}",
            )
        )
    return out


# ----------------------------------------------------------------------------- all checks


def _model_checks(model: str, me: ModelEvaluation, policy: Policy) -> list[Check]:
    checks = []
    if policy.require_verified:
        for label, arm in me.arms.items():
            v = arm.verification
            ok = v is not None and v.verified
            detail = v.detail if v is not None else "no verification recorded"
            checks.append(Check(model, label, "verification", "path verified", ok, detail))
    for label in me.arms:
        rows = _ceiling_checks(me, label, policy.l1) if label != me.reference else []
        c = me.closeness.get(label)
        if c is not None:
            rows += _l1_checks(me, label, c, policy.l1) + _l2_checks(me, label, c, policy.l2)
        checks += [Check(model, label, *row) for row in rows]
    for c in me.comparisons:
        if c.kind is Kind.AB:
            rows = _l3_checks(c, policy.l3) + _acc_checks(me, c, policy.acceptance)
            checks += [Check(model, c.name, *row) for row in rows]
    return checks


def evaluate(evaluation: RunEvaluation, policy: Policy) -> list[Check]:
    checks = [c for model, me in evaluation.models.items() for c in _model_checks(model, me, policy)]
    return _completeness(evaluation) + checks


def _completeness(evaluation: RunEvaluation) -> list[Check]:
    """An interrupted run fails with a reason: its finished models are judged, the rest are missing, and
    "0 of 0 checks" would say nothing about why."""
    if evaluation.run.finished is not None:
        return []
    judged = ", ".join(evaluation.models) or "none"
    detail = (
        f"the run did not finish (models judged: {judged}); "
        "continue it with `rope-eval run CONFIG --resume RUN_DIR`"
    )
    return [Check("*", "run", "verification", "run finished", False, detail)]


def concerns(check: Check, label: str, baseline: str) -> bool:
    """Whether a check is about one arm: its own checks, or its comparison with the baseline."""
    return check.subject in (label, f"{baseline} vs {label}")


def only_path(checks: list[Check], evaluation: RunEvaluation, path: str) -> list[Check]:
    """The checks that concern one path: its own, the reference's and the baseline's (verification)."""
    keep = {path, evaluation.run.baseline, evaluation.run.reference}
    return [c for c in checks if c.subject in keep or concerns(c, path, evaluation.run.baseline)]


def junit_xml(checks: list[Check]) -> str:
    suite = ET.Element(
        "testsuite",
        name="rope-eval gate",
        tests=str(len(checks)),
        failures=str(sum(not c.passed for c in checks)),
    )
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"{c.model}.{c.subject}", name=c.name)
        if not c.passed:
            ET.SubElement(case, "failure", message=c.detail).text = c.detail
        else:
            ET.SubElement(case, "system-out").text = c.detail
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def passed(checks: list[Check]) -> bool:
    return bool(checks) and all(c.passed for c in checks)


def judge(run_dir: Path, policy: Policy, fresh: bool = False) -> tuple[RunEvaluation, list[Check]]:
    """A run directory's evaluation (the cached one while it matches the records) and its checks: what
    `report`, `gate`, `eval` and the selftest all start from."""
    evaluation = evaluate_run(run_dir) if fresh else load_evaluation(run_dir)
    return evaluation, evaluate(evaluation, policy)
