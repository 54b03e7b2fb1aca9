"""rope-eval's gsm8k suite and lm-eval's own gsm8k tasks give the same per-document strict-match and
flexible-extract verdicts (and extract the same strings) on the same outputs.

lm-eval's side is its real machinery: each task is built from the YAML installed with lm-eval (pointed
at the local data), its requests are built by the task, the outputs are set as the responses, and the
task's own filter ensembles and `process_results` (exact_match with the YAML's normalisation) score
them, as `lm_eval.evaluator.evaluate` does. The outputs are real GSM8K text: the 1319 reference
rationales of the test split, reshaped in ways that move the answer between the two filters. Real
generations of a served model are cross-checked the same way in tests/test_lm_eval_task.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from eval_harness.suites.base import ModelOutput, get_suite
from eval_harness.suites.data import DataSource
from eval_harness.suites.gsm8k import SPEC

DATA = Path(os.environ.get("ROPE_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(not (DATA / "gsm8k").is_dir(), reason=f"no shared data at {DATA}")
THINK_END = "</think>"

# one style per lm-eval task: the styles sharing a task differ only in their prompts
STYLE_FOR_TASK = {"gsm8k.yaml": "completion-5shot", "gsm8k-cot.yaml": "completion-8shot"}
STYLE_FOR_TASK["gsm8k-cot-llama.yaml"] = "chat-0shot"


def _rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "gsm8k/test.jsonl").read_text().splitlines()]


def _final(answer: str) -> str:
    return answer.split("####")[-1].strip()


def _body(answer: str) -> str:
    """The rationale without its `#### N` line."""
    return answer.rsplit("\n####", 1)[0]


# Each source turns the test rows into one output per document (index i), all real GSM8K text.
SOURCES: dict[str, Callable[[list[dict], int], str]] = {
    "rationale": lambda rows, i: rows[i]["answer"],
    "no-final-line": lambda rows, i: _body(rows[i]["answer"]),
    "the-answer-is": lambda rows, i: (
        f"{_body(rows[i]['answer'])}\nThe answer is {_final(rows[i]['answer'])}."
    ),
    "final-answer-dollars": lambda rows, i: (
        f"{_body(rows[i]['answer'])}\nThe final answer is ${_final(rows[i]['answer'])}"
    ),
    "neighbour": lambda rows, i: rows[(i + 1) % len(rows)]["answer"],
    "unicode-minus": lambda rows, i: rows[i]["answer"].replace("-", "\u2212"),
    "thinking": lambda rows, i: f"<think>{rows[(i + 1) % len(rows)]['answer']}{THINK_END}{rows[i]['answer']}",
}


@pytest.fixture(scope="module")
def items():
    return get_suite("gsm8k").load(DataSource("local", DATA))


def _lm_eval_task(task_file: str):
    """lm-eval's task from its installed YAML, on the local data, with every request built."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    lm_eval = pytest.importorskip("lm_eval")
    from eval_harness.suites.lm_eval_task import build_task

    files = {"test": str(DATA / "gsm8k/test.jsonl"), "train": str(DATA / "gsm8k/train.jsonl")}
    local = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
    task = build_task(str(Path(lm_eval.__file__).parent / "tasks/gsm8k" / task_file), overrides=local)
    task.set_config(key="num_fewshot", value=0)  # prompts do not enter scoring; 0 shots build fast
    task.build_all_requests(limit=None, rank=0, world_size=1)
    return task


def _lm_eval_verdicts(task, outputs: list[str]) -> list[dict[str, tuple[str, bool]]]:
    """Per document: filter name -> (what lm-eval's filter extracted, lm-eval's exact_match)."""
    from lm_eval.models.utils import postprocess_generated_text

    insts = sorted(task.instances, key=lambda inst: inst.doc_id)
    for inst, text in zip(insts, outputs, strict=True):
        # lm-eval with think_end_token="</think>": what rope-eval's suite does with thinking
        inst.resps[:] = [postprocess_generated_text(text, None, THINK_END)]
        inst.filtered_resps.clear()
    task.apply_filters()
    out = []
    for inst in insts:
        verdicts = {}
        for name, filtered in inst.filtered_resps.items():
            verdicts[name] = (filtered, _exact_match(task, inst.doc_id, inst.doc, filtered))
        out.append(verdicts)
    return out


_SEEN: dict[tuple[int, int, str], bool] = {}


def _exact_match(task, doc_id: int, doc: dict, filtered: str) -> bool:
    """lm-eval's process_results, once per (task, document, extracted answer): it is a pure function of
    those, and renders the target's Jinja template on every call (most of this test's time)."""
    key = (id(task), doc_id, filtered)
    if key not in _SEEN:
        _SEEN[key] = bool(task.process_results(doc, [filtered])["exact_match"])
    return _SEEN[key]


@pytest.mark.parametrize("task_file", list(STYLE_FOR_TASK))
def test_same_per_document_verdicts_as_lm_eval(items, task_file):
    style = STYLE_FOR_TASK[task_file]
    assert SPEC["styles"][style]["lm_eval_task"] == task_file.removesuffix(".yaml").replace("-", "_")
    suite, rows, task = get_suite("gsm8k"), _rows(), _lm_eval_task(task_file)
    assert [it.id for it in items] == [f"gsm8k/test/{inst.doc_id}" for inst in task.instances]
    tally = {"docs": 0, "strict correct": 0, "flexible correct": 0, "strict invalid": 0}
    mismatches = []
    for source, make in SOURCES.items():
        outputs = [make(rows, i) for i in range(len(rows))]
        theirs = _lm_eval_verdicts(task, outputs)
        for item, text, lm in zip(items, outputs, theirs, strict=True):
            filters = suite.score(item, ModelOutput(text), style=style).details["filters"]
            ours = {name: (f["extracted"], f["correct"]) for name, f in filters.items()}
            if ours != lm:
                mismatches.append((source, item.id, ours, lm))
            tally["docs"] += 1
            tally["strict correct"] += lm["strict-match"][1]
            tally["flexible correct"] += lm["flexible-extract"][1]
            tally["strict invalid"] += lm["strict-match"][0] == "[invalid]"
    assert not mismatches, f"{len(mismatches)} documents differ, first: {mismatches[:5]}"
    # the corpus exercises every outcome of both filters
    assert tally["docs"] == len(SOURCES) * 1319
    assert 1000 < tally["strict correct"] < tally["docs"] - 1319
    assert tally["flexible correct"] >= 1319 and tally["strict invalid"] >= 1319
