"""AIME 2024 + 2025 on the real shared data: loading, the Qwen3 prompt, the last-\\boxed{} integer rule,
math-verify's verdict on the whole answer otherwise, the opt-in departures, avg@k, and agreement with
lm-eval's aime task scorer."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from eval_harness.suites.aime import AIMEOptions, as_integer, last_boxed, math_verify_verdict, score_answer
from eval_harness.suites.base import ModelOutput, get_suite
from eval_harness.suites.data import DataMissingError, DataSource
from eval_harness.suites.metrics import avg_at_k

DATA = Path(os.environ.get("ROPE_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(not (DATA / "aime").is_dir(), reason=f"no shared data at {DATA}")


@pytest.fixture(scope="module")
def suite():
    s = get_suite("aime")
    s.items = s.load(DataSource("local", DATA))
    return s


def item(suite, item_id):
    return next(it for it in suite.items if it.id == item_id)


def test_load_real_data(suite):
    items = suite.items
    assert len(items) == 60 and len({it.id for it in items}) == 60
    assert items[0].id == "aime/2024_I/1" and items[0].reference == 204
    assert items[30].id == "aime/2025_I/1" and items[30].reference == 70
    assert items[-1].id == "aime/2025_II/15"
    assert all(isinstance(it.reference, int) and 0 <= it.reference <= 999 for it in items)
    assert [it.id for it in suite.load(DataSource("local", DATA), split="2025")] == [
        it.id for it in items[30:]
    ]
    with pytest.raises(DataMissingError, match="unknown split"):
        suite.load(DataSource("local", DATA), split="2023")


def test_answers_agree_with_qwen_copies(suite):
    """PROVENANCE.md: all sources agree; the Qwen2.5-Math copy stores 3-digit strings ("025")."""
    qwq = [json.loads(line) for line in (DATA / "aime/aime25_qwq.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in qwq] == [it.reference for it in suite.items[30:]]
    q24 = [json.loads(line) for line in (DATA / "aime/aime24_qwen25math.jsonl").read_text().splitlines()]
    assert sorted(as_integer(r["answer"]) for r in q24) == sorted(it.reference for it in suite.items[:30])


def test_qwen3_prompt_matches_qwq_data(suite):
    """QwQ's AIME 2025 prompts are problem + "\\n" + the Qwen instruction; ours must be the same shape."""
    qwq = [json.loads(line) for line in (DATA / "aime/aime25_qwq.jsonl").read_text().splitlines()]
    suffix = "\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert all(r["prompt"].endswith(suffix) for r in qwq)
    p = suite.prompt(suite.items[30], "chat-0shot")
    assert p.messages == [{"role": "user", "content": suite.items[30].question + suffix}]
    assert suite.prompt(suite.items[30], "completion-0shot").text == suite.items[30].question + suffix + "\n"


def test_last_boxed_nested():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{a}{\sqrt{b}}} end") == r"\frac{a}{\sqrt{b}}"
    assert last_boxed(r"\boxed{ {1,2} }") == "{1,2}"
    assert last_boxed(r"\boxed {42}") == "42"
    assert last_boxed(r"\boxed{5} then \boxed{6") is None  # truncated last box: no answer (as lm-eval)
    assert last_boxed("no box") is None
    # \fbox and the brace-less `\boxed 70` are not the documented rule: math-verify decides those
    assert last_boxed(r"\fbox{42}") is None and last_boxed(r"\fbox{42}", fbox=True) == "42"
    assert last_boxed(r"so $\boxed 70$.") is None


def test_integer_rule_is_ascii_unless_switched_on():
    assert as_integer("070") == 70 and as_integer("1,000") is None and as_integer("70.0") is None
    assert as_integer("\u0667\u0660") is None  # Arabic-Indic 70
    assert as_integer("\u0667\u0660", unicode_digits=True) == 70
    assert as_integer("\uff17\uff10", unicode_digits=True) == 70  # full-width 70


# (output, correct, extracted) for problem aime/2025_I/1 (answer 70)
CASES = [
    (ModelOutput("Bases: 21 and 49, sum 70.\n\\boxed{70}"), True, "70"),
    (ModelOutput("\\boxed{070}"), True, "070"),
    (ModelOutput("so the answer is $\\boxed{\\text{70}}$."), True, "\\text{70}"),
    (ModelOutput("\\boxed{\\frac{140}{2}}"), True, "\\frac{140}{2}"),  # math-verify fallback
    (ModelOutput("\\boxed{71}"), False, "71"),
    (ModelOutput("\\boxed{70.5}"), False, "70.5"),
    (ModelOutput("\\boxed{2\\sqrt{2}}"), False, "2\\sqrt{2}"),
    (ModelOutput("The answer is 70."), True, "70"),  # no box: math-verify's verdict on the whole answer
    (ModelOutput("The answer is 63."), False, "63"),
    (ModelOutput("\\boxed{70} wait, no: \\boxed{63}"), False, "63"),  # last box wins
    (ModelOutput("<think>maybe \\boxed{70}</think>The answer is \\boxed{63}"), False, "63"),
    (ModelOutput("<think>21+49</think>\n\\boxed{70}"), True, "70"),
    (ModelOutput("\\boxed{70}", reasoning_content="21 + 49 = 70"), True, "70"),
    (ModelOutput("21+49=70 </think> **Answer:** \\boxed{70}"), True, "70"),
    (ModelOutput("<think>so it is \\boxed{70", finish_reason="length"), False, None),  # truncated thinking
    (ModelOutput("The sum is \\boxed{7", finish_reason="length"), False, None),  # truncated answer
]


