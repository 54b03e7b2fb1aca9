"""Run an lm-eval task as a suite: one task (a registered name or a local YAML) against one
OpenAI-compatible vLLM server, through lm-eval's own Python API, returning typed per-document results.

Everything that decides a score is lm-eval's: its task config, prompts, filters, metrics and
aggregation (`lm_eval.simple_evaluate` with `log_samples=True`). This module only chooses the model
class and its arguments, keeps lm-eval away from its traps (below), and reshapes the logged
samples into `DocResult`s:

- lm-eval's request cache is keyed without the model or the server, so two arms would share answers:
  it is never enabled here (`use_cache=None`, `cache_requests=False`).
- Every request carries the same `seed` (lm-eval's default 1234). Harmless for greedy tasks; a sampled
  task draws the same stream for every document.
- `repeats > 1` sends K identical requests (same seed) and the gsm8k-style filters keep only the first:
  refused, with the reason, rather than silently scoring one sample.
- `local-chat-completions` forces batch size 1; concurrency (`num_concurrent`) still applies.

A local YAML may name its data as `${VAR}` inside `dataset_path`/`dataset_kwargs`; `${ROPE_EVAL_DATA}`
comes from `data_dir` or the environment, so `suites/lm_eval_tasks/gsm8k_local.yaml` runs offline.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .data import ENV_DATA

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
GSM8K_LOCAL = TASKS_DIR / "gsm8k_local.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SUITE_PREFIX = "lm-eval:"  # a run config's suite entry `lm-eval:<task name or YAML path>`


def task_of_suite(suite_name: str) -> str | None:
    """The lm-eval task a suite entry names (`lm-eval:gsm8k` -> "gsm8k"); None for rope-eval's own."""
    return suite_name.removeprefix(SUITE_PREFIX) if suite_name.startswith(SUITE_PREFIX) else None


class LmEvalTaskError(ValueError):
    """The task cannot be run: unknown name, unreadable YAML, missing data variable, unsupported setting."""


class LmEvalServerError(RuntimeError):
    """The server is unreachable, does not serve the model, or failed during the run."""


@dataclass(frozen=True)
class DocResult:
    """One document of one task, as lm-eval scored it."""

    doc_id: int  # lm-eval's index in the test split: stable for a given data file
    metrics: dict[str, float]  # "exact_match,strict-match" -> 1.0: lm-eval's "metric,filter" keys
    filtered: dict[str, str]  # filter name -> what the filter extracted ("18", "[invalid]")
    prompt: str  # the request's context; for chat, the messages as JSON
    response: str  # the model's raw text (the first of `repeats`)
    target: str
    doc_hash: str  # lm-eval's hashes: the document, the prompt, the target
    prompt_hash: str
    target_hash: str


@dataclass(frozen=True)
class LmEvalTiming:
    """Where the seconds of one `run_task` went; lm-eval's own overhead is everything but `requests_s`.
    The first call in a process also pays the imports; later calls reuse them."""

    import_s: float  # importing lm-eval's evaluator (0 once this process has done it)
    index_s: float  # building lm-eval's task index (0 when cached in this process)
    task_s: float  # building the task: config, dataset, filters
    model_s: float  # creating lm-eval's API model (loading a tokenizer imports transformers)
    before_first_request_s: float  # run_task start -> first request sent (all of the above, prompts)
    requests_s: float  # first request sent -> last response received
    after_last_response_s: float  # last response -> lm-eval returned (filters, metrics, env info)
    total_s: float
    n_requests: int  # HTTP calls lm-eval made (a batch counts once)


@dataclass(frozen=True)
class TaskRun:
    task: str  # lm-eval's task name
    spec: str  # what was asked for: the registered name or the YAML path
    docs: list[DocResult]
    metric_keys: tuple[str, ...]  # the per-document "metric,filter" keys
    aggregate: dict[str, float]  # lm-eval's task-level values under the same keys
    stderr: dict[str, float]  # lm-eval's standard errors, where it computed one
    n_docs: int
    lm_eval_version: str
    model_type: str  # "local-completions" | "local-chat-completions"
    model_args: dict[str, Any]
    gen_kwargs: dict[str, Any]
    task_config: dict[str, Any]  # the config lm-eval ran, JSON-safe
    task_hash: str  # sha256 of task_config: equal hashes, equal task
    timing: LmEvalTiming


