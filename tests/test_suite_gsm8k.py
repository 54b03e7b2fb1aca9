"""GSM8K on the real shared data: loading, prompts, and scoring checked against lm-eval's own filter
classes and task machinery (lm-eval 0.4.13 installed in the venv)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from eval_harness.suites.base import ModelOutput, get_suite
from eval_harness.suites.data import DataSource
from eval_harness.suites.gsm8k import FLEXIBLE, SPEC, Extractor, _strict_for, score_text

DATA = Path(os.environ.get("ROPE_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(not (DATA / "gsm8k").is_dir(), reason=f"no shared data at {DATA}")


def lm_eval_tasks() -> Path:
    """lm-eval's installed gsm8k task folder (the comparison tests skip without lm-eval)."""
    return Path(pytest.importorskip("lm_eval").__file__).parent / "tasks" / "gsm8k"


@pytest.fixture(scope="module")
def suite():
    s = get_suite("gsm8k")
    s.items = s.load(DataSource("local", DATA))
    return s


def test_load_real_data(suite):
    items = suite.items
    assert len(items) == 1319
    assert items[0].id == "gsm8k/test/0" and items[0].reference == "18"
    assert len({it.id for it in items}) == 1319
    assert sum("," in it.reference for it in items) == 14  # PROVENANCE.md: 14 finals with commas
    assert sorted(it.reference for it in items if it.reference.startswith("-")) == ["-10", "-3"]
    assert len(suite.load(DataSource("local", DATA), limit=5)) == 5


# ---- hand-written outputs: correct, wrong, badly formatted, thinking, truncated --------------------
Q0 = "gsm8k/test/0"  # Janet's ducks: 18


def _by_id(suite, item_id):
    return next(it for it in suite.items if it.id == item_id)


CASES = [
    # (style, output, strict correct, flexible correct, extracted)
    ("chat-0shot", ModelOutput("16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The final answer is 18"), True, True, "18"),
    ("chat-0shot", ModelOutput("She makes $18.\nThe final answer is $18."), True, True, "$18."),
    ("chat-0shot", ModelOutput("The final answer is 20"), False, False, "20"),
    ("chat-0shot", ModelOutput("So she earns 18 dollars a day."), False, True, None),  # badly formatted
    ("chat-0shot", ModelOutput("I don't know."), False, False, None),
    (
        "chat-0shot",
        ModelOutput("<think>9 eggs at $2 is 20? no, 18</think>The final answer is 18"),
        True,
        True,
        "18",
    ),
    ("chat-0shot", ModelOutput("The final answer is 18", reasoning_content="9*2=18"), True, True, "18"),
    ("chat-0shot", ModelOutput("9*2 = 18 so</think>\nThe final answer is 18"), True, True, "18"),
    # thinking mentions 18 but the answer says 20: only the answer counts
    ("chat-0shot", ModelOutput("<think>it is 18</think>The final answer is 20"), False, False, "20"),
    # truncated inside thinking: lm-eval scores the whole text, so flexible-extract finds the 18
    (
        "chat-0shot",
        ModelOutput("<think>16-3-4 = 9, 9*2 = 18, so", finish_reason="length"),
        False,
        True,
        None,
    ),
    # truncated answer
    ("chat-0shot", ModelOutput("16 - 3 - 4 = 9 eggs. 9 * 2 =", finish_reason="length"), False, False, None),
    (
        "completion-5shot",
        ModelOutput(" She sells 9 eggs for 9*2=18 dollars.\n#### 18\n\nQuestion:"),
        True,
        True,
        "18",
    ),
    ("completion-5shot", ModelOutput(" 16-3-4=9 and 9*2=18\n#### 18.00"), False, False, "18.00"),
    ("completion-8shot", ModelOutput(" 16 - 3 - 4 = 9. 9 * 2 = 18. The answer is 18."), True, True, "18"),
    ("completion-8shot", ModelOutput(" The answer is 1,8."), True, True, "1,8"),  # lm-eval strips commas
]


@pytest.mark.parametrize("style,output,strict,flexible,extracted", CASES)
def test_hand_written_outputs(suite, style, output, strict, flexible, extracted):
    v = suite.score(_by_id(suite, Q0), output, style=style)
    assert v.details["filters"]["strict-match"]["correct"] is strict
    assert v.details["filters"]["flexible-extract"]["correct"] is flexible
    assert v.correct is strict  # primary filter: strict-match
    assert v.extracted == extracted
    assert v.reason


def test_thinking_records(suite):
    v = suite.score(_by_id(suite, Q0), ModelOutput("<think>abc", finish_reason="length"))
    assert v.details["empty_answer"] and v.details["unfinished_thinking"]
    assert v.details["reasoning_chars"] == 3 and v.details["finish_reason"] == "length"


def test_unclosed_think_no_answer_is_opt_in(suite):
    cut = ModelOutput("<think>9*2 = 18. The final answer is 18", finish_reason="length")
    assert suite.score(_by_id(suite, Q0), cut).correct  # lm-eval scores the unfinished thinking
    strict = get_suite("gsm8k", {"unclosed_think_no_answer": True})
    v = strict.score(_by_id(suite, Q0), cut)
    assert not v.correct and v.reason == "thinking never finished: no answer"
    assert v.details["departures"] == ["unclosed-think-no-answer"]


