"""lm-eval tasks as suites (eval_harness.suites.lm_eval_task): real lm-eval 0.4.13, the real GSM8K data,
and the trained toy model served through real vLLM. Clear errors for a bad task and a dead server come
first and need no server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from eval_harness.engine.server import free_port
from eval_harness.suites.base import ModelOutput, get_suite
from eval_harness.suites.data import ENV_DATA, DataSource
from eval_harness.suites.lm_eval_task import (
    GSM8K_LOCAL,
    LmEvalServerError,
    LmEvalTaskError,
    TaskRun,
    resolve_task,
    run_task,
    server_root,
    task_of_suite,
)

DATA = Path(os.environ.get("ROPE_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(not (DATA / "gsm8k").is_dir(), reason=f"no shared data at {DATA}")
METRICS = {"exact_match,strict-match", "exact_match,flexible-extract"}
LOCAL_DATA = {
    "dataset_path": "json",
    "dataset_name": None,
    "dataset_kwargs": {
        "data_files": {"test": str(DATA / "gsm8k/test.jsonl"), "train": str(DATA / "gsm8k/train.jsonl")}
    },
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens on a port just handed out and closed


def _rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "gsm8k/test.jsonl").read_text().splitlines()]


# ---- the task (no server) --------------------------------------------------------------------------
def test_local_yaml_is_lm_evals_gsm8k():
    """gsm8k_local.yaml differs from the gsm8k.yaml installed with lm-eval only in name and data."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    theirs = load_yaml(Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml")
    ours = load_yaml(GSM8K_LOCAL)
    named = {"task", "tag", "dataset_path", "dataset_name", "dataset_kwargs"}
    assert {k: v for k, v in ours.items() if k not in named} == {
        k: v for k, v in theirs.items() if k not in named
    }
    assert ours["task"] == "gsm8k_local" and ours["dataset_path"] == "json"


def test_data_dir_fills_the_yaml(monkeypatch):
    cfg, _, _ = resolve_task(str(GSM8K_LOCAL), data_dir=DATA)
    assert cfg["dataset_kwargs"]["data_files"]["test"] == str(DATA.resolve() / "gsm8k/test.jsonl")
    monkeypatch.setenv(ENV_DATA, str(DATA))
    assert resolve_task(str(GSM8K_LOCAL))[0]["dataset_kwargs"] == cfg["dataset_kwargs"]
    monkeypatch.delenv(ENV_DATA)
    with pytest.raises(LmEvalTaskError, match=rf"uses \${{{ENV_DATA}}}, which is not set \(pass data_dir"):
        resolve_task(str(GSM8K_LOCAL))


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return str(path)


BAD_YAML = {
    "missing": (None, r"no lm-eval task YAML at .*nowhere\.yaml"),
    "syntax": ("task: [gsm8k\n", r"lm-eval cannot read the task YAML .*task\.yaml: "),
    "no task": ("dataset_path: json\n", r"does not define one task"),
    "missing data": (
        GSM8K_LOCAL.read_text().replace("${ROPE_EVAL_DATA}/gsm8k/test.jsonl", "/nonexistent/test.jsonl"),
        r"lm-eval cannot build .*task\.yaml: .*nonexistent",
    ),
    "unknown filter": (
        GSM8K_LOCAL.read_text().replace('function: "take_first"', 'function: "take_fist"', 1),
        r"lm-eval cannot build .*take_fist",
    ),
}


@pytest.mark.parametrize("case", list(BAD_YAML))
def test_bad_yaml_is_a_clear_error(tmp_path, case):
    text, message = BAD_YAML[case]
    task = str(tmp_path / "nowhere.yaml") if text is None else _yaml(tmp_path, text)
    t0 = time.monotonic()
    with pytest.raises(LmEvalTaskError, match=message):
        run_task(task, dead_url(), "qwen3-toy", data_dir=DATA)  # the task is checked before the server
    assert time.monotonic() - t0 < 60


def test_repeats_are_refused():
    with pytest.raises(LmEvalTaskError, match=r"repeats=4\. lm-eval sends the 4 copies with one seed"):
        run_task(str(GSM8K_LOCAL), dead_url(), "qwen3-toy", data_dir=DATA, overrides={"repeats": 4})


