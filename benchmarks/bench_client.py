"""Client throughput benchmark: rope-eval's `Client` vs lm-eval `local-completions` (DESIGN §10).

Both clients send the same GSM8K test prompts (greedy, few max tokens) to the same loopback stub
server (`stub_server.py`), which waits a fixed emulated engine latency per request and records
arrival/finish times and TCP connections. Each client run is its own subprocess, so its CPU time
(`os.wait4` rusage, children included) and start-up cost are attributable.

Per (tool, concurrency) it reports:
  phase_s        request phase: first arrival -> last response (server clock)
  req/s          n / phase_s
  share          ideal_s / phase_s, ideal_s = ceil(n / concurrency) * latency
  first_req_s    process launch -> first request arriving at the server (fixed overhead)
  tail_s         last response -> process exit
  cpu_s, cpu%    CPU seconds of the client process, and as a share of its wall time
  conns          distinct TCP connections the server saw
  svc_ms         mean stub handler time (the emulated latency plus the stub's own overshoot)
  vs_ref         req/s relative to the minimal aiohttp reference client at the same concurrency

Tools: `rope` (eval_harness.engine.client.Client, progress bar off as in the runner), `lmeval`
(`lm-eval run --model local-completions` on a local-JSON GSM8K task), `aiohttp` (a minimal
aiohttp client: the floor this machine and stub allow). An untimed warm-up run per tool comes first
(pyc, page cache, the HF datasets cache lm-eval builds from the JSONL).

Run: `.venv/bin/python benchmarks/bench_client.py [--n 1319] [--n-c1 300] [--latency-ms 50]
[--concurrency 1,8,64] [--tools rope,lmeval,aiohttp] [--repeats 1] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data/gsm8k/test.jsonl")
STUB = Path(__file__).resolve().parent / "stub_server.py"
TASK = "rope_bench_gsm8k"
PROMPT = "Question: {question}\nAnswer:"
STOP = "Question:"
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["{stop}"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_tokens}
metric_list:
  - metric: exact_match
num_fewshot: 0
"""


# --------------------------------------------------------------------------- data


def load_prompts(path: Path, n: int) -> list[str]:
    prompts: list[str] = []
    with path.open() as f:
        for line in f:
            if len(prompts) >= n:
                break
            prompts.append(PROMPT.format(question=json.loads(line)["question"]))
    return prompts


# --------------------------------------------------------------------------- client workers


def rope_worker(url: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict[str, float]:
    """Send the prompts through rope-eval's Client, as the runner does (progress bar off)."""
    import asyncio

    from eval_harness.engine.client import Client, Request, Result, Sampling

    t_imported = time.time()
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0, stop=(STOP,))
    reqs = [Request(key=f"gsm8k-{i}", sampling=sampling, prompt=p) for i, p in enumerate(prompts)]
    results: list[Result] = []

    async def main() -> dict[str, float]:
        t_client = time.time()
        async with Client(url, "stub", concurrency=concurrency, retries=1) as client:
            cpu0, t_run = time.process_time(), time.time()
            await client.run(reqs, results.append, desc="bench", progress=False)
            cpu_run = time.process_time() - cpu0
        return {"t_imported": t_imported, "t_client": t_client, "t_run": t_run, "cpu_run_s": cpu_run}

    out = asyncio.run(main())
    assert len(results) == len(prompts) and all(r.text for r in results), "incomplete or empty results"
    return out