def test_commas_and_signs(suite):
    big = next(it for it in suite.items if it.reference == "1,450,000")  # a reference with commas
    neg = next(it for it in suite.items if it.reference == "-10")
    assert suite.score(big, ModelOutput("#### 1450000"), style="completion-5shot").correct
    assert suite.score(big, ModelOutput("#### 1,450,000"), style="completion-5shot").correct
    assert suite.score(neg, ModelOutput("#### -10"), style="completion-5shot").correct
    assert not suite.score(neg, ModelOutput("#### 10"), style="completion-5shot").correct


@pytest.mark.parametrize("minus", ["\u2212", "\u2012", "\u2013"])
def test_unicode_minus_is_opt_in(suite, minus):
    """lm-eval's regexes know only ASCII '-': "#### \u221210" is [invalid] there, and here by default."""
    neg = next(it for it in suite.items if it.reference == "-10")
    out = ModelOutput(f"#### {minus}10")
    v = suite.score(neg, out, style="completion-5shot")
    assert not v.correct and v.details["departures"] == [] and suite.departures == ()
    assert _lm_eval_scores("gsm8k.yaml", out.text, neg.meta["solution"]) == {
        "strict-match": False,
        "flexible-extract": False,
    }
    ext = get_suite("gsm8k", {"unicode_minus": True})
    v = ext.score(neg, out, style="completion-5shot")
    assert v.correct and v.details["filters"]["flexible-extract"]["correct"]
    assert ext.departures == ("unicode-minus",) and v.details["departures"] == ["unicode-minus"]
    assert ext.score(neg, ModelOutput(f"The final answer is {minus}10")).correct


def test_unknown_option_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown options \['unicode_digits'\]; known: .*unicode_minus"):
        get_suite("gsm8k", {"unicode_digits": True})
    with pytest.raises(ValueError, match="takes no options"):
        get_suite("livecodebench", {"unicode_minus": True})


def test_score_text_is_reusable():
    """The toy-arith suite reuses this on `#### N` answers."""
    assert score_text("2 + 3 = 5\n#### 5", "5").correct
    assert score_text("#### 5", "The sum is 2+3=5\n#### 5").correct  # full-solution reference
    v = score_text("five", "5")
    assert not v.correct and v.extracted is None and "format" in v.reason


# ---- prompts ------------------------------------------------------------------------------------
def test_prompt_shapes(suite):
    it = suite.items[0]
    chat = suite.prompt(it, "chat-0shot")
    assert chat.text is None and len(chat.messages) == 1 and it.question in chat.messages[0]["content"]
    multi = suite.prompt(it, "chat-8shot")
    assert [m["role"] for m in multi.messages] == ["user", "assistant"] * 8 + ["user"]
    five = suite.prompt(it, "completion-5shot")
    assert five.messages is None and five.text.count("Question: ") == 6 and five.text.endswith("Answer:")
    eight = suite.prompt(it, "completion-8shot")
    assert eight.text.count("The answer is") == 8 and eight.text.endswith("\nA:")
    with pytest.raises(ValueError):
        suite.prompt(it, "chat-3shot")


def _lm_eval_task(tmp_path_factory, base: str, name: str, extra: dict | None = None):
    """Build lm-eval's own task from its installed YAML, pointed at the local data files."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    d = tmp_path_factory.mktemp(name)
    cfg = {
        "include": str(lm_eval_tasks() / base),
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {"test": str(DATA / "gsm8k/test.jsonl"), "train": str(DATA / "gsm8k/train.jsonl")},
            "cache_dir": str(d / "hf"),  # keep the Arrow cache out of ~/.cache
        },
        **(extra or {}),
    }
    (d / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    tm = TaskManager(include_path=str(d), include_defaults=False)
    return tm.load([name])["tasks"][name]


def test_prompts_equal_lm_eval(suite, tmp_path_factory):
    """Our prompts are byte-identical to lm-eval's own rendering of its task YAMLs."""
    docs = [json.loads(line) for line in (DATA / "gsm8k/test.jsonl").read_text().splitlines()[:3]]
    cot = _lm_eval_task(tmp_path_factory, "gsm8k-cot.yaml", "gsm8k_cot_local")
    # lm-eval's plain gsm8k samples exemplars at random; with its first_n sampler it must equal ours
    plain = _lm_eval_task(
        tmp_path_factory, "gsm8k.yaml", "gsm8k_local", {"fewshot_config": {"sampler": "first_n"}}
    )
    llama = _lm_eval_task(tmp_path_factory, "gsm8k-cot-llama.yaml", "gsm8k_llama_local")
    as_json = lambda msgs, **_: json.dumps(msgs)
    for item, doc in zip(suite.items[:3], docs, strict=True):
        assert suite.prompt(item, "completion-8shot").text == cot.fewshot_context(doc, num_fewshot=8)
        assert suite.prompt(item, "completion-5shot").text == plain.fewshot_context(doc, num_fewshot=5)
        assert suite.prompt(item, "completion-0shot").text == plain.fewshot_context(doc, num_fewshot=0)
        for style, n in (("chat-0shot", 0), ("chat-8shot", 8)):
            theirs = llama.fewshot_context(
                doc, num_fewshot=n, apply_chat_template=True, fewshot_as_multiturn=True, chat_template=as_json
            )
            assert suite.prompt(item, style).messages == json.loads(theirs)


