"""eval_harness.toy.compare: acceptance from per-request histograms, the paired bootstrap on Δ acceptance
length, McNemar on paired verdicts; and the committed toy benchmark still says what its summary claims."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eval_harness.stats import mcnemar_exact
from eval_harness.toy import compare

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = REPO / "benchmarks" / "toy-vllm-2026-11-29.jsonl"
BUGS = "custom:eval_harness.selftest.bugs:"


def _row(i: int, correct: bool, hist: list[int] | None = None, text: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"id": f"toy-arith/test/{i}", "correct": correct, "text": text or str(i)}
    if hist is not None:
        accepted = sum(j * c for j, c in enumerate(hist))
        row["spec"] = {"histogram": hist, "steps": sum(hist), "accepted": accepted}
    return row


def _record(path: str, rows: list[dict[str, Any]], draft: str | None = None) -> dict[str, Any]:
    return {"model": "m", "draft": draft, "style": "chat-0shot", "max_tokens": 64, "path": path, "rows": rows}


def test_acceptance_from_histograms() -> None:
    # 4 verify steps with 0, 1, 2, 3 drafts accepted: length 1 + 6/4; draft i accepted in steps with j > i.
    acc = compare.acceptance([_row(0, True, [1, 1, 0, 0]), _row(1, True, [0, 0, 1, 1])])
    assert acc.length == pytest.approx(2.5)
    assert acc.per_position == [0.75, 0.5, 0.25]
    with pytest.raises(ValueError, match="no speculative verify steps"):
        compare.acceptance([_row(0, True, [0, 0, 0, 0])])


def test_delta_length_ci_is_a_paired_request_bootstrap() -> None:
    rng = np.random.default_rng(1)
    base = [_row(i, True, list(rng.integers(0, 6, 4))) for i in range(40)]
    worse = [
        _row(i, True, [h[0] + h[1], 0, h[2], h[3]])
        for i, h in enumerate(r["spec"]["histogram"] for r in base)
    ]
    delta, (lo, hi) = compare.delta_length_ci(base, worse, n_boot=2000, seed=3)
    assert delta == pytest.approx(compare.acceptance(worse).length - compare.acceptance(base).length)
    assert lo < delta < hi < 0  # every request lost its single-accept steps' draft

    # The same replicates by hand: one index draw per replicate, shared by both arms.
    idx = np.random.default_rng(3).integers(0, 40, size=(2000, 40))
    boot = [
        compare.acceptance([worse[i] for i in row]).length - compare.acceptance([base[i] for i in row]).length
        for row in idx
    ]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert compare.delta_length_ci(base, base, n_boot=500) == (0.0, (0.0, 0.0))


def test_diff_pairs_verdicts_by_problem() -> None:
    base = _record("native", [_row(i, i % 10 != 0) for i in range(50)])  # 45 right
    bug = _record("custom:x:y", [_row(i, i % 10 != 0 and i % 3 != 0, text="z") for i in range(50)])
    d = compare.diff(base, bug)
    assert (d.b, d.c) == (15, 0) and d.p_value == mcnemar_exact(15, 0)
    assert d.accuracy == pytest.approx(30 / 50) and not d.identical_outputs
    assert compare.diff(base, bug, first=10).problems == 10
    shuffled = _record("triton", list(reversed(base["rows"])))
    with pytest.raises(ValueError, match="problems differ"):
        compare.diff(base, shuffled)
    with pytest.raises(ValueError, match="no native arm"):
        compare.compare([bug])


@pytest.mark.skipif(not BENCHMARK.is_file(), reason="benchmark records not committed")
def test_committed_benchmark_meets_the_targets() -> None:
    """What benchmarks/toy-vllm-2026-11-29.md claims, re-derived from the raw records."""
    diffs = {(d.model, d.draft, d.path): d for d in compare.compare(compare.load(BENCHMARK))}
    for model in ("qwen3-toy", "glm4-toy"):
        for path in ("native", "triton"):
            assert diffs[(model, None, path)].accuracy >= 0.9, (model, path)
        assert diffs[(model, None, "triton")].identical_outputs
        for bug in ("key_off_by_one", "style_swapped"):
            d = diffs[(model, None, BUGS + bug)]
            assert d.b > d.c and d.p_value < 0.01, (model, bug, d)
    draft = "qwen3-toy-eagle3"
    for path in ("native", "triton"):
        d = diffs[("qwen3-toy", draft, path)]
        assert d.accuracy >= 0.9 and d.acceptance is not None and d.acceptance.length >= 1.8, (path, d)
    bug = diffs[("qwen3-toy", draft, BUGS + "draft_uses_target_cache")]
    assert bug.identical_outputs  # speculative decoding is lossless: only acceptance moves
    assert bug.delta_ci is not None and bug.delta_ci[1] < 0