def aiohttp_worker(url: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict[str, float]:
    """Reference floor: a minimal aiohttp client (one session, semaphore, no retries)."""
    import asyncio

    import aiohttp

    t_imported = time.time()

    async def main() -> dict[str, float]:
        sem = asyncio.Semaphore(concurrency)
        t_client = time.time()
        async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=concurrency)) as http:

            async def one(prompt: str) -> str:
                body = {"model": "stub", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
                async with sem, http.post("/v1/completions", json={**body, "stop": [STOP]}) as resp:
                    resp.raise_for_status()
                    return (await resp.json())["choices"][0]["text"]

            cpu0, t_run = time.process_time(), time.time()
            texts = await asyncio.gather(*(one(p) for p in prompts))
            cpu_run = time.process_time() - cpu0
        assert len(texts) == len(prompts) and all(texts), "incomplete or empty results"
        return {"t_imported": t_imported, "t_client": t_client, "t_run": t_run, "cpu_run_s": cpu_run}

    return asyncio.run(main())


WORKERS = {"rope": rope_worker, "aiohttp": aiohttp_worker}


def worker_main(tool: str, url: str, n: int, concurrency: int, max_tokens: int, data: Path) -> None:
    """Child process entry: run one client; print its own timings as one JSON line."""
    t_main = time.time()
    out = WORKERS[tool](url, load_prompts(data, n), concurrency, max_tokens)
    print(json.dumps({"t_main": t_main, "t_done": time.time(), **out}), flush=True)


# --------------------------------------------------------------------------- processes


@dataclass
class ChildRun:
    rc: int
    t_launch: float
    t_exit: float
    cpu_s: float
    stdout: str
    stderr: str


def run_child(cmd: list[str], env: dict[str, str], timeout_s: float, log_dir: Path) -> ChildRun:
    """Run cmd; rusage from wait4 covers the child (and any children it waited for) only."""
    out_p, err_p = log_dir / "stdout.txt", log_dir / "stderr.txt"
    with out_p.open("w") as out, err_p.open("w") as err:
        t_launch = time.time()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        t_exit = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it; keep Popen consistent
    return ChildRun(
        rc=proc.returncode,
        t_launch=t_launch,
        t_exit=t_exit,
        cpu_s=usage.ru_utime + usage.ru_stime,
        stdout=out_p.read_text(),
        stderr=err_p.read_text(),
    )


def start_stub(latency_ms: float) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, str(STUB), "--port", "0", "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"stub server did not start: {line}")
    return proc, int(line[1])


def stub_call(port: int, path: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def child_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_CACHE=str(cache / "datasets"),
        HF_HOME=str(cache / "hf"),
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def worker_cmd(tool: str, port: int, n: int, concurrency: int, max_tokens: int, data: Path) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--worker={tool}",
        f"--url=http://127.0.0.1:{port}",
        f"--n={n}",
        f"--concurrency={concurrency}",
        f"--max-tokens={max_tokens}",
        f"--data={data}",
    ]


def lmeval_cmd(port: int, n: int, concurrency: int, include: Path, total: int) -> list[str]:
    model_args = ",".join(
        [
            f"base_url=http://127.0.0.1:{port}/v1/completions",
            "model=stub",
            f"num_concurrent={concurrency}",
            "max_retries=1",
            "tokenized_requests=False",
            "tokenizer_backend=None",
        ]
    )
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args", model_args]
    cmd += ["--tasks", TASK, "--include_path", str(include), "--batch_size", "1"]
    return cmd + (["--limit", str(n)] if n < total else [])


def write_task(include: Path, data: Path, max_tokens: int) -> None:
    text = TASK_YAML.format(task=TASK, data=data, stop=STOP, max_tokens=max_tokens)
    (include / f"{TASK}.yaml").write_text(text)


# --------------------------------------------------------------------------- measurement


@dataclass
class Row:
    tool: str
    concurrency: int
    n: int
    latency_s: float
    ideal_s: float
    rc: int
    requests_seen: int = 0
    phase_s: float = math.nan
    req_per_s: float = math.nan
    share_of_ideal: float = math.nan
    first_request_s: float = math.nan
    tail_s: float = math.nan
    process_wall_s: float = math.nan
    cpu_s: float = math.nan
    cpu_share: float = math.nan
    connections: int = 0
    max_in_flight: int = 0
    server_cpu_s: float = math.nan
    service_ms: float = math.nan  # mean stub handler time (emulated latency + its overshoot)
    vs_ref: float = math.nan
    worker: dict[str, float] = field(default_factory=dict)
    output_tail: str = ""
    note: str = ""


def make_row(tool: str, conc: int, n: int, latency_s: float, child: ChildRun, stats: dict[str, Any]) -> Row:
    row = Row(tool, conc, n, latency_s, math.ceil(n / conc) * latency_s, child.rc)
    row.process_wall_s = child.t_exit - child.t_launch
    row.cpu_s = child.cpu_s
    row.cpu_share = child.cpu_s / row.process_wall_s
    row.requests_seen = stats["requests"]
    row.connections = stats["connections"]
    row.max_in_flight = stats["max_in_flight"]
    row.server_cpu_s = stats["server_cpu_s"]
    if stats["mean_service_s"] is not None:
        row.service_ms = stats["mean_service_s"] * 1000.0
    if stats["first_arrival"] is not None and stats["last_finish"] is not None:
        row.phase_s = stats["last_finish"] - stats["first_arrival"]
        row.req_per_s = stats["completed"] / row.phase_s
        row.share_of_ideal = row.ideal_s / row.phase_s
        row.first_request_s = stats["first_arrival"] - child.t_launch
        row.tail_s = child.t_exit - stats["last_finish"]
    if child.rc != 0:
        row.note = f"exit {child.rc}: " + child.stderr.strip()[-400:]
    elif row.requests_seen != n:
        row.note = f"server saw {row.requests_seen} completions requests, expected {n}"
    return row


def worker_timings(child: ChildRun) -> dict[str, float]:
    lines = [ln for ln in child.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {}
    w = json.loads(lines[-1])
    return {
        "interpreter_start_s": w["t_main"] - child.t_launch,
        "imports_s": w["t_imported"] - w["t_main"],
        "client_built_after_s": w["t_client"] - child.t_launch,
        "run_call_s": w["t_done"] - w["t_run"],
        "exit_after_done_s": child.t_exit - w["t_done"],
        "cpu_during_run_s": w["cpu_run_s"],
    }


@dataclass(frozen=True)
class Setup:
    port: int
    latency_ms: float
    max_tokens: int
    data: Path
    total: int
    include: Path
    env: dict[str, str]
    logs: Path
    timeout_s: float


def measure(setup: Setup, tool: str, conc: int, n: int) -> Row:
    log_dir = setup.logs / f"{tool}-c{conc}-n{n}-{time.monotonic_ns()}"
    log_dir.mkdir(parents=True)
    if tool in WORKERS:
        cmd = worker_cmd(tool, setup.port, n, conc, setup.max_tokens, setup.data)
    else:
        cmd = lmeval_cmd(setup.port, n, conc, setup.include, setup.total)
    stub_call(setup.port, "/reset", "POST")
    child = run_child(cmd, setup.env, setup.timeout_s, log_dir)
    row = make_row(tool, conc, n, setup.latency_ms / 1000.0, child, stub_call(setup.port, "/stats"))
    if tool in WORKERS:
        row.worker = worker_timings(child)
    else:
        row.output_tail = child.stdout.strip()[-600:]
    return row


# --------------------------------------------------------------------------- report


# (header, Row attribute, format spec); the spec's width sets the column width
COLUMNS = [
    ("tool", "tool", "<8"),
    ("conc", "concurrency", ">4"),
    ("n", "n", ">5"),
    ("phase_s", "phase_s", ">8.2f"),
    ("ideal_s", "ideal_s", ">7.2f"),
    ("req/s", "req_per_s", ">7.1f"),
    ("share", "share_of_ideal", ">6.1%"),
    ("first_s", "first_request_s", ">7.2f"),
    ("tail_s", "tail_s", ">6.2f"),
    ("wall_s", "process_wall_s", ">7.2f"),
    ("cpu_s", "cpu_s", ">6.2f"),
    ("cpu%", "cpu_share", ">6.1%"),
    ("conns", "connections", ">5"),
    ("svc_ms", "service_ms", ">6.1f"),
    ("vs_ref", "vs_ref", ">6.1%"),
]


def _width(spec: str) -> int:
    return int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()))


