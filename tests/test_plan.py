"""`rope-eval plan`: the exact McNemar power behind toy-arith's sizing, checked against brute-force
enumeration and a seeded simulation, and the CLI's report for a toy-arith config. No vLLM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from eval_harness.plan import (
    ALPHA,
    POWER,
    DropModel,
    mcnemar_critical,
    mcnemar_power,
    mde_drop,
    power_curve,
    problems_for_power,
)
from eval_harness.stats import mcnemar_exact
from eval_harness.suites import get_suite
from eval_harness.suites import toy_arith as ta

REPO = Path(__file__).resolve().parents[1]


def _rejects(b: int, c: int, alpha: float = ALPHA) -> bool:
    """The test as the harness runs it (eval_harness.stats), in the drop's direction."""
    return b > c and mcnemar_exact(b, c) <= alpha


def _brute_force_power(n: int, model: DropModel) -> float:
    """Sum the trinomial (b, c, concordant) probabilities of every outcome the test rejects."""
    dist = st.multinomial(n, [model.p10, model.p01, 1 - model.p10 - model.p01])
    return sum(
        float(dist.pmf([b, c, n - b - c])) for b in range(n + 1) for c in range(n + 1 - b) if _rejects(b, c)
    )


def test_critical_values_match_the_exact_test() -> None:
    crit = mcnemar_critical(np.arange(121))
    for m in range(121):
        for c in range(m // 2 + 1):
            assert (c <= crit[m]) == (mcnemar_exact(m - c, c) <= ALPHA), (m, c)
    assert crit[5] == -1 and crit[6] == 0  # 2/2^6 = 0.031 is the first p-value under 0.05


@pytest.mark.parametrize(
    ("n", "model"),
    [
        (12, DropModel(0.95, drop=0.3, background=0.02)),
        (30, DropModel(0.95)),
        (45, DropModel(0.8, drop=0.1, background=0.2)),
        (40, DropModel(0.95, background=0.0)),
    ],
)
def test_power_matches_brute_force(n: int, model: DropModel) -> None:
    assert mcnemar_power(n, model) == pytest.approx(_brute_force_power(n, model), abs=1e-12)


def test_power_matches_a_seeded_simulation() -> None:
    model, n, trials = DropModel(ta.BASELINE_ACCURACY), 119, 40_000
    counts = np.random.default_rng(0).multinomial(
        n, [model.p10, model.p01, 1 - model.p10 - model.p01], trials
    )
    b, c = counts[:, 0], counts[:, 1]
    p = np.minimum(1.0, 2 * st.binom.cdf(np.minimum(b, c), b + c, 0.5))
    simulated = float(np.mean((b > c) & (p <= ALPHA)))
    exact = mcnemar_power(n, model)
    assert abs(simulated - exact) < 4 * np.sqrt(exact * (1 - exact) / trials)  # 4 standard errors
    assert 0.9 <= exact < 0.92


def test_problems_for_power_is_where_power_stays_above() -> None:
    model = DropModel(ta.BASELINE_ACCURACY)
    n = problems_for_power(model)
    assert n == 119  # the figure quoted in suites/toy_arith.py
    assert mcnemar_power(n - 1, model) < POWER
    assert all(mcnemar_power(k, model) >= POWER for k in range(n, n + 200))
    # More background discordance dilutes the drop's flips; a smaller drop needs far more problems.
    assert problems_for_power(DropModel(0.95, background=0.05)) > n
    assert problems_for_power(DropModel(0.95, drop=0.05)) > 2 * n


def test_toy_arith_default_limits_follow_the_sizing() -> None:
    limits, base = ta.DEFAULT_LIMITS, ta.BASELINE_ACCURACY
    assert limits["smoke"] is not None and limits["smoke"] >= problems_for_power(DropModel(base))
    assert limits["nightly"] is not None and limits["nightly"] >= problems_for_power(
        DropModel(base, drop=0.05)
    )
    assert limits["release"] is None  # the whole split
    assert ta.SPLIT_SIZES["test"] >= problems_for_power(DropModel(base, drop=0.05, background=0.05))
    assert get_suite("toy-arith").baseline_accuracy == base  # type: ignore[attr-defined]


def test_drop_model_rejects_impossible_flips() -> None:
    with pytest.raises(ValueError, match="exceed"):
        DropModel(0.99, drop=0.05, background=0.04)  # 2% wrong->right, but only 1% is wrong
    with pytest.raises(ValueError, match="drop <= baseline"):
        DropModel(0.05, drop=0.1)


def test_power_curve_is_the_pointwise_power() -> None:
    model = DropModel(0.9, drop=0.08, background=0.04)
    curve = power_curve(60, model)
    assert [round(x, 12) for x in curve[[0, 9, 29, 59]]] == [
        round(mcnemar_power(n, model), 12) for n in (1, 10, 30, 60)
    ]
    assert curve[0] == 0.0  # one problem can never reach p <= 0.05


def test_mde_drop_is_the_smallest_detectable_drop() -> None:
    mde = mde_drop(120, ta.BASELINE_ACCURACY)
    assert mcnemar_power(120, DropModel(ta.BASELINE_ACCURACY, mde)) >= 0.8
    assert mcnemar_power(120, DropModel(ta.BASELINE_ACCURACY, mde - 0.002)) < 0.8
    assert mde_drop(5, ta.BASELINE_ACCURACY) == float("inf")  # 5 pairs never reach p <= 0.05


def test_cli_plan_sizes_toy_arith(tmp_path: Path) -> None:
    config = tmp_path / "toy.yaml"
    smoke = ta.DEFAULT_LIMITS["smoke"]
    config.write_text(
        "name: toy\n"
        "paths: [native, triton]\n"
        "models:\n"
        "  - {name: qwen3-toy, path: builtin:qwen3-toy}\n"
        "suites:\n"
        "  toy-arith:\n"
        "    style: chat-0shot\n"
        "    sampling: {max_tokens: 64}\n"
        f"    limit: {{smoke: {smoke}, nightly: {ta.DEFAULT_LIMITS['nightly']}, release: null}}\n"
    )
    cli = [sys.executable, "-m", "eval_harness.cli", "plan", str(config), "--profile", "smoke"]
    out = subprocess.run(cli, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("qwen3-toy"))
    assert row.split()[:3] == ["qwen3-toy", "toy-arith", str(smoke)]
    assert "8.3%  McNemar exact, drop from 95%, 1% flips each way" in row
    assert "toy-arith: McNemar exact (two-sided, alpha 0.05) needs 119 problems for 90% power" in out.stdout
    assert f"this profile's {smoke} give {mcnemar_power(smoke, DropModel(0.95)):.1%}" in out.stdout