# ---- the task --------------------------------------------------------------------------------------
def _is_path(task: str) -> bool:
    return task.endswith((".yaml", ".yml")) or os.sep in task


def _expand(value: Any, variables: Mapping[str, str], where: str) -> Any:
    """`${VAR}` in every string of value (dicts and lists walked), from `variables`."""
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            if m.group(1) not in variables:
                raise LmEvalTaskError(
                    f"{where} uses ${{{m.group(1)}}}, which is not set"
                    + (f" (pass data_dir or set {ENV_DATA})" if m.group(1) == ENV_DATA else "")
                )
            return variables[m.group(1)]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, variables, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, variables, where) for v in value]
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    """The config through lm-eval's own loader (`include:` and `!function` resolved as lm-eval does)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        return load_yaml(path, resolve_func=True)
    except Exception as e:  # YAML syntax, a broken include, a !function that does not import
        raise LmEvalTaskError(f"lm-eval cannot read the task YAML {path}: {type(e).__name__}: {e}") from e


_TASK_MANAGERS: dict[bool, TaskManager] = {}


def _task_manager(include_defaults: bool) -> tuple[TaskManager, float]:
    """lm-eval's task index and the seconds spent building it (0 when reused): built once per process,
    since indexing lm-eval's ~15k bundled YAMLs takes tens of seconds, and a local YAML needs none."""
    if include_defaults in _TASK_MANAGERS:
        return _TASK_MANAGERS[include_defaults], 0.0
    from lm_eval.tasks import TaskManager

    t0 = time.monotonic()
    tm = _TASK_MANAGERS[include_defaults] = TaskManager(include_defaults=include_defaults)
    return tm, time.monotonic() - t0


def _registered_config(name: str, tm: TaskManager) -> dict[str, Any]:
    entry = tm.task_index.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, tm.all_tasks, n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LmEvalTaskError(
            f"lm-eval has no task named {name!r}{hint} (or give the path of a task YAML, ending in .yaml)"
        )
    if name in tm.all_groups or name in tm.all_tags or entry.yaml_path is None:
        raise LmEvalTaskError(
            f"{name!r} is an lm-eval group, tag or Python task; run_task runs one YAML task at a time"
        )
    return _read_yaml(entry.yaml_path)


def resolve_task(
    task: str, data_dir: Path | str | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], TaskManager, float]:
    """The task config lm-eval will run (`${VAR}` filled in, `overrides` applied on top), the task
    manager to load it with, and the seconds spent indexing."""
    if _is_path(task):
        path = Path(task).expanduser().resolve()
        if not path.is_file():
            raise LmEvalTaskError(f"no lm-eval task YAML at {path}")
        cfg, (tm, index_s) = _read_yaml(path), _task_manager(False)
        where = f"task YAML {path}"
    else:
        tm, index_s = _task_manager(True)
        cfg, where = _registered_config(task, tm), f"lm-eval task {task!r}"
    if not isinstance(cfg.get("task"), str) or "group" in cfg:
        raise LmEvalTaskError(f"{where} does not define one task (a `task:` name, no `group:`)")
    cfg = {**cfg, **(overrides or {})}
    variables = dict(os.environ)
    if data_dir is not None:
        variables[ENV_DATA] = str(Path(data_dir).expanduser().resolve())
    # only where data is named: prompts may hold `${...}` of their own (LaTeX, shell)
    for key in ("dataset_path", "dataset_kwargs"):
        if key in cfg:
            cfg[key] = _expand(cfg[key], variables, where)
    return cfg, tm, index_s


# ---- the server ------------------------------------------------------------------------------------
def server_root(base_url: str) -> str:
    """`http://host:port` from any of `http://host:port`, `.../v1`, `.../v1/completions`."""
    root = base_url.rstrip("/")
    for suffix in ("/v1/chat/completions", "/v1/completions", "/v1"):
        root = root.removesuffix(suffix)
    return root