def test_unknown_task_name_is_a_clear_error():
    """Indexes lm-eval's ~15k task YAMLs once (tens of seconds on 2 cores); later tests reuse it."""
    with pytest.raises(LmEvalTaskError, match=r"no task named 'gsm8kk'; did you mean gsm8k"):
        run_task("gsm8kk", dead_url(), "qwen3-toy")
    with pytest.raises(LmEvalTaskError, match="is an lm-eval group, tag or Python task"):
        run_task("math_word_problems", dead_url(), "qwen3-toy")  # the tag gsm8k belongs to


def test_dead_server_is_a_clear_error_not_a_hang():
    url = dead_url()
    t0 = time.monotonic()
    with pytest.raises(LmEvalServerError, match=rf"no OpenAI-compatible server answers at {url}/v1/models"):
        run_task(str(GSM8K_LOCAL), url, "qwen3-toy", data_dir=DATA, limit=2)
    assert time.monotonic() - t0 < 60


def test_docs_example_yaml_builds(tmp_path):
    """The own-YAML example in docs/suites.md is a task lm-eval builds, with its data found through
    ${ROPE_EVAL_DATA}, and its filter extracts what the doc says."""
    from eval_harness.suites.lm_eval_task import build_task

    doc = (Path(__file__).resolve().parents[1] / "docs/suites.md").read_text()
    example = doc.split("`my_tasks/arith.yaml`:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_arith").mkdir()
    rows = [{"question": "2 + 3?", "answer": "5"}, {"question": "7 - 9?", "answer": "-2"}]
    (tmp_path / "my_arith/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = build_task(_yaml(tmp_path, example), data_dir=tmp_path)
    task.build_all_requests(limit=None, rank=0, world_size=1)
    for inst, text in zip(task.instances, ["2 + 3 = 5", "7 - 9 = -2"], strict=True):
        inst.resps.append(text)
    task.apply_filters()
    assert [i.filtered_resps["last-number"] for i in task.instances] == ["5", "-2"]
    assert task.process_results(rows[1], ["-2"]) == {"exact_match": 1.0}


def test_suite_entry_names_the_task():
    assert task_of_suite("lm-eval:gsm8k") == "gsm8k"
    assert (
        task_of_suite("lm-eval:suites/lm_eval_tasks/gsm8k_local.yaml")
        == "suites/lm_eval_tasks/gsm8k_local.yaml"
    )
    assert task_of_suite("gsm8k") is None


def test_server_root():
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/completions"):
        assert server_root(url) == "http://h:1"
    assert server_root("http://h:1/v1/chat/completions") == "http://h:1"


# ---- against the toy model served by vLLM ------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    """qwen3-toy (trained on toy arithmetic; answers in `#### N` form) on one CPU vLLM server."""
    from eval_harness.engine.server import ServerSpec, VllmServer
    from eval_harness.paths import parse_path
    from eval_harness.toy import weights_dir

    args = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "16"]
    run_dir = tmp_path_factory.mktemp("lm-eval-srv")
    spec = ServerSpec(
        model=str(weights_dir("qwen3-toy")),
        path=parse_path("native"),
        log_file=run_dir / "server.log",
        counts_dir=run_dir / "counts",
        serve_args=[*args, "--served-model-name", "qwen3-toy"],
    )
    with VllmServer(spec) as server:
        yield server


def _check_run(run: TaskRun, n: int) -> None:
    rows = _rows()
    assert [d.doc_id for d in run.docs] == list(range(n)) and run.n_docs == n
    for d in run.docs:
        assert set(d.metrics) == METRICS and set(d.metrics.values()) <= {0.0, 1.0}
        assert set(d.filtered) == {"strict-match", "flexible-extract"}
        assert rows[d.doc_id]["question"] in d.prompt and d.target == rows[d.doc_id]["answer"]
        assert d.response and d.doc_hash and d.prompt_hash
    assert set(run.metric_keys) == METRICS and set(run.aggregate) == METRICS
    for key in METRICS:
        assert run.aggregate[key] == pytest.approx(sum(d.metrics[key] for d in run.docs) / n)
    t = run.timing
    assert t.n_requests >= 1 and t.requests_s > 0 and t.before_first_request_s > 0
    parts = t.before_first_request_s + t.requests_s + t.after_last_response_s
    assert parts == pytest.approx(t.total_s, abs=0.01)


