"""LiveCodeBench on the real shared data: loading, the QwQ/LCB prompt, code extraction, scoring of
hand-written outputs through the sandbox, hidden-test decoding, and pass@k."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from dataclasses import replace
from math import comb
from pathlib import Path

import pytest

from eval_harness.suites.base import ModelOutput, get_suite
from eval_harness.suites.data import DataSource
from eval_harness.suites.livecodebench import REPORT_NOTE, decode_tests, extract_code
from eval_harness.suites.metrics import avg_at_k, mean_pass_at_k, pass_at_k

DATA = Path(os.environ.get("ROPE_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
LCB = DATA / "livecodebench"
pytestmark = pytest.mark.skipif(not LCB.is_dir(), reason=f"no shared data at {DATA}")


@pytest.fixture(scope="module")
def suite():
    s = get_suite("livecodebench")
    s.limits = replace(s.limits, timeout_s=1.5)  # keeps the infinite-loop case short
    s.items = s.load(DataSource("local", DATA))
    return s


def item(suite, qid):
    return next(it for it in suite.items if it.id == f"lcb/{qid}")


def test_load_real_data(suite):
    items = suite.items
    assert len(items) == 279 and len({it.id for it in items}) == 279
    modes = [it.reference["mode"] for it in items]
    assert modes.count("stdin") == 175 and modes.count("functional") == 104
    assert all(it.reference["func_name"] for it in items if it.reference["mode"] == "functional")
    assert item(suite, "abc365_b").meta["platform"] == "atcoder"
    assert suite.test_scope(items) == "public"
    assert "PUBLIC tests only" in REPORT_NOTE and "higher" in REPORT_NOTE


def test_prompts_reproduce_qwq_exactly(suite):
    qwq = [json.loads(line) for line in (LCB / "raw/qwq_livecodebench_v5.jsonl").read_text().splitlines()]
    by_id = {f"lcb/{r['question_id']}": r["prompt"] for r in qwq}
    for it in suite.items:
        assert suite.prompt(it, "chat-0shot").messages == [{"role": "user", "content": by_id[it.id]}]
    assert suite.prompt(suite.items[0], "completion-0shot").text == by_id[suite.items[0].id]


def test_extract_code():
    assert extract_code("text\n```python\nprint(1)\n```\nmore") == "print(1)"
    two = "```python\nprint('draft')\n```\nbetter:\n```python\nprint('final')\n```"
    assert extract_code(two) == "print('final')"
    assert extract_code("```\nx = 1\n```") == "x = 1"
    assert extract_code("```python\nprint(1)\n```\n```python\nprint(2)") == "print(1)"  # unclosed tail
    assert extract_code("no code here") is None
    assert extract_code("```python\nprint(1)") is None


STDIN_OK = "n = int(input())\na = list(map(int, input().split()))\nprint(a.index(sorted(a)[-2]) + 1)"
STDIN_WRONG = "n = int(input())\na = list(map(int, input().split()))\nprint(a.index(max(a)) + 1)"
FUNC_OK = (
    "class Solution:\n    def finalPositionOfSnake(self, n: int, commands: List[str]) -> int:\n"
    "        d = {'UP': -n, 'DOWN': n, 'LEFT': -1, 'RIGHT': 1}\n        return sum(d[c] for c in commands)"
)
FUNC_WRONG = FUNC_OK.replace("'UP': -n", "'UP': n")
FUNC_CRASH = FUNC_OK.replace("d[c]", "d[c.lower()]")


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


# (question id, output, correct, sandbox verdict or None when nothing reaches the sandbox)
CASES = [
    ("abc365_b", ModelOutput(fenced(STDIN_OK)), True, "pass"),
    ("abc365_b", ModelOutput(fenced(STDIN_WRONG)), False, "wrong_answer"),
    ("abc365_b", ModelOutput(STDIN_OK), False, None),  # badly formatted: no fence
    ("abc365_b", ModelOutput(fenced("while True:\n    pass")), False, "timeout"),
    (
        "abc365_b",
        ModelOutput("<think>first try:\n" + fenced(STDIN_WRONG) + "</think>" + fenced(STDIN_OK)),
        True,
        "pass",
    ),
    (
        "abc365_b",
        ModelOutput("<think>" + fenced(STDIN_OK) + "</think>I give up."),
        False,
        None,
    ),  # code only in thinking
    ("abc365_b", ModelOutput(fenced(STDIN_OK), reasoning_content="think " * 100), True, "pass"),
    (
        "abc365_b",
        ModelOutput("<think>so the code is\n" + fenced(STDIN_OK)[:40], finish_reason="length"),
        False,
        None,
    ),
    (
        "abc365_b",
        ModelOutput("```python\n" + STDIN_OK[:30], finish_reason="length"),
        False,
        None,
    ),  # truncated code
    ("3533", ModelOutput(fenced(FUNC_OK)), True, "pass"),
    ("3533", ModelOutput(fenced(FUNC_WRONG)), False, "wrong_answer"),
    ("3533", ModelOutput(fenced(FUNC_CRASH)), False, "runtime_error"),
    (
        "3533",
        ModelOutput(fenced("def finalPositionOfSnake(n, commands):\n    return 3")),
        False,
        "runtime_error",
    ),
    ("3533", ModelOutput("</think>\n" + fenced(FUNC_OK)), True, "pass"),
    ("3533", ModelOutput(fenced(FUNC_OK)[:-5], finish_reason="length"), False, None),
]


@pytest.fixture(scope="module")
def verdicts(suite):
    """All hand-written cases judged in one parallel batch, as the runner does."""
    return suite.score_many([(item(suite, q), out) for q, out, *_ in CASES], workers=2)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_hand_written_outputs(verdicts, case):
    _, output, correct, sandbox = CASES[case]
    v = verdicts[case]
    assert v.correct is correct, v.reason
    assert v.details["sandbox"] == sandbox, v.reason
    assert v.details["test_scope"] == "public"
    if sandbox is not None:
        assert v.details["isolation"]["mode"] in ("root-ns", "userns", "none")
        assert v.extracted and v.details["total"] >= 1
    else:
        assert v.extracted is None


def test_single_score_and_thinking_stats(suite):
    v = suite.score(
        item(suite, "3533"), ModelOutput(fenced(FUNC_OK), reasoning_content="abc", finish_reason="stop")
    )
    assert v.correct and v.details["passed"] == v.details["total"] == 2
    assert v.details["reasoning_chars"] == 3 and not v.details["empty_answer"]


def test_hidden_tests_are_decoded_and_used(suite, tmp_path):
    """Rows carrying `private_test_cases` (LCB's base64/zlib/pickle form) add hidden tests."""
    rows = [json.loads(line) for line in (LCB / "lcb_v5_2408_2502_public.jsonl").read_text().splitlines()[:1]]
    hidden = [{"input": "3\n1 5 2\n", "output": "3\n", "testtype": "stdin"}]
    rows[0]["private_test_cases"] = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(hidden)))).decode()
    (tmp_path / "livecodebench").mkdir()
    (tmp_path / "livecodebench/lcb_v5_2408_2502_public.jsonl").write_text(json.dumps(rows[0]) + "\n")
    it = suite.load(DataSource("local", tmp_path))[0]
    assert it.reference["n_hidden"] == 1 and len(it.reference["tests"]) == 3
    assert suite.test_scope([it]) == "public+hidden"
    v = suite.score(it, ModelOutput(fenced(STDIN_OK)))
    assert v.correct and v.details["total"] == 3 and v.details["test_scope"] == "public+hidden"


def test_private_tests_refuse_code_in_pickle():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError):
        decode_tests(blob)


def test_pass_at_k_unbiased():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_mean_pass_at_1_equals_avg_at_k():
    flags = {"a": [True, False, False, True], "b": [False] * 4, "c": [True] * 2}
    assert mean_pass_at_k(flags, 1) == pytest.approx(avg_at_k(flags)) == pytest.approx((0.5 + 0 + 1) / 3)
    assert mean_pass_at_k(flags, 2) == pytest.approx((1 - comb(2, 2) / comb(4, 2) + 0 + 1) / 3)