def check_server(base_url: str, model_name: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, with the reason, when nothing answers or the model is not served; lm-eval itself
    would retry and then fail with a bare connection error."""
    url = f"{server_root(base_url)}/v1/models"
    try:
        resp = httpx.get(url, timeout=timeout_s)
        resp.raise_for_status()
        served = [m["id"] for m in resp.json()["data"]]
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
        raise LmEvalServerError(
            f"no OpenAI-compatible server answers at {url}: {type(e).__name__}: {e}"
        ) from e
    if model_name not in served:
        raise LmEvalServerError(f"the server at {url} serves {served}, not {model_name!r}")


# ---- the model -------------------------------------------------------------------------------------
@dataclass
class _RequestClock:
    """When lm-eval sent its first request and received its last response."""

    first: float | None = None
    last: float | None = None
    n: int = 0

    def wrap(self, call: Any, is_async: bool) -> Any:
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            self._start()
            try:
                return await call(*args, **kwargs)
            finally:
                self.last = time.monotonic()

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._start()
            try:
                return call(*args, **kwargs)
            finally:
                self.last = time.monotonic()

        return timed_async if is_async else timed

    def _start(self) -> None:
        self.n += 1
        if self.first is None:
            self.first = time.monotonic()


def model_args_for(
    base_url: str,
    model_name: str,
    *,
    chat: bool,
    tokenizer: str | None,
    num_concurrent: int,
    max_retries: int,
    request_timeout_s: int,
    max_length: int | None,
    seed: int,
    think_end_token: str | None,
) -> dict[str, Any]:
    """lm-eval's model arguments. Without a tokenizer, prompts go as text and the server tokenizes
    them (lm-eval would otherwise try the Hub for `model_name`)."""
    root = server_root(base_url)
    args: dict[str, Any] = {
        "model": model_name,
        "base_url": f"{root}/v1/chat/completions" if chat else f"{root}/v1/completions",
        "num_concurrent": num_concurrent,
        "max_retries": max_retries,
        "timeout": request_timeout_s,
        "seed": seed,
        "tokenizer_backend": "huggingface" if tokenizer and not chat else None,
        "tokenized_requests": bool(tokenizer) and not chat,
    }
    if tokenizer and not chat:
        args["tokenizer"] = tokenizer
    if max_length is not None:
        args["max_length"] = max_length
    if chat and think_end_token:
        args["think_end_token"] = think_end_token
    return args


def _build_model(model_type: str, model_args: dict[str, Any], clock: _RequestClock) -> LM:
    from lm_eval.api.registry import get_model

    try:
        lm = get_model(model_type).create_from_arg_obj(model_args, {"batch_size": 1})
    except Exception as e:  # a tokenizer path that does not load, an argument lm-eval rejects
        raise LmEvalTaskError(f"lm-eval could not create {model_type}: {type(e).__name__}: {e}") from e
    # instance attributes shadow the methods lm-eval's request loops look up on `self`
    lm.model_call = clock.wrap(lm.model_call, is_async=False)  # type: ignore[attr-defined]
    lm.amodel_call = clock.wrap(lm.amodel_call, is_async=True)  # type: ignore[attr-defined]
    return lm


# ---- the results -----------------------------------------------------------------------------------
def _text(arg: Any) -> str:
    """A request's context: a string, or lm-eval's JsonChatStr (a 1-tuple holding the chat messages
    as JSON)."""
    while isinstance(arg, tuple | list) and len(arg) == 1:
        arg = arg[0]
    return arg if isinstance(arg, str) else json.dumps(arg, default=str)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float)  # bools too: some metrics log True/False per document


def docs_from_samples(samples: list[dict[str, Any]]) -> tuple[list[DocResult], tuple[str, ...]]:
    """lm-eval logs one sample per (document, filter); merge them into one DocResult per document.
    Metrics without a per-document number (corpus-level ones such as bleu) are left out."""
    by_doc: dict[int, dict[str, Any]] = {}
    keys: list[str] = []
    for s in samples:
        d = by_doc.setdefault(int(s["doc_id"]), {"sample": s, "metrics": {}, "filtered": {}})
        flt = s["filter"]
        filtered = s["filtered_resps"][0]
        d["filtered"][flt] = filtered if isinstance(filtered, str) else json.dumps(filtered, default=str)
        for metric in s["metrics"]:
            if _is_number(s.get(metric)):
                key = f"{metric},{flt}"
                d["metrics"][key] = float(s[metric])
                if key not in keys:
                    keys.append(key)
    docs = []
    for doc_id in sorted(by_doc):
        d, s = by_doc[doc_id], by_doc[doc_id]["sample"]
        docs.append(
            DocResult(
                doc_id=doc_id,
                metrics=d["metrics"],
                filtered=d["filtered"],
                prompt=_text(s["arguments"][0][0]),
                response=str(s["resps"][0][0]),
                target=str(s["target"]),
                doc_hash=s["doc_hash"],
                prompt_hash=s["prompt_hash"],
                target_hash=s["target_hash"],
            )
        )
    return docs, tuple(keys)


def _aggregates(task_results: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    agg, err = {}, {}
    for key, value in task_results.items():
        if not _is_number(value) or "," not in key:
            continue
        metric, _, flt = key.partition(",")
        if metric.endswith("_stderr"):
            err[f"{metric.removesuffix('_stderr')},{flt}"] = float(value)
        else:
            agg[key] = float(value)
    return agg, err


def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def _load(tm: TaskManager, cfg: dict[str, Any], where: str) -> Any:
    """lm-eval's Task object for the config (its dataset loaded); its errors become LmEvalTaskError."""
    try:
        tasks = tm.load([cfg])["tasks"]
    except Exception as e:  # a data file that is not there, an unknown filter or metric, ...
        raise LmEvalTaskError(f"lm-eval cannot build {where}: {type(e).__name__}: {e}") from e
    (task_obj,) = tasks.values()
    return task_obj


def build_task(
    task: str, data_dir: Path | str | None = None, overrides: Mapping[str, Any] | None = None
) -> Any:
    """lm-eval's own Task object (`lm_eval.api.task.ConfigurableTask`) for a name or YAML, as run_task
    would run it: for checking rope-eval's scoring against lm-eval's filters and metrics."""
    cfg, tm, _ = resolve_task(task, data_dir, overrides)
    return _load(tm, cfg, task)


# ---- the entry point -------------------------------------------------------------------------------
def _check_task(task_obj: Any, where: str, chat: bool) -> None:
    repeats = task_obj.get_config("repeats") or 1
    if repeats > 1:
        raise LmEvalTaskError(
            f"{where}: repeats={repeats}. lm-eval sends the {repeats} copies with one seed, so they are "
            "identical, and filters such as take_first keep one; use rope-eval's own suites for k samples"
        )
    if chat and task_obj.get_config("output_type") != "generate_until":
        raise LmEvalTaskError(
            f"{where}: output_type {task_obj.get_config('output_type')!r} needs logprobs, which "
            "chat completions do not return; run it with chat=False"
        )


def _import_lm_eval() -> float:
    """Seconds to import lm-eval's evaluator; `import lm_eval` alone is lazy and costs nothing."""
    t0 = time.monotonic()
    already = "lm_eval.evaluator" in sys.modules
    import lm_eval.evaluator  # noqa: F401

    return 0.0 if already else time.monotonic() - t0


def run_task(
    task: str,
    base_url: str,
    model_name: str,
    *,
    tokenizer: str | None = None,
    limit: int | None = None,
    chat: bool = False,
    gen_kwargs: Mapping[str, Any] | None = None,
    num_fewshot: int | None = None,
    num_concurrent: int = 1,
    data_dir: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    fewshot_as_multiturn: bool = True,
    think_end_token: str | None = None,
    seed: int = 1234,
    max_length: int | None = None,
    max_retries: int = 3,
    request_timeout_s: int = 600,
    bootstrap_iters: int = 100000,
) -> TaskRun:
    """Run one lm-eval task against the server at `base_url` serving `model_name` and return lm-eval's
    per-document scores. `task` is a registered lm-eval task name or the path of a task YAML.

    `gen_kwargs` update the task's generation_kwargs (as lm-eval's --gen_kwargs); `overrides` replace
    top-level task config keys (e.g. `dataset_kwargs` to point a registered task at local data).
    Raises LmEvalTaskError (the task) or LmEvalServerError (the server), each with the reason."""
    marks = {"start": time.monotonic(), "import_s": _import_lm_eval()}
    cfg, tm, marks["index_s"] = resolve_task(task, data_dir, overrides)
    t = time.monotonic()
    loaded = _load(tm, cfg, task)
    _check_task(loaded, task, chat)
    marks["task_s"] = time.monotonic() - t
    check_server(base_url, model_name)
    model_type = "local-chat-completions" if chat else "local-completions"
    margs = model_args_for(
        base_url,
        model_name,
        chat=chat,
        tokenizer=tokenizer,
        num_concurrent=num_concurrent,
        max_retries=max_retries,
        request_timeout_s=request_timeout_s,
        max_length=max_length,
        seed=seed,
        think_end_token=think_end_token,
    )
    clock = _RequestClock()
    t = time.monotonic()
    lm = _build_model(model_type, margs, clock)
    marks["model_s"] = time.monotonic() - t
    evaluate_kwargs = dict(
        limit=limit,
        num_fewshot=num_fewshot,
        gen_kwargs=dict(gen_kwargs) if gen_kwargs else None,
        apply_chat_template=chat,
        fewshot_as_multiturn=fewshot_as_multiturn if chat else False,
        bootstrap_iters=bootstrap_iters,
    )
    try:
        results = _evaluate(lm, loaded, tm, evaluate_kwargs)
    except Exception as e:
        if _is_request_error(e):
            raise LmEvalServerError(
                f"lm-eval's requests to {server_root(base_url)} failed after {max_retries} tries: "
                f"{type(e).__name__}: {e}{_hint(e, tokenizer)}"
            ) from e
        raise
    timing = _timing(marks, clock, time.monotonic())
    return _task_run(task, loaded.config.task, results, model_type, margs, timing)


def _evaluate(lm: LM, loaded: Any, tm: TaskManager, kwargs: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's `simple_evaluate` (what `lm_eval run` does) on the built task, samples logged."""
    from lm_eval import simple_evaluate

    results = simple_evaluate(
        model=lm,
        tasks=[loaded],
        task_manager=tm,
        log_samples=True,
        use_cache=None,  # lm-eval's cache key omits the model and the server: never share it
        cache_requests=False,
        # no global seeding in the caller's process: lm-eval's prompts depend only on the task's
        # own few-shot generator (fewshot_random_seed, left at lm-eval's default)
        random_seed=None,
        numpy_random_seed=None,
        torch_random_seed=None,
        **kwargs,
    )
    assert results is not None  # one process is rank 0, which always gets the results
    return dict(results)


def _timing(marks: dict[str, float], clock: _RequestClock, end: float) -> LmEvalTiming:
    first = clock.first if clock.first is not None else end
    last = clock.last if clock.last is not None else end
    return LmEvalTiming(
        import_s=marks["import_s"],
        index_s=marks["index_s"],
        task_s=marks["task_s"],
        model_s=marks["model_s"],
        before_first_request_s=first - marks["start"],
        requests_s=last - first,
        after_last_response_s=end - last,
        total_s=end - marks["start"],
        n_requests=clock.n,
    )


def _task_run(
    spec: str,
    name: str,
    results: dict[str, Any],
    model_type: str,
    model_args: dict[str, Any],
    timing: LmEvalTiming,
) -> TaskRun:
    import lm_eval

    docs, keys = docs_from_samples(results["samples"][name])
    agg, err = _aggregates(results["results"][name])
    config = _json_safe(results["configs"][name])
    return TaskRun(
        task=name,
        spec=spec,
        docs=docs,
        metric_keys=keys,
        aggregate=agg,
        stderr=err,
        n_docs=len(docs),
        lm_eval_version=lm_eval.__version__,
        model_type=model_type,
        model_args=_json_safe(model_args),
        gen_kwargs=_json_safe(config.get("generation_kwargs", {})),
        task_config=config,
        task_hash="sha256:" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        timing=timing,
    )


def _is_request_error(e: BaseException) -> bool:
    """An HTTP failure of lm-eval's requests (after its retries), as opposed to a failure in lm-eval."""
    import aiohttp
    import requests

    return isinstance(e, aiohttp.ClientError | requests.RequestException | ConnectionError | TimeoutError)


def _hint(e: BaseException, tokenizer: str | None) -> str:
    """lm-eval logs the server's reply but raises only the status; name the usual cause of a 400."""
    if (
        getattr(e, "status", None) != 400
        and getattr(getattr(e, "response", None), "status_code", None) != 400
    ):
        return ""
    fix = "raise the server's --max-model-len" + (
        "" if tokenizer else ", or pass tokenizer= so lm-eval truncates"
    )
    return f" (see lm-eval's log for the server's reply; usually a prompt longer than the context: {fix})"