@pytest.mark.vllm
def test_local_gsm8k_yaml_per_document(toy_server):
    """5-shot completions through lm-eval's HF tokenizer path; a second call gives the same documents,
    prompts and responses (greedy on the CPU), and reuses what lm-eval loaded."""
    from eval_harness.toy import weights_dir

    kwargs = dict(
        tokenizer=str(weights_dir("qwen3-toy")),
        limit=6,
        data_dir=DATA,
        gen_kwargs={"max_gen_toks": 48},
        num_concurrent=4,
    )
    first = run_task(str(GSM8K_LOCAL), toy_server.url, "qwen3-toy", **kwargs)
    _check_run(first, 6)
    assert first.task == "gsm8k_local" and first.lm_eval_version == "0.4.13"
    assert first.model_type == "local-completions" and first.model_args["tokenized_requests"] is True
    assert first.gen_kwargs["max_gen_toks"] == 48 and first.gen_kwargs["until"][0] == "Question:"
    assert all(d.prompt.count("Question:") == 6 and d.prompt.endswith("Answer:") for d in first.docs)
    second = run_task(str(GSM8K_LOCAL), toy_server.url, "qwen3-toy", **kwargs)
    assert second.task_hash == first.task_hash
    assert [(d.doc_id, d.prompt, d.response, d.metrics) for d in second.docs] == [
        (d.doc_id, d.prompt, d.response, d.metrics) for d in first.docs
    ]
    assert second.timing.index_s == 0.0 and second.timing.import_s == 0.0


@pytest.mark.vllm
def test_real_generations_score_the_same_in_the_gsm8k_suite(toy_server):
    """200 real generations: lm-eval's per-document verdicts (from its own filters, inside its run)
    equal rope-eval's gsm8k suite's on the same responses."""
    run = run_task(
        str(GSM8K_LOCAL),
        toy_server.url,
        "qwen3-toy",
        limit=200,
        num_fewshot=0,
        data_dir=DATA,
        gen_kwargs={"max_gen_toks": 40},
        num_concurrent=8,
    )
    _check_run(run, 200)
    suite = get_suite("gsm8k")
    items = suite.load(DataSource("local", DATA), limit=200)
    mismatches = []
    for item, doc in zip(items, run.docs, strict=True):
        filters = suite.score(item, ModelOutput(doc.response), style="completion-0shot").details["filters"]
        ours = {name: (f["extracted"], float(f["correct"])) for name, f in filters.items()}
        theirs = {name: (doc.filtered[name], doc.metrics[f"exact_match,{name}"]) for name in filters}
        if ours != theirs:
            mismatches.append((item.id, doc.response, ours, theirs))
    assert not mismatches, mismatches[:5]
    # the generations exercise both filters: `#### N` lines and free text
    assert sum(d.filtered["strict-match"] != "[invalid]" for d in run.docs) >= 20
    assert sum(d.filtered["strict-match"] == "[invalid]" for d in run.docs) >= 1


@pytest.mark.vllm
def test_chat_completions(toy_server):
    run = run_task(
        str(GSM8K_LOCAL),
        toy_server.url,
        "qwen3-toy",
        chat=True,
        limit=3,
        data_dir=DATA,
        gen_kwargs={"max_gen_toks": 32},
        num_concurrent=3,
    )
    _check_run(run, 3)
    assert run.model_type == "local-chat-completions" and run.model_args["base_url"].endswith(
        "/chat/completions"
    )
    for d in run.docs:
        messages = json.loads(d.prompt)  # 5 shots as multi-turn chat, then the question
        assert [m["role"] for m in messages] == ["user", "assistant"] * 5 + ["user"]


@pytest.mark.vllm
def test_registered_task_on_local_data_matches_the_local_yaml(toy_server):
    """lm-eval's own `gsm8k`, pointed at the local files, sends the same prompts as gsm8k_local.yaml."""
    kwargs = dict(limit=2, gen_kwargs={"max_gen_toks": 24})
    registered = run_task("gsm8k", toy_server.url, "qwen3-toy", overrides=LOCAL_DATA, **kwargs)
    local = run_task(str(GSM8K_LOCAL), toy_server.url, "qwen3-toy", data_dir=DATA, **kwargs)
    assert registered.task == "gsm8k" and [d.doc_id for d in registered.docs] == [0, 1]
    assert [(d.prompt, d.response, d.metrics) for d in registered.docs] == [
        (d.prompt, d.response, d.metrics) for d in local.docs
    ]


@pytest.mark.vllm
def test_wrong_model_name_is_a_clear_error(toy_server):
    with pytest.raises(LmEvalServerError, match=r"serves \['qwen3-toy'\], not 'qwen3'"):
        run_task(str(GSM8K_LOCAL), toy_server.url, "qwen3", data_dir=DATA, limit=1)
