"""`rope-eval report`: Markdown (PR comment / nightly summary), JSON (dashboards) and a
self-contained HTML sign-off page, all from `diff.json` and the gate's checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from eval_harness import plots
from eval_harness.gate import Check, passed
from eval_harness.store import write_json

PUBLIC_TESTS_NOTE = (
    "LiveCodeBench is scored on public tests only: pass@1 is higher than official LCB figures, "
    "which also run the hidden tests."
)


def verdict_line(diff: dict[str, Any], checks: list[Check]) -> str:
    fails = [c for c in checks if not c.passed]
    paths = ", ".join(diff["run"]["paths"][1:])
    base = diff["run"]["baseline"]
    if not fails:
        return f"PASS: {paths} matched {base} on {len(diff['models'])} model(s) ({len(checks)} checks)"
    first = fails[0]
    return (
        f"FAIL: {len(fails)} of {len(checks)} checks failed; first: {first.model} {first.comparison} "
        f"{first.name}: {first.detail}"
    )


def _forest_rows(md: dict[str, Any]) -> list[plots.Row]:
    aa = next((c for c in md["comparisons"] if c["kind"] == "A/A"), None)
    rows = []
    for c in md["comparisons"]:
        if c["kind"] != "A/B":
            continue
        for suite, r in c["l3"].items():
            floor = abs(aa["l3"][suite]["delta"]) if aa and suite in aa["l3"] else None
            rows.append(plots.Row(f"{c['b']} {suite}", r["delta"], r["delta_low"], r["delta_high"], floor))
    return rows


def _hists(md: dict[str, Any], level: str, key: str) -> list[tuple[list[float], dict[str, list[float]]]]:
    """Histograms of one metric across comparisons, grouped by bin edges (only same bins overlay)."""
    groups: dict[tuple[float, ...], dict[str, list[float]]] = {}
    for c in md["comparisons"]:
        h = (c.get(level) or {}).get(key)
        if h:
            groups.setdefault(tuple(h["edges"]), {})[f"{c['kind']} {c['b']}"] = h["counts"]
    return [(list(edges), series) for edges, series in groups.items()]


def _acceptance_series(md: dict[str, Any]) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {}
    for c in md["comparisons"]:
        for suite, acc in c["acceptance"].items():
            series.setdefault(f"{c['a']} {suite}", list(acc["a"]["per_position_rate"]))
            series[f"{c['kind']} {c['b']} {suite}"] = list(acc["b"]["per_position_rate"])
    return series


def figures(md: dict[str, Any]) -> list[str]:
    out = [plots.forest(_forest_rows(md), "L3: Δ accuracy (B − A) with 95% CI; grey band = |A/A Δ|")]
    for edges, series in _hists(md, "l1", "kl_histogram"):
        out.append(plots.bars(edges, series, "L1: per-token KL(A‖B), log10 bins", "KL"))
    for edges, series in _hists(md, "l2", "first_divergence_histogram"):
        out.append(plots.bars(edges, series, "L2: first divergence position", "generated token index"))
    out.append(plots.lines(_acceptance_series(md), "eagle3: acceptance rate per draft position", "position"))
    return [f for f in out if f]


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


def render(diff: dict[str, Any], checks: list[Check], out_dir: Path) -> dict[str, Path]:
    """Write report.md, report.json and report.html into out_dir; returns their paths."""
    ctx = {
        "diff": diff,
        "checks": checks,
        "verdict": verdict_line(diff, checks),
        "passed": passed(checks),
        "lcb_note": PUBLIC_TESTS_NOTE,
        "has_lcb": _has_suite(diff, "livecodebench"),
    }
    env = _env()
    md = env.get_template("report.md.j2").render(**ctx)
    html = env.get_template("report.html.j2").render(
        **ctx, figures={m: figures(d) for m, d in diff["models"].items()}, markdown=md
    )
    paths = {"md": out_dir / "report.md", "json": out_dir / "report.json", "html": out_dir / "report.html"}
    paths["md"].write_text(md)
    paths["html"].write_text(html)
    write_json(
        paths["json"],
        {
            "verdict": ctx["verdict"],
            "passed": ctx["passed"],
            "checks": [c.__dict__ for c in checks],
            "diff": diff,
        },
    )
    return paths


def _has_suite(diff: dict[str, Any], suite: str) -> bool:
    return any(suite in c["l3"] for md in diff["models"].values() for c in md["comparisons"])
