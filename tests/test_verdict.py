"""The verdict: each arm's distance to the reference, judged against the correct anchors' (issue: a
verdict you can sign off in bf16). Statistics on known inputs, then the whole back half (store ->
evaluate -> gate -> report) on a synthetic run directory whose truth is known, without vLLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import ArmSpec, write_run

from eval_harness.analyze import Kind, evaluate_run, load_evaluation
from eval_harness.diff.distance import TIE_FLOOR, l2_distance, tie_threshold
from eval_harness.gate import Policy, judge, load_policy
from eval_harness.records import Role
from eval_harness.report import render
from eval_harness.stats import RATIO_CAP, cluster_rate_diff_ci, cluster_ratio_ci
from eval_harness.store import RunStore

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- statistics


def test_ratio_of_equal_distances_is_one_with_a_ci_around_it() -> None:
    rng = np.random.default_rng(0)
    anchor = rng.gamma(2.0, 1.0, 200)
    arm = anchor * rng.normal(1.0, 0.05, 200)
    r = cluster_ratio_ci(arm, [anchor], seed=1)
    assert r.low < 1.0 < r.high and r.high < 1.05 and r.n_clusters == 200


def test_ratio_takes_the_farthest_anchor_and_pairs_the_resamples() -> None:
    near, far = np.full(50, 1.0), np.full(50, 2.0)
    r = cluster_ratio_ci(np.full(50, 2.0), [near, far])
    assert r.estimate == pytest.approx(1.0) and r.low == pytest.approx(1.0) and r.high == pytest.approx(1.0)
    bug = cluster_ratio_ci(np.full(50, 20.0), [near, far])
    assert bug.low == pytest.approx(10.0)


def test_ratio_at_exact_zero() -> None:
    assert cluster_ratio_ci(np.zeros(10), [np.zeros(10)]).estimate == 1.0  # both exact
    assert cluster_ratio_ci(np.ones(10), [np.zeros(10)]).estimate == RATIO_CAP  # finite, not inf
    with pytest.raises(ValueError):
        cluster_ratio_ci(np.ones(3), [np.ones(4)])


def test_rate_difference_ci() -> None:
    trials = np.ones(40)
    arm = np.r_[np.ones(20), np.zeros(20)]
    d = cluster_rate_diff_ci(arm, [np.zeros(40)], trials, seed=0)
    assert d.estimate == pytest.approx(0.5) and 0.3 < d.low < 0.5 < d.high < 0.7
    same = cluster_rate_diff_ci(np.zeros(40), [np.zeros(40)], trials)
    assert same.estimate == same.low == same.high == 0.0


# ----------------------------------------------------------------------------- L2 forks


def test_a_fork_is_rounding_where_the_reference_was_tied_and_an_error_where_it_was_sure() -> None:
    top_tied = [{1: -0.69, 2: -0.70, 3: -3.0}]
    top_sure = [{1: -0.01, 2: -5.0, 3: -6.0}]
    rows = [
        ("tie", "a", [1], [2], top_tied),
        ("sure", "b", [1], [2], top_sure),
        ("unlisted", "c", [1], [9], top_sure),  # below every listed token: margin is a lower bound
        ("same", "d", [1, 4], [1, 4], top_sure),
    ]
    d = l2_distance(rows, tie_threshold=0.1)
    forks = {f.key: f for f in d.forks}
    assert d.n_prompts == 4 and d.n_identical == 1 and d.n_confident == 2
    assert not forks["tie"].confident and forks["tie"].reference_margin == pytest.approx(0.01)
    assert forks["sure"].confident and forks["unlisted"].confident
    assert forks["unlisted"].reference_margin == pytest.approx(5.99)


def test_tie_threshold_follows_the_anchors_swing_with_a_floor() -> None:
    class D:
        def __init__(self, p99: float):
            self.abs_dlogprob_p99 = p99

    assert tie_threshold([D(1e-7)]) == TIE_FLOOR
    assert tie_threshold([D(0.02), D(0.05)]) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- the back half

ARMS = [
    ArmSpec("reference", "reference", Role.REFERENCE, 0.0),
    ArmSpec("native", "native", Role.BASELINE, 0.02),
    ArmSpec("native~aa", "native", Role.AA, 0.02, shuffle_seed=1),
    ArmSpec("triton", "triton", Role.CANDIDATE, 0.02),
    ArmSpec("custom:bugs:key_off_by_one", "custom:bugs:key_off_by_one", Role.CANDIDATE, 1.5, acceptance=0.3),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("synthetic") / "run", ARMS)


def test_distances_closeness_and_comparisons(run_dir: Path) -> None:
    ev = evaluate_run(run_dir)
    me = ev.models["toy"]
    assert me.reference == "reference" and me.anchors == ("native",)
    assert set(me.distances) == {a.label for a in ARMS[1:]}
    native, triton, bug = (me.distances[x].l1 for x in ("native", "triton", ARMS[4].label))
    assert native.abs_dlogprob > 0 and bug.abs_dlogprob > 20 * native.abs_dlogprob
    assert "native" not in me.closeness  # the only anchor has nothing to be judged against
    r = me.closeness["triton"].metric("abs_dlogprob").ratio
    assert r.low < 1.0 < r.high < 1.5
    assert me.closeness[ARMS[4].label].metric("abs_dlogprob").ratio.low > 10
    kinds = {(c.kind, c.b) for c in me.comparisons}
    assert (Kind.AA, "native~aa") in kinds and (Kind.AB, "triton") in kinds and (Kind.REF, "native") in kinds
    aa = next(c for c in me.comparisons if c.kind is Kind.AA)
    assert not aa.acceptance["toy-arith"].paired  # shuffled order: batch i holds other requests


def test_gate_passes_correct_paths_and_fails_the_bug_at_l1(run_dir: Path) -> None:
    _, checks = judge(run_dir, Policy())
    by = {}
    for c in checks:
        by.setdefault(c.subject, []).append(c)
    for subject in ("triton", "native~aa", "native vs triton", "reference", "native"):
        assert all(c.passed for c in by[subject]), [c for c in by[subject] if not c.passed]
    bug = ARMS[4].label
    failed = {c.level for c in by[bug] + by[f"native vs {bug}"] if not c.passed}
    assert {"L1", "L2", "acceptance"} <= failed


def test_policy_ceiling_is_a_backstop_and_bad_metrics_are_refused(run_dir: Path, tmp_path: Path) -> None:
    strict = Policy.model_validate({"l1": {"ceiling": {"abs_dlogprob": 1e-9}}})
    _, checks = judge(run_dir, strict)
    assert any(c.subject == "native" and "ceiling" in c.name and not c.passed for c in checks)
    bad = tmp_path / "bad.yaml"
    bad.write_text("l1: {floor: {klx: 1}}\n")
    with pytest.raises(Exception, match="unknown L1 metrics"):
        load_policy(bad)


def test_shipped_policies_load() -> None:
    for p in (REPO / "policies").glob("*.yaml"):
        load_policy(p)


def test_unverified_arm_fails_the_gate(tmp_path: Path) -> None:
    arms = [*ARMS[:2], ArmSpec("triton", "triton", Role.CANDIDATE, 0.02, verified=False)]
    _, checks = judge(write_run(tmp_path / "run", arms), Policy())
    (v,) = [c for c in checks if c.subject == "triton" and c.level == "verification"]
    assert not v.passed


def test_an_unfinished_run_fails_the_gate_and_says_how_to_resume(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", ARMS)
    store = RunStore(run_dir)
    store.write_manifest(store.read_manifest().model_copy(update={"finished": None}))
    _, checks = judge(run_dir, Policy(), fresh=True)
    (c,) = [c for c in checks if c.subject == "run"]
    assert not c.passed and "--resume" in c.detail and "models judged: toy" in c.detail
    assert any(c.passed for c in checks if c.subject != "run")  # what finished is still judged


def test_evaluation_is_cached_until_the_records_change(run_dir: Path) -> None:
    first = load_evaluation(run_dir)
    doc = run_dir / "diff.json"
    stamp = doc.stat().st_mtime_ns
    assert load_evaluation(run_dir).key == first.key and doc.stat().st_mtime_ns == stamp
    assert json.loads(doc.read_text())["models"]["toy"]["reference"] == "reference"


def test_report_states_each_paths_distance_relative_to_the_anchors(run_dir: Path) -> None:
    policy = Policy()
    ev, checks = judge(run_dir, policy)
    paths = render(ev, checks, policy, run_dir)
    md = paths["md"].read_text()
    assert "❌ FAIL" in md.splitlines()[2]
    triton = next(line for line in md.splitlines() if "toy · triton:" in line)
    assert "x native's distance to the fp64-RoPE reference, 95% CI [" in triton and triton.endswith("PASS")
    html = paths["html"].read_text()
    assert html.count("<svg") >= 4 and "PASS — PASS" not in html and "FAIL — FAIL" not in html
    report = json.loads(paths["json"].read_text())
    assert {p["label"] for p in report["paths"]} == {"native~aa", "triton", ARMS[4].label}
    assert paths["junit"].read_text().count("<failure") == sum(not c.passed for c in checks)


def test_gate_and_report_never_import_torch(run_dir: Path) -> None:
    code = (
        "import sys\nfrom eval_harness.cli import main\n"
        f"gate = main(['gate', {str(run_dir)!r}])\nreport = main(['report', {str(run_dir)!r}])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'eval_harness.runner' not in sys.modules\nprint('exits', gate, report)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "exits 1 1" in out.stdout  # the planted bug fails both


def test_a_second_report_of_an_unchanged_run_reuses_its_figures(tmp_path: Path) -> None:
    """matplotlib costs seconds; the figures depend only on the evaluation and the policy."""
    run_dir = write_run(tmp_path / "run", ARMS)
    code = (
        "import sys\nfrom eval_harness.cli import main\n"
        f"main(['report', {str(run_dir)!r}])\n"
        "print('matplotlib' in sys.modules)\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        for _ in "ab"
    ]
    assert [r.stdout.split()[-1] for r in runs] == ["True", "False"], runs[1].stderr[-2000:]
    assert "<svg" in (run_dir / "report.html").read_text()
