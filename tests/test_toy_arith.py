"""toy-arith: deterministic generation, disjoint splits, long prompts, and GSM8K-rule scoring."""

from __future__ import annotations

import re

import pytest

from eval_harness.models.tokenizer import load_tokenizer
from eval_harness.suites import ModelOutput, get_suite
from eval_harness.suites import toy_arith as ta


@pytest.fixture(scope="module")
def suite() -> ta.ToyArith:
    s = get_suite("toy-arith")
    assert isinstance(s, ta.ToyArith)
    return s


def _evaluate(expr: str) -> int:
    """The value of a scratchpad step such as `53+57`."""
    a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)", expr).groups()  # type: ignore[union-attr]
    return int(a) + int(b) if op == "+" else int(a) - int(b)


def test_deterministic_and_prefix_stable(suite: ta.ToyArith) -> None:
    first = suite.load(None, "test")
    again = ta.ToyArith().load(None, "test")
    assert [(i.id, i.question, i.reference) for i in first] == [
        (i.id, i.question, i.reference) for i in again
    ]
    assert len(first) == ta.SPLIT_SIZES["test"] >= 200
    assert first[0].id == "toy-arith/test/0"
    assert [i.question for i in suite.load(None, "test", 50)] == [i.question for i in first[:50]]
    assert ta.generate("test", 20, seed=1) != ta.generate("test", 20, seed=0)


def test_splits_are_disjoint() -> None:
    test = ta.generate("test", ta.SPLIT_SIZES["test"])
    train = ta.generate("train", 20000)
    test_keys = {p.key for p in test}
    assert len(test_keys) == len(test)
    assert not test_keys & {p.key for p in train}
    assert all(ta.split_of(p.key) == "test" for p in test)
    with pytest.raises(ValueError):
        ta.generate("validation", 1)


def test_problem_mix_and_solutions_are_right() -> None:
    problems = ta.generate("test", ta.SPLIT_SIZES["test"])
    kinds = {p.kind for p in problems}
    assert kinds == {"add", "sub", "word"}
    for p in problems:
        work, _, final = p.solution.partition(" #### ")
        assert final == str(p.answer) and p.answer >= 0
        for step in work.split(", "):
            expr, _, result = step.partition("=")
            assert _evaluate(expr) == int(result)
            # Fixed widths: two-digit operands, three-digit sums, two-digit differences.
            assert [len(n) for n in re.findall(r"\d+", expr)] == [2, 2]
            assert len(result) == (3 if "+" in expr else 2)
        assert int(work.rpartition("=")[2]) == p.answer


def test_some_prompts_reach_past_position_64(suite: ta.ToyArith) -> None:
    tok = load_tokenizer()
    for n in ta.PREAMBLE_SENTENCES:
        preamble = " ".join(ta.FILLER[:n]) + "\n"
        assert 60 <= len(tok.encode(preamble).ids) <= 150
    items = suite.load(None, "test")
    lengths = [len(tok.encode(item.question).ids) for item in items]
    long = sum(n > 64 for n in lengths)
    assert 0.15 * len(items) < long < 0.5 * len(items)
    assert sum(1 for it in items if it.meta["preamble_sentences"]) == long


def test_prompts(suite: ta.ToyArith) -> None:
    item = suite.load(None, "test", 1)[0]
    chat = suite.prompt(item, "chat-0shot")
    assert chat.messages == [{"role": "user", "content": item.question}]
    completion = suite.prompt(item, "completion-0shot")
    assert completion.text == f"Question: {item.question}\nAnswer:"
    with pytest.raises(ValueError):
        suite.prompt(item, "chat-8shot")


@pytest.mark.parametrize(
    ("text", "reference", "correct"),
    [
        ("53+57=110 #### 110", "110", True),
        ("92-28=64, 64+45=109 #### 109", "109", True),
        ("#### 579", "579", True),
        ("#### 1,060", "1060", True),  # commas are stripped, as in GSM8K
        ("#### 064", "64", False),  # no normalisation of leading zeros, as in lm-eval
        ("53+57=110 #### 111", "110", False),
        ("53+57=110", "110", False),  # no `#### `: strict extraction finds nothing
        ("<think>110</think>#### 110", "110", True),
    ],
)
def test_scoring(suite: ta.ToyArith, text: str, reference: str, correct: bool) -> None:
    item = ta.ToyArith().load(None, "test", 1)[0]
    item = type(item)(item.id, item.suite, item.question, reference, item.meta)
    verdict = suite.score(item, ModelOutput(text))
    assert verdict.correct is correct
    assert suite.score_many([(item, ModelOutput(text))])[0].correct is correct
