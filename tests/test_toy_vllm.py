"""qwen3-toy with its eagle3 draft through real vLLM on the CPU (offline engine, one process per path):
the trained models must solve toy-arith and the draft must be accepted, with the RoPE path proven by the
plugin's call counts. About a minute per path on 2 idle cores, most of it engine start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval_harness.suites.toy_arith import DEFAULT_LIMITS
from eval_harness.toy import compare

REPO = Path(__file__).resolve().parents[1]
LIMIT = DEFAULT_LIMITS["smoke"]  # the problems `make eval` will send (120)


def _verify(path: str, tmp_path: Path) -> dict:
    env = {
        **os.environ,
        "ROPE_EVAL_PATH": path,
        "ROPE_EVAL_COUNTS_DIR": str(tmp_path / "counts"),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "TRITON_INTERPRET": "1" if path == "triton" else "0",  # Triton runs on the CPU only interpreted
    }
    out = tmp_path / "records.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "eval_harness.toy.verify",
        "--model",
        "qwen3-toy",
        "--draft",
        "qwen3-toy-eagle3",
    ]
    proc = subprocess.run(
        [*cmd, "--limit", str(LIMIT), "--out", str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (record,) = compare.load(out)
    return record


@pytest.mark.vllm
@pytest.mark.parametrize("path", ["native", "triton"])
def test_qwen3_toy_with_draft_solves_and_is_accepted(path: str, tmp_path: Path) -> None:
    record = _verify(path, tmp_path)
    print(f"\n{path}: " + json.dumps({k: v for k, v in record.items() if k not in ("rows", "env")}))
    assert record["problems"] == LIMIT and record["draft"] == "qwen3-toy-eagle3"
    assert (
        set(record["rope_calls"]) == {path} and record["rope_calls"][path] > 0
    )  # that path, and only it, ran
    assert record["accuracy"] >= 0.9
    acc = compare.acceptance(record["rows"])
    assert acc.length >= 1.8, acc
    # The per-request histograms add up to the engine's own counters: nothing was lost between them.
    assert acc.length == pytest.approx(record["spec_decode"]["mean_acceptance_length"], abs=1e-9)
    assert acc.per_position == pytest.approx(record["spec_decode"]["acceptance_per_position"], abs=1e-4)