def format_table(rows: list[Row]) -> str:
    head = "  ".join(f"{h:{spec[0]}{_width(spec)}}" for h, _, spec in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = "  ".join(f"{getattr(r, attr):{spec}}" for _, attr, spec in COLUMNS)
        lines.append(cells + (f"  ! {r.note[:160]}" if r.note else ""))
    return "\n".join(lines)


def add_reference_ratio(rows: list[Row], ref: str = "aiohttp") -> None:
    """vs_ref = req/s over the median req/s of the reference client at the same concurrency."""
    for conc in {r.concurrency for r in rows}:
        ref_rates = [r.req_per_s for r in rows if r.tool == ref and r.concurrency == conc and not r.note]
        if ref_rates:
            base = statistics.median(ref_rates)
            for r in rows:
                if r.concurrency == conc:
                    r.vs_ref = r.req_per_s / base


def check_targets(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """DESIGN §10 targets for rope-eval's client, judged on the rope rows."""
    rope = [r for r in rows if r.tool == "rope"]
    ok = all(r.rc == 0 and r.requests_seen == r.n for r in rope) and bool(rope)
    worst_first = max((r.first_request_s for r in rope), default=math.nan)
    worst_share = min((r.share_of_ideal for r in rope), default=math.nan)
    pooled = all(r.connections <= r.concurrency for r in rope)
    return {
        "fixed_overhead_le_2s": {"met": ok and worst_first <= 2.0, "worst_first_request_s": worst_first},
        "throughput_ge_95pct": {
            "met": ok and worst_share >= 0.95,
            "worst_share": worst_share,
            "by_concurrency": {r.concurrency: r.share_of_ideal for r in rope},
        },
        "persistent_pool": {
            "met": ok and pooled,
            "connections_by_concurrency": {r.concurrency: r.connections for r in rope},
        },
        "info_vs_aiohttp_reference": {
            "met": None,
            "by_concurrency": {r.concurrency: r.vs_ref for r in rope},
        },
    }


def machine_info() -> dict[str, Any]:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        platform.processor(),
    )
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("httpx", "httpcore", "aiohttp", "lm_eval", "requests", "uvloop"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1319, help="prompts per run (concurrency > 1)")
    ap.add_argument("--n-c1", type=int, default=300, help="prompts for concurrency-1 runs (bounds runtime)")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--tools", default="rope,lmeval,aiohttp", help="aiohttp = minimal reference client")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run per tool")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="per client run")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def run_all(args: argparse.Namespace, tmp: Path) -> tuple[list[Row], list[Row]]:
    total = sum(1 for _ in args.data.open())
    (tmp / "tasks").mkdir()
    write_task(tmp / "tasks", args.data, args.max_tokens)
    stub, port = start_stub(args.latency_ms)
    try:
        setup = Setup(
            port,
            args.latency_ms,
            args.max_tokens,
            args.data,
            total,
            tmp / "tasks",
            child_env(tmp),
            tmp / "logs",
            args.timeout_s,
        )
        tools = args.tools.split(",")
        warm = [] if args.no_warmup else [measure(setup, t, 8, 16) for t in tools]
        rows: list[Row] = []
        for conc in (int(c) for c in args.concurrency.split(",")):
            n = min(args.n_c1 if conc == 1 else args.n, total)
            for _ in range(args.repeats):
                for tool in tools:
                    rows.append(measure(setup, tool, conc, n))
                    print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        return warm, rows
    finally:
        stub.terminate()
        stub.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.url, args.n, int(args.concurrency), args.max_tokens, args.data)
        return 0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        warm, rows = run_all(args, Path(tmp))
    add_reference_ratio(rows)
    targets = check_targets(rows)
    print(format_table(rows))
    print(f"\nlatency {args.latency_ms:g} ms, max_tokens {args.max_tokens}; ideal_s = ceil(n/conc) * latency")
    for name, t in targets.items():
        detail = json.dumps({k: v for k, v in t.items() if k != "met"})
        verdict = "info" if t["met"] is None else "MET" if t["met"] else "NOT MET"
        print(f"target {name}: {verdict}  {detail}")
    if args.json:
        report = {
            "started_utc": started,
            "command": shlex.join([os.path.relpath(sys.executable, REPO), *sys.argv]),
            "machine": {**info, "loadavg_after": os.getloadavg()},
            "versions": versions(),
            "settings": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if k not in ("worker", "url")
            },
            "rows": [asdict(r) for r in rows],
            "warmup_rows": [asdict(r) for r in warm],
            "targets": targets,
            "medians": medians(rows),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=float))
    return 0


def medians(rows: list[Row]) -> dict[str, dict[str, float]]:
    keys = sorted({(r.tool, r.concurrency) for r in rows})
    out: dict[str, dict[str, float]] = {}
    for tool, conc in keys:
        sel = [r for r in rows if (r.tool, r.concurrency) == (tool, conc)]
        out[f"{tool}@{conc}"] = {
            m: statistics.median(getattr(r, m) for r in sel)
            for m in ("share_of_ideal", "req_per_s", "first_request_s", "cpu_s", "cpu_share", "vs_ref")
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