# ---- equal scores with lm-eval's filters on the same outputs ---------------------------------------
def _lm_eval_yaml(name: str) -> dict:
    return yaml.safe_load((lm_eval_tasks() / name).read_text())


LM_EVAL_FILE = {
    "gsm8k": "gsm8k.yaml",
    "gsm8k_cot": "gsm8k-cot.yaml",
    "gsm8k_cot_llama": "gsm8k-cot-llama.yaml",
}


def _lm_eval_scores(task_file: str, output: str, reference: str) -> dict[str, bool]:
    """lm-eval's RegexFilter -> TakeFirstFilter pipelines and exact_match metric, built from the
    installed task YAML."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter

    cfg = _lm_eval_yaml(task_file)
    metric = cfg["metric_list"][0]
    scores = {}
    for flt in cfg["filter_list"]:
        regex_kwargs = flt["filter"][0].copy()
        assert regex_kwargs.pop("function") == "regex"
        extracted = list(TakeFirstFilter().apply(RegexFilter(**regex_kwargs).apply([[output]], [{}]), [{}]))[
            0
        ]
        em = exact_match_hf_evaluate(
            predictions=[extracted],
            references=[reference],
            regexes_to_ignore=metric["regexes_to_ignore"],
            ignore_case=metric["ignore_case"],
            ignore_punctuation=metric["ignore_punctuation"],
        )["exact_match"]
        scores[flt["name"]] = bool(em)
    return scores


def test_regexes_match_lm_eval_yaml():
    for style, st_cfg in SPEC["styles"].items():
        cfg = _lm_eval_yaml(LM_EVAL_FILE[st_cfg["lm_eval_task"]])
        filters = {f["name"]: f["filter"][0] for f in cfg["filter_list"]}
        assert filters["strict-match"]["regex_pattern"] == st_cfg["strict"]["regex"], style
        assert filters["strict-match"].get("group_select", 0) == st_cfg["strict"]["group_select"], style
        assert filters["flexible-extract"]["regex_pattern"] == SPEC["flexible-extract"]["regex"]
        assert filters["flexible-extract"]["group_select"] == SPEC["flexible-extract"]["group_select"]
        assert cfg["metric_list"][0]["regexes_to_ignore"] == SPEC["exact_match"]["regexes_to_ignore"]


def _corpus(suite) -> list[tuple[str, str]]:
    """(output, full reference solution) pairs: hand-written variants plus real train solutions used as
    outputs for their own and for a neighbouring question."""
    items = suite.items
    outs = [o.text for _, o, *_ in CASES] + [
        "The final answer is -10",
        "The answer is -3.",
        "#### -3",
        "costs $1,450,000 in total. The final answer is $1,450,000",
        "The answer is 1,450,000.",
        "Answer: 5.5 then 6.",
        "1 2 3 4",
        "",
        "The final answer is 18.0",
        "#### 18 and #### 19",
        "The final answer is 7 apples",
    ]
    pairs = [(o, it.meta["solution"]) for o in outs for it in items[:3] + [items[25], items[1200]]]
    train = [json.loads(line) for line in (DATA / "gsm8k/train.jsonl").read_text().splitlines()[:40]]
    pairs += [(r["answer"], r["answer"]) for r in train]
    pairs += [(a["answer"], b["answer"]) for a, b in zip(train, train[1:], strict=False)]
    refs = {it.reference: it for it in items}
    pairs += [(f"The final answer is {r}", refs[r].meta["solution"]) for r in ("-10", "-3", "1,450,000")]
    return pairs


@pytest.mark.parametrize("style", list(SPEC["styles"]))
def test_scores_equal_lm_eval_filters(suite, style):
    task_file = LM_EVAL_FILE[SPEC["styles"][style]["lm_eval_task"]]
    strict = _strict_for(style)
    n_correct = 0
    for output, reference in _corpus(suite):
        theirs = _lm_eval_scores(task_file, output, reference)
        ours = score_text(output, reference, strict).details["filters"]
        assert {k: v["correct"] for k, v in ours.items()} == theirs, (style, output, reference)
        n_correct += theirs["strict-match"] + theirs["flexible-extract"]
    assert n_correct > 20  # the corpus exercises both outcomes


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789-.,$ #Theanswrifl\n", max_size=40))
def test_extractors_equal_lm_eval_regex_filter(text):
    RegexFilter = pytest.importorskip("lm_eval.filters.extraction").RegexFilter

    for ours in (FLEXIBLE, _strict_for("completion-5shot"), _strict_for("chat-0shot")):
        theirs = RegexFilter(regex_pattern=ours.regex, group_select=ours.group_select).apply([[text]], [{}])[
            0
        ][0]
        assert Extractor(ours.regex, ours.group_select)(text) == theirs
