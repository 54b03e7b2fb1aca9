"""The plugin's side of the proof, in real processes (tests/plugin_probe.py, one per scenario, run
concurrently): nothing touches CUDA at load, a forked child counts on its own, a Triton fallback counts
under its own name, the coverage walk finds a RoPE layer the plugin does not switch and counts its calls.
Then `paths.check_path`, the fail-fast check of `custom:` targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest

from eval_harness.paths import PathError, check_path
from eval_harness.proof import read_counts, verify

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "plugin_probe.py"
SPIED = ("native", "triton", "reference", "custom")  # platform loads exactly what native does
# scenario -> (probe, environment)
SCENARIOS = {
    **{f"cuda-spy-{p}": ("cuda-spy", {"ROPE_EVAL_PATH": p}) for p in SPIED[:3]},
    "cuda-spy-custom": ("cuda-spy", {"ROPE_EVAL_PATH": "custom:eval_harness.selftest.bugs:no_rotation"}),
    "fork": ("fork", {"ROPE_EVAL_PATH": "native", "ROPE_EVAL_INSTANCE": "fork-test"}),
    "triton": ("fallback", {"ROPE_EVAL_PATH": "triton"}),
    "dp-index": ("dp-index", {}),
}
PARALLEL = 2  # each probe imports vLLM: ~30 s of CPU


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ROPE_EVAL_", "TRITON_INTERPRET"))}
    pending, running, out = list(SCENARIOS.items()), {}, {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            name, (probe, env) = pending.pop(0)
            work = tmp_path_factory.mktemp(name)
            full = {**base, **env, "ROPE_EVAL_COUNTS_DIR": str(work / "counts")}
            cmd = [sys.executable, str(PROBE), probe]
            running[name] = (subprocess.Popen(cmd, env=full, cwd=work, stdout=PIPE, stderr=PIPE), work)
        name, (proc, work) = next(iter(running.items()))
        del running[name]
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}: probe failed\n{stderr.decode()[-3000:]}"
        out[name] = json.loads(stdout.decode().strip().splitlines()[-1]) | {"counts_dir": work / "counts"}
    return out


def test_dense_model_dp_rank_comes_from_the_engine_config(probes: dict[str, dict]) -> None:
    """vLLM serves a dense model's DP ranks as independent engines, each in a DP group of one: the group
    says dp0 in every engine (seen on two H200s: both DP engines reported dp0 and the arm failed). The
    engine config's data_parallel_index names the rank."""
    got = probes["dp-index"]
    assert got["group_dp"] == 0 and got["from_group_alone"] == "tp0/pp0/dp0"
    assert got["identity"] == "tp0/pp0/dp1"


@pytest.mark.parametrize("path", SPIED)
def test_plugin_load_never_touches_cuda(probes: dict[str, dict], path: str) -> None:
    """No torch.cuda call, no pinned allocation from rope-eval's code at import or register(): vLLM may fork
    its engine afterwards, and pinned memory creates a CUDA context behind torch.cuda.is_initialized()."""
    probe = probes[f"cuda-spy-{path}"]
    assert probe["ours"] == [], f"rope-eval touched CUDA at plugin load: {probe['ours']}"
    assert probe["cuda_initialized"] is False


def test_forked_child_counts_on_its_own(probes: dict[str, dict]) -> None:
    probe = probes["fork"]
    assert probe["child_exit"] == 0
    read = read_counts(probe["counts_dir"], instance="fork-test")
    by_pid = {r.pid: r.counts for r in read}
    # the child's flush thread restarted and its counters started from zero: not the parent's 1 + its 3
    assert by_pid == {probe["parent"]: {"native": 1}, probe["child"]: {"native": 3}}


def test_triton_fallback_counts_under_its_own_name_and_fails(probes: dict[str, dict]) -> None:
    probe = probes["triton"]
    assert probe["without_interpreter"] == {"triton(fallback:native)": 1}
    assert probe["with_interpreter"] == {"triton": 1}
    v = verify("triton", read_counts(probe["counts_dir"]))
    assert v.failed and "fell back: triton(fallback:native)" in " ".join(v.problems)


def test_coverage_finds_the_unswitched_layer_and_counts_it(probes: dict[str, dict]) -> None:
    probe = probes["triton"]["coverage"]
    assert probe["coverage"] == {
        "role": "target",
        "architecture": "Model",
        "sites": 3,  # the shared instance counts once per layer that holds it
        "classes": {"RopeEvalRotaryEmbedding": 2, "DeepseekScalingRotaryEmbedding": 1},
        "unswitched": {"layers.2.rotary_emb": "DeepseekScalingRotaryEmbedding"},
    }
    assert probe["counts"] == {"triton": 2, "unswitched:DeepseekScalingRotaryEmbedding": 1}


# ---- custom: targets fail fast, in the harness


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "rope_eval_custom_probe.py").write_text(
        "def good(positions, query, key, head_size, cos_sin_cache, is_neox):\n    pass\n"
        "def too_few(positions, query, key):\n    pass\n"
        "def extra_required(positions, query, key, head_size, cos_sin_cache, is_neox, scale):\n    pass\n"
        "def ascend_style(q, k, cos=None, sin=None, cos_sin_cache=None, positions=None, rope_dim=-1):\n"
        "    pass\n"
        "def varargs(*args):\n    pass\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "rope_eval_custom_probe"


def test_check_path_accepts_kernel_signatures(custom_module: str) -> None:
    assert check_path(f"custom:{custom_module}:good").function == "good"
    assert check_path(f"custom:{custom_module}:varargs").function == "varargs"
    assert check_path("custom:eval_harness.selftest.bugs:key_off_by_one").kind == "custom"
    assert check_path("triton").kind == "triton"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("too_few", r"too_few\(positions, query, key\) cannot be called as the kernel"),
        ("extra_required", "missing a required argument: 'scale'"),
        ("ascend_style", r"does not have the kernel signature \(positions, query, key, head_size"),
        ("NOT_CALLABLE", "has no callable 'NOT_CALLABLE'"),
        ("absent", "has no callable 'absent'"),
    ],
)
def test_check_path_rejects_bad_targets(custom_module: str, target: str, message: str) -> None:
    with pytest.raises(PathError, match=message):
        check_path(f"custom:{custom_module}:{target}")


def test_check_path_rejects_missing_modules_and_bad_names() -> None:
    with pytest.raises(PathError, match="cannot import module 'no_such_module_xyz'"):
        check_path("custom:no_such_module_xyz:fn")
    with pytest.raises(PathError, match="expected custom:<module>:<function>"):
        check_path("custom:only_module")
