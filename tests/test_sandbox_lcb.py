"""Known-correct solutions (written for this project, eval_harness/sandbox/bench.py) to easy LCB v5
problems of both kinds pass in the sandbox, directly and through the LiveCodeBench suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eval_harness.sandbox import Limits, Status, judge_many
from eval_harness.sandbox.bench import FUNCTIONAL_SOLUTIONS, STDIN_SOLUTIONS, known_jobs, load_problems
from eval_harness.suites.base import ModelOutput, get_suite
from eval_harness.suites.data import DataSource

DATA = Path(os.environ.get("ROPE_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(not (DATA / "livecodebench").is_dir(), reason=f"no shared data at {DATA}")


def test_solutions_cover_easy_problems_of_both_kinds():
    problems = load_problems(DATA)
    assert len(STDIN_SOLUTIONS) >= 10 and len(FUNCTIONAL_SOLUTIONS) >= 10
    for qid in STDIN_SOLUTIONS:
        assert (problems[qid]["platform"], problems[qid]["difficulty"]) == ("atcoder", "easy")
    for qid in FUNCTIONAL_SOLUTIONS:
        assert (problems[qid]["platform"], problems[qid]["difficulty"]) == ("leetcode", "easy")


def test_known_correct_solutions_pass():
    jobs = known_jobs(DATA)
    results = judge_many([j for _, j in jobs], Limits(timeout_s=6), workers=2)
    failed = {qid: r.reason for (qid, _), r in zip(jobs, results, strict=True) if r.status != Status.PASS}
    assert failed == {}
    assert all(r.passed == r.total >= 1 for r in results)
    assert {j.mode for _, j in jobs} == {"stdin", "functional"}


def test_known_correct_solutions_through_the_suite():
    suite = get_suite("livecodebench")
    items = {it.id: it for it in suite.load(DataSource("local", DATA))}
    sols = {**STDIN_SOLUTIONS, **FUNCTIONAL_SOLUTIONS}
    pairs = [
        (items[f"lcb/{q}"], ModelOutput(f"<think>easy</think>\n```python\n{c}```")) for q, c in sols.items()
    ]
    verdicts = suite.score_many(pairs, workers=2)
    assert [v.reason for v in verdicts if not v.correct] == []
    # and a broken variant of each fails
    broken = [
        (it, ModelOutput(out.text.replace("```python\n", "```python\nraise SystemError\n")))
        for it, out in pairs
    ]
    assert not any(v.correct for v in suite.score_many(broken, workers=2))
