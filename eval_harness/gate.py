"""`rope-eval gate`: turn a diff into pass/fail for CI, against a policy and the A/A floor.

Every threshold is "A/B may exceed the A/A floor by at most this much". Without an A/A run
(smoke profile) the floor is ideal agreement (KL 0, agreement 1), so only the rounding
tolerance is left: a deterministic CPU floor is exactly zero, and an fp32 rounding-level Δ
must still pass.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eval_harness.config import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class L1Policy(_Strict):
    kl_mean_tol: float = Field(1e-4, ge=0)
    top1_tol: float = Field(0.002, ge=0)
    abs_dlogprob_max_tol: float = Field(0.05, ge=0)


class L2Policy(_Strict):
    identical_tol: float = Field(0.05, ge=0, le=1)
    min_close_rate: float = Field(1.0, ge=0, le=1)


class L3Policy(_Strict):
    require_equivalence: bool = False  # TOST within each suite's margin (release)
    forbid_significant_drop: bool = True


class AcceptancePolicy(_Strict):
    length_tol: float = Field(0.1, ge=0)


class Policy(_Strict):
    name: str = "default"
    require_verified: bool = True
    l1: L1Policy = L1Policy()
    l2: L2Policy = L2Policy()
    l3: L3Policy = L3Policy()
    acceptance: AcceptancePolicy = AcceptancePolicy()


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    try:
        return Policy.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except OSError as exc:
        raise ConfigError(f"cannot read policy {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"policy {path} is invalid: {exc}") from None


@dataclass(frozen=True)
class Check:
    model: str
    comparison: str
    name: str
    passed: bool
    detail: str


def _floor(aa: dict[str, Any] | None, level: str, key: str, ideal: float) -> float:
    if not aa or not aa.get(level):
        return ideal
    v = aa[level][key]
    return ideal if v is None else v


def _l1_checks(ab: dict, aa: dict | None, p: L1Policy) -> list[tuple[str, bool, str]]:
    l1 = ab["l1"]
    if l1 is None:
        return [("L1 present", False, "no teacher-forced sequences were compared")]
    out = []
    for key, ideal, tol, worse in (
        ("kl_mean", 0.0, p.kl_mean_tol, 1),
        ("top1_agreement", 1.0, p.top1_tol, -1),
        ("abs_dlogprob_max", 0.0, p.abs_dlogprob_max_tol, 1),
    ):
        floor = _floor(aa, "l1", key, ideal)
        limit = floor + worse * tol
        ok = l1[key] <= limit if worse > 0 else l1[key] >= limit
        out.append((f"L1 {key}", ok, f"{l1[key]:.3g} vs limit {limit:.3g} (A/A floor {floor:.3g})"))
    return out


def _l2_checks(ab: dict, aa: dict | None, p: L2Policy) -> list[tuple[str, bool, str]]:
    l2 = ab["l2"]
    if l2 is None:
        return []
    floor_v = aa["l2"]["identical_rate"]["estimate"] if aa and aa.get("l2") else 1.0
    rate = l2["identical_rate"]["estimate"]
    close = l2["close_rate"] if l2["close_rate"] is not None else 1.0
    return [
        (
            "L2 identical rate",
            rate >= floor_v - p.identical_tol,
            f"{rate:.3f} vs limit {floor_v - p.identical_tol:.3f} (A/A floor {floor_v:.3f})",
        ),
        (
            "L2 divergences within top-k",
            close >= p.min_close_rate,
            f"close rate {close:.3f} (min {p.min_close_rate})",
        ),
    ]


def _l3_checks(ab: dict, p: L3Policy) -> list[tuple[str, bool, str]]:
    out = []
    for suite, r in ab["l3"].items():
        d = f"Δ {r['delta']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}] ({r['method']})"
        if p.forbid_significant_drop:
            out.append((f"L3 {suite} no significant drop", not (r["significant"] and r["delta"] < 0), d))
        if p.require_equivalence:
            tost = r.get("tost") or {}
            out.append(
                (
                    f"L3 {suite} equivalent (TOST)",
                    bool(tost.get("equivalent")),
                    f"{d}, margin ±{tost.get('margin')}",
                )
            )
    return out


def _acc_checks(ab: dict, aa: dict | None, p: AcceptancePolicy) -> list[tuple[str, bool, str]]:
    out = []
    for suite, acc in ab["acceptance"].items():
        delta = acc["mean_acceptance_length"]["delta"]
        if delta is None:
            out.append((f"acceptance {suite}", False, f"no acceptance data: {acc.get('reason')}"))
            continue
        floor = 0.0
        if aa and suite in aa["acceptance"]:
            floor = abs(aa["acceptance"][suite]["mean_acceptance_length"]["delta"] or 0.0)
        out.append(
            (
                f"acceptance {suite} |Δ length|",
                abs(delta) <= floor + p.length_tol,
                f"Δ {delta:+.3f} vs limit {floor + p.length_tol:.3f} (A/A floor {floor:.3f})",
            )
        )
    return out


def evaluate(diff: dict[str, Any], policy: Policy) -> list[Check]:
    checks: list[Check] = []
    for model, md in diff["models"].items():
        if policy.require_verified:
            for label, arm in md["arms"].items():
                checks.append(
                    Check(model, label, "path verified", arm["verified"] == "verified", arm["verified"])
                )
        aa = next((c for c in md["comparisons"] if c["kind"] == "A/A"), None)
        for c in md["comparisons"]:
            if c["kind"] != "A/B":
                continue
            name = f"{c['a']} vs {c['b']}"
            rows = (
                _l1_checks(c, aa, policy.l1)
                + _l2_checks(c, aa, policy.l2)
                + _l3_checks(c, policy.l3)
                + _acc_checks(c, aa, policy.acceptance)
            )
            checks += [Check(model, name, n, ok, d) for n, ok, d in rows]
    return checks


def only_path(checks: list[Check], baseline: str, path: str) -> list[Check]:
    """The checks that concern one path: its own verification, the baseline's, and baseline vs path."""
    keep = {path, baseline, f"{baseline} vs {path}"}
    return [c for c in checks if c.comparison in keep]


def write_junit(checks: list[Check], path: Path) -> None:
    suite = ET.Element(
        "testsuite",
        name="rope-eval gate",
        tests=str(len(checks)),
        failures=str(sum(not c.passed for c in checks)),
    )
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"{c.model}.{c.comparison}", name=c.name)
        if not c.passed:
            ET.SubElement(case, "failure", message=c.detail).text = c.detail
        else:
            ET.SubElement(case, "system-out").text = c.detail
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def passed(checks: list[Check]) -> bool:
    return bool(checks) and all(c.passed for c in checks)