@pytest.mark.parametrize("output,correct,extracted", CASES)
def test_hand_written_outputs(suite, output, correct, extracted):
    v = suite.score(item(suite, "aime/2025_I/1"), output)
    assert (v.correct, v.extracted) == (correct, extracted), v.reason
    assert v.reason


def test_thinking_records(suite):
    v = suite.score(item(suite, "aime/2025_I/1"), ModelOutput("<think>long", finish_reason="length"))
    assert (
        v.details["unfinished_thinking"]
        and v.details["empty_answer"]
        and v.details["finish_reason"] == "length"
    )
    v = suite.score(item(suite, "aime/2025_I/1"), ModelOutput("\\boxed{70}", reasoning_content="x" * 50))
    assert v.details["reasoning_chars"] == 50 and not v.details["empty_answer"]


def test_avg_at_k(suite):
    a, b = item(suite, "aime/2024_I/1"), item(suite, "aime/2025_I/1")
    samples = {
        a.id: [ModelOutput(f"\\boxed{{{x}}}") for x in (204, 204, 1, 204)],
        b.id: [ModelOutput(f"\\boxed{{{x}}}") for x in (70, 2, 3, 4)],
    }
    flags = {i: [suite.score(item(suite, i), o).correct for o in outs] for i, outs in samples.items()}
    assert avg_at_k(flags) == pytest.approx((3 / 4 + 1 / 4) / 2)


def _lm_eval_aime():
    path = Path(pytest.importorskip("lm_eval").__file__).parent / "tasks" / "aime" / "utils.py"
    spec = importlib.util.spec_from_file_location("lm_eval_aime_utils", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


AGREE = [
    "\\boxed{70}",
    "so $\\boxed{70}$",
    "\\boxed{71}",
    "first \\boxed{3} then \\boxed{70}",
    "\\boxed{70} then \\boxed{3}",
    "\\boxed{\\frac{1}{2}}",
    "\\boxed{ 70 }",
    "\\boxed{2\\sqrt{2}}",
    "\\boxed{x = 70}",
    "\\boxed{7",
]


@pytest.mark.parametrize("text", AGREE)
def test_agrees_with_lm_eval_aime_scorer(suite, text):
    """lm-eval's aime task (tasks/aime/utils.py process_results) gives the same score on the same
    output whenever it extracts a box."""
    lm = _lm_eval_aime()
    for it in (item(suite, "aime/2025_I/1"), item(suite, "aime/2024_I/1")):
        theirs = lm.process_results({"Answer": it.reference}, [text])["exact_match"]
        assert int(score_answer(text, it.reference).correct) == theirs, text


def test_known_differences_from_lm_eval():
    """Where we differ from lm-eval's aime scorer: the integer rule accepts zero padding, math-verify
    accepts expressions with the same value; lm-eval compares normalised strings."""
    lm = _lm_eval_aime()
    assert (
        score_answer("\\boxed{070}", 70).correct
        and not lm.process_results({"Answer": 70}, ["\\boxed{070}"])["exact_match"]
    )
    assert score_answer("\\boxed{\\frac{140}{2}}", 70).correct
    assert not lm.process_results({"Answer": 70}, ["\\boxed{\\frac{140}{2}}"])["exact_match"]
    assert score_answer("\\boxed{\\text{70}}", 70).correct
    assert not lm.process_results({"Answer": 70}, ["\\boxed{\\text{70}}"])["exact_match"]


# Answers with no integer in the last box: the verdict must be exactly math-verify's on the whole text.
MATH_VERIFY_ONLY = [
    "The answer is 70.",
    "so $\\boxed 70$.",
    "\\boxed{\\text{70}}",
    "\\boxed{70^\\circ}",
    "\\boxed{1,000}",
    "\\boxed{70.0}",
    "\\boxed{x = 70}",
    "\\boxed{70} wait, \\boxed{x=63}",
    "\\boxed{5} then \\boxed{6",
    "\\fbox{70}",
    "\\boxed{\u0667\u0660}",
    "",
]


@pytest.mark.parametrize("text", MATH_VERIFY_ONLY)
def test_default_verdict_is_math_verify_on_the_whole_answer(text):
    from math_verify import parse, verify

    for ref in (70, 1000):
        v = score_answer(text, ref)
        assert v.details == {"departures": [], "method": "math-verify"}
        assert v.correct == bool(verify(parse(f"${ref}$"), parse(text))), (text, ref)
        assert (v.correct, v.extracted) == math_verify_verdict(text, ref)


def test_departures_are_opt_in_and_named(suite):
    it = item(suite, "aime/2025_I/1")
    for text in ("\\fbox{70}", "\\boxed{\u0667\u0660}", "\\boxed{\uff17\uff10}"):
        assert not suite.score(it, ModelOutput(text)).correct
    both = get_suite("aime", {"fbox": True, "unicode_digits": True})
    assert both.departures == ("fbox", "unicode-digits")
    for text in ("\\fbox{70}", "\\boxed{\u0667\u0660}", "\\fbox{\uff17\uff10}"):
        v = both.score(it, ModelOutput(text))
        assert v.correct and v.details["method"] == "integer"
        assert v.details["departures"] == ["fbox", "unicode-digits"]
    assert suite.departures == () and suite.score(it, ModelOutput("\\boxed{70}")).details["departures"] == []
    assert score_answer("\\fbox{70}", 70, AIMEOptions(fbox=True)).details["departures"] == ["fbox"]
    with pytest.raises(ValueError, match="unknown options"):
        get_suite("aime", {"boxed_anywhere": True})
