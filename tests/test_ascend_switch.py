"""The Ascend switch (`eval_harness/plugin/ascend.py`) against a FAKE vllm-ascend (tests/fakes/).

vllm-ascend needs Ascend hardware, so tests/fakes/vllm_ascend stands in for it: the same
`rope_forward_oot` signature and `HAS_TRITON` global as vllm-ascend 0.23, and the same import-time
binding of that function into `torch.ops.vllm.npu_rotary_embedding`. Each scenario runs
tests/fakes/ascend_probe.py in its own process (the plugin registers once per process, as in vLLM),
with the fake on PYTHONPATH and ROPE_EVAL_PATH set; all scenarios run concurrently.

The probe reaches RoPE both ways vllm-ascend does: `module` (the module attribute, looked up at call
time) and `op` (the torch op `AscendRotaryEmbedding.forward_oot` calls), each with the fake's
HAS_TRITON true and false. Every call must run the requested implementation (for `platform`,
vllm-ascend's own branch that HAS_TRITON selects), match a float64 reference, and bump only that
implementation's counter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval_harness.plugin.ascend import REFERENCE_FALLBACK
from eval_harness.proof import read_counts, total_counts

ROOT = Path(__file__).resolve().parents[1]
FAKES = ROOT / "tests" / "fakes"
FORMS = ("qwen3", "glm4-0414", "glm45")  # full neox; partial GPT-J; partial neox
TOL = 1e-5  # fp32 rounding against the float64 reference is ~2e-7 here

# scenario -> (ROPE_EVAL_PATH, fake rope_forward_oot signature: vllm-ascend 0.23, or main with out_dtype)
SCENARIOS = {
    "triton": ("triton", "0.23"),
    "native": ("native", "0.23"),
    "platform-0.23": ("platform", "0.23"),
    "platform-main": ("platform", "main"),
    "reference": ("reference", "0.23"),
}
PARALLEL = 2  # each probe imports vLLM (the plugin hooks its model loader): ~30 s of CPU


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every scenario's probe output, plus the counts its process left in ROPE_EVAL_COUNTS_DIR."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ROPE_EVAL_", "FAKE_VLLM_ASCEND_"))}
    base["PYTHONPATH"] = os.pathsep.join([str(FAKES), str(ROOT)])
    base["TRITON_INTERPRET"] = "1"  # the triton path runs rope-eval's kernel through the interpreter
    pending, running, out = list(SCENARIOS.items()), {}, {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            name, (path, signature) = pending.pop(0)
            work = tmp_path_factory.mktemp(name)
            env = dict(base, ROPE_EVAL_PATH=path, ROPE_EVAL_COUNTS_DIR=str(work / "counts"))
            env["FAKE_VLLM_ASCEND_SIGNATURE"] = signature
            proc = subprocess.Popen(
                [sys.executable, str(FAKES / "ascend_probe.py")],
                env=env,
                cwd=work,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            running[name] = (proc, work)
        name, (proc, work) = next(iter(running.items()))
        del running[name]
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}: probe failed\n{stderr[-3000:]}"
        out[name] = json.loads(stdout.strip().splitlines()[-1])
        out[name]["counts_file_total"] = total_counts(read_counts(work / "counts"))
    return out


def _expected(scenario: str, has_triton: bool) -> tuple[str, dict[str, int]]:
    """The implementation that must be counted, and the fake's branch calls it must cause."""
    path, _ = SCENARIOS[scenario]
    if path == "reference":
        # These calls pass a bare cache, no module the plugin saw loaded: vllm-ascend's values, upcast,
        # counted apart so that the arm fails verification (module_route below is the real case).
        return REFERENCE_FALLBACK, {}
    return path, ({("triton" if has_triton else "npu"): 1} if path == "platform" else {})


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_register_wraps_rope_forward_oot(probes: dict[str, dict], scenario: str) -> None:
    probe = probes[scenario]
    assert probe["register_error"] is None, probe["register_error"]
    assert probe["patched"]


def _cases() -> list:
    # "op": through torch.ops.vllm.npu_rotary_embedding, as AscendRotaryEmbedding calls it;
    # "module": through the module attribute, as its key=None branch does.
    return [pytest.param(s, r, id=f"{s}-{r}") for s in SCENARIOS for r in ("module", "op")]


@pytest.mark.parametrize(("scenario", "route"), _cases())
def test_route_runs_requested_path(probes: dict[str, dict], scenario: str, route: str) -> None:
    records = [r for r in probes[scenario]["results"] if r["route"] == route]
    assert {(r["form"], r["has_triton"]) for r in records} == {(f, t) for f in FORMS for t in (True, False)}
    for rec in records:
        impl, original_calls = _expected(scenario, rec["has_triton"])
        where = f"{rec['form']} with HAS_TRITON={rec['has_triton']}"
        assert rec["error"] is None, f"{where}: {rec['error']}"
        assert rec["max_err"] < TOL, f"{where}: max |err| {rec['max_err']}"
        assert rec["counts"] == {impl: 1}, f"{where}: rope-eval counts {rec['counts']}"
        assert rec["fake_calls"] == original_calls, f"{where}: vllm-ascend's own RoPE ran {rec['fake_calls']}"


def test_triton_path_launches_the_kernel(probes: dict[str, dict]) -> None:
    probe = probes["triton"]
    assert not probe["triton_fell_back"], "the kernel fell back to torch: the triton arm ran native math"
    assert probe["counts_total"].get("triton", 0) > 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_counts_file_holds_the_process_counts(probes: dict[str, dict], scenario: str) -> None:
    """What the harness reads from ROPE_EVAL_COUNTS_DIR is what the process counted, for one path."""
    probe = probes[scenario]
    impl = SCENARIOS[scenario][0]
    assert probe["counts_file_total"] == probe["counts_total"]
    expected = {impl, REFERENCE_FALLBACK} if impl == "reference" else {impl}
    assert set(probe["counts_total"]) == expected


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_module_route_is_switched_and_counted(probes: dict[str, dict], scenario: str) -> None:
    """Through an AscendRotaryEmbedding module: the coverage walk counts it as switched, and its call counts
    as the path (for `platform`, vllm-ascend's own code ran)."""
    route = probes[scenario]["module"]
    assert route["switched"] is True
    assert route["counts"] == {SCENARIOS[scenario][0]: 1}


def test_reference_rebuilds_the_cache_of_a_seen_module(probes: dict[str, dict]) -> None:
    """vllm-ascend's cache for a bf16 model is rounded to bf16 (errors ~1e-2 on q and k); the reference path
    rebuilds it from the module's base and rotary_dim, so it lands on the float64 result."""
    route = probes["reference"]["module"]
    assert route["counts"] == {"reference": 1}
    assert route["max_err"] < TOL, route["max_err"]
    assert probes["triton"]["module"]["max_err"] > 1e-3  # the same call on vllm-ascend's own cache
