"""The `fused` path through real vLLM (CPU, fp32): our fused split + q/k RMSNorm + RoPE kernel in place of
Qwen3's attention prologue, counted, agreeing with native and triton within rounding; planted fused bugs
moving the logprobs far beyond it; a model without QK norm refused at start-up.

Served on the committed toy models (`eval_harness/toy/weights`), not the random tiny ones: a freshly
initialised checkpoint has all-ones q_norm and k_norm weights, under which a norm moved past RoPE or k
normalised with q's weight changes nothing (RoPE keeps each head's RMS), so those bugs, and a kernel that
ignored the weights, would pass unseen. The toys' trained weights differ per channel, as a real
checkpoint's do. One server runs at a time; each is stopped before the next starts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from eval_harness.engine.client import Client, Request, Result, Sampling
from eval_harness.engine.server import ServerError, ServerSpec, VllmServer
from eval_harness.paths import parse_path
from eval_harness.plugin.counters import FLUSH_SECONDS
from eval_harness.proof import read_counts, total_counts
from eval_harness.toy import weights_dir

TARGET, DRAFT, NO_QK_NORM = "qwen3-toy", "qwen3-toy-eagle3", "glm4-toy"
EAGER = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "4"]
COMPILED = ["--dtype", "float32", "--max-model-len", "2048", "--max-num-seqs", "4"]
BUGS = "custom-fused:eval_harness.selftest.fused_bugs:"
PROMPTS = [
    "12+34=",
    "Q: 7*8? A:",
    "The train leaves at 7:45 in the morning and arrives at 11:20. " * 8,  # ~150 positions
]
# fp32 end to end; the fused kernel sums squares in another order than torch's RMSNorm and rotates in
# one fp32 expression: logprobs move by ~1e-6. 1e-4 is rounding with a wide margin.
LOGPROB_ATOL = 1e-4
# A planted bug must move some teacher-forced logprob by at least 100x the rounding tolerance.
BUG_MIN_DELTA = 100 * LOGPROB_ATOL


@dataclass
class Served:
    path: str
    greedy: list[Result]
    forced: list[Result]  # teacher-forced: max_tokens=1 over each prompt, one request at a time
    forced_counts: dict[str, int]  # counts added by the teacher-forced requests alone
    counts: dict[str, int]  # all counts of the server's life


def _run(url: str, model: str, requests: list[Request], concurrency: int) -> list[Result]:
    async def go() -> list[Result]:
        async with Client(url, model, concurrency=concurrency) as c:
            return [r for r in await asyncio.gather(*(c.generate(q) for q in requests))]

    return asyncio.run(go())


def _counts(server: VllmServer) -> dict[str, int]:
    time.sleep(3 * FLUSH_SECONDS)  # every process's writer has flushed
    return total_counts(read_counts(server.spec.counts_dir))


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _spec(run_dir: Path, model: str, path: str, args: list[str], draft: str | None = None) -> ServerSpec:
    serve_args = [*args, "--served-model-name", model]
    if draft:
        spec_cfg = {"method": "eagle3", "model": str(weights_dir(draft)), "num_speculative_tokens": 3}
        serve_args += ["--speculative-config", json.dumps(spec_cfg)]
    return ServerSpec(
        model=str(weights_dir(model)),
        path=parse_path(path),
        log_file=run_dir / "server.log",
        counts_dir=run_dir / "counts",
        serve_args=serve_args,
        startup_timeout=600,
    )


def serve_and_measure(run_dir: Path, path: str, args: list[str], draft: str | None = None) -> Served:
    server = VllmServer(_spec(run_dir, TARGET, path, args, draft))
    server.start()
    try:
        greedy = _run(server.url, TARGET, [_greedy(i, p) for i, p in enumerate(PROMPTS)], concurrency=4)
        before = _counts(server)
        forced = [_run(server.url, TARGET, [_forced(i, p)], concurrency=1)[0] for i, p in enumerate(PROMPTS)]
        after = _counts(server)
    finally:
        server.stop()
    return Served(path, greedy, forced, _delta(after, before), after)


def _greedy(i: int, prompt: str) -> Request:
    return Request(f"g{i}", Sampling(max_tokens=16, logprobs=5), prompt=prompt)


def _forced(i: int, prompt: str) -> Request:
    return Request(f"f{i}", Sampling(max_tokens=1), prompt=prompt, prompt_logprobs=1)


def forced_logprobs(served: Served) -> list[list[float]]:
    """Per prompt, the logprob of each actual next token (positions 1..n-1)."""
    out = []
    for r in served.forced:
        ids, steps = r.prompt_token_ids, r.prompt_logprobs
        out.append([steps[i][ids[i]] for i in range(1, len(ids))])
    return out


def max_forced_delta(a: Served, b: Served) -> float:
    return max(
        abs(x - y)
        for pa, pb in zip(forced_logprobs(a), forced_logprobs(b), strict=True)
        for x, y in zip(pa, pb, strict=True)
    )


def num_layers(model: str) -> int:
    return json.loads((weights_dir(model) / "config.json").read_text())["num_hidden_layers"]


@pytest.fixture(scope="module")
def measure(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Served]:
    """`measure(path, args=EAGER, draft=None)`: serve the target once per (path, args, draft), measure it,
    stop it."""
    done: dict[tuple, Served] = {}

    def get(path: str, args: list[str] = EAGER, draft: str | None = None) -> Served:
        key = (path, tuple(args), draft)
        if key not in done:
            run_dir = tmp_path_factory.mktemp("fused-" + path.replace(":", "_"))
            done[key] = serve_and_measure(run_dir, path, args, draft)
        return done[key]

    return get


@pytest.mark.vllm
def test_fused_agrees_with_native_and_triton(measure) -> None:
    native, triton, fused = measure("native"), measure("triton"), measure("fused")
    for other in (triton, fused):
        for a, b in zip(native.greedy, other.greedy, strict=True):
            assert a.token_ids == b.token_ids, f"greedy output differs between native and {other.path}"
        delta = max_forced_delta(native, other)
        print(f"native vs {other.path}: max |d logprob| {delta:.2e}")
        assert delta < LOGPROB_ATOL, f"{other.path}: teacher-forced logprobs moved by {delta:.2e}"


@pytest.mark.vllm
def test_fused_counts_prove_every_layer_ran_fused(measure) -> None:
    """One `fused` call per attention layer per forward pass, nothing else: no fallback, no native RoPE."""
    native, fused = measure("native"), measure("fused")
    passes = len(PROMPTS)  # each teacher-forced request is one prefill, alone in its batch
    assert fused.forced_counts == {"fused": num_layers(TARGET) * passes}
    assert set(fused.counts) == {"fused"}
    assert native.forced_counts == {"native": num_layers(TARGET) * passes}  # the same number of RoPE sites


@pytest.mark.vllm
@pytest.mark.parametrize("bug", ["norm_after_rope", "k_norm_uses_q_weight", "gqa_k_offset"])
def test_fused_planted_bug_moves_logprobs_far_beyond_rounding(measure, bug: str) -> None:
    native, broken = measure("native"), measure(BUGS + bug)
    assert set(broken.counts) == {BUGS + bug}, "the planted bug must be what ran"
    assert broken.forced_counts[BUGS + bug] == num_layers(TARGET) * len(PROMPTS)
    delta = max_forced_delta(native, broken)
    print(f"native vs {bug}: max |d logprob| {delta:.2e}")
    assert delta > BUG_MIN_DELTA, f"{bug}: teacher-forced logprobs moved only {delta:.2e}"


@pytest.mark.vllm
def test_fused_compiled_with_eagle3_draft(measure) -> None:
    """Under torch.compile the op still runs (and counts) in every target layer; the eagle3 draft, which has
    no QK norm, runs vLLM's native RoPE, counted under its own name; the target's outputs are unchanged."""
    native, fused = measure("native"), measure("fused", COMPILED, DRAFT)
    assert set(fused.counts) == {"fused", "fused/rope:native"}, fused.counts
    assert fused.forced_counts["fused"] == num_layers(TARGET) * len(PROMPTS)
    assert fused.counts["fused/rope:native"] > 0
    for a, b in zip(native.greedy, fused.greedy, strict=True):
        assert a.token_ids == b.token_ids, "greedy output differs between native and compiled fused + draft"
    delta = max_forced_delta(native, fused)
    print(f"native (eager) vs fused (compiled, draft): max |d logprob| {delta:.2e}; counts {fused.counts}")
    assert delta < LOGPROB_ATOL


@pytest.mark.vllm
def test_fused_refuses_a_model_without_qk_norm(tmp_path: Path) -> None:
    """GLM-4-0414 has no q_norm/k_norm: `fused` must fail at start-up, not serve something else."""
    server = VllmServer(_spec(tmp_path, NO_QK_NORM, "fused", EAGER))
    with pytest.raises(ServerError, match="exited with code") as info:
        server.start()
    assert "no split + q/k RMSNorm + RoPE prologue to fuse" in str(info.value)
    assert server.proc is None


# ---- without a server: path names, the planted bugs' math, the op -------------------------------------


def test_fused_path_names_parse() -> None:
    from eval_harness.paths import PathError

    assert parse_path("fused").kind == "fused" and parse_path("fused").fused
    spec = parse_path("custom-fused:pkg.mod:fn")
    assert (spec.kind, spec.module, spec.function) == ("custom-fused", "pkg.mod", "fn")
    assert spec.name == "custom-fused:pkg.mod:fn" and spec.fused
    assert not parse_path("custom:pkg.mod:fn").fused
    with pytest.raises(PathError, match="expected custom-fused:<module>:<function>"):
        parse_path("custom-fused:only_module")


def _prologue_inputs(unit_weights: bool = False, seed: int = 0) -> tuple:
    import torch

    from eval_harness.kernels.reference import cos_sin_cache

    gen = torch.Generator().manual_seed(seed)
    heads, kv_heads, head_size = 4, 2, 128
    qkv = 3 * torch.randn(5, (heads + 2 * kv_heads) * head_size, generator=gen, dtype=torch.float64).float()
    if unit_weights:
        q_w = k_w = torch.ones(head_size)
    else:
        q_w, k_w = (1 + 0.3 * torch.randn(head_size, generator=gen) for _ in range(2))
    kw = dict(
        q_size=heads * head_size,
        kv_size=kv_heads * head_size,
        head_size=head_size,
        eps=1e-6,
        cos_sin_cache=cos_sin_cache(4096, head_size, 1e6),
        positions=torch.tensor([0, 1, 7, 300, 4095]),
        is_neox=True,
    )
    return qkv, q_w, k_w, kw


@pytest.mark.parametrize("bug", ["norm_after_rope", "k_norm_uses_q_weight", "gqa_k_offset"])
def test_each_fused_bug_breaks_its_one_thing(bug: str) -> None:
    import torch

    from eval_harness.kernels.fused import split_qkv_rmsnorm_rope_native
    from eval_harness.selftest import fused_bugs

    qkv, q_w, k_w, kw = _prologue_inputs()
    ref = split_qkv_rmsnorm_rope_native(qkv, q_w, k_w, **kw)
    got = getattr(fused_bugs, bug)(qkv, q_w, k_w, **kw)
    assert torch.equal(got[2], ref[2]), "v is never the bug"
    q_ok, k_ok = torch.allclose(got[0], ref[0]), torch.allclose(got[1], ref[1])
    # norm_after_rope breaks q and k, the other two k only
    assert (q_ok, k_ok) == ((False, False) if bug == "norm_after_rope" else (True, False))
    control = fused_bugs.control_fused_reference(qkv, q_w, k_w, **kw)
    assert all(torch.equal(a, b) for a, b in zip(control, ref, strict=True))


@pytest.mark.parametrize("bug", ["norm_after_rope", "k_norm_uses_q_weight"])
def test_weight_bugs_are_invisible_under_unit_norm_weights(bug: str) -> None:
    """Why the served tests use trained toys: with all-ones q/k norm weights these bugs change nothing."""
    import torch

    from eval_harness.kernels.fused import split_qkv_rmsnorm_rope_native
    from eval_harness.selftest import fused_bugs

    qkv, q_w, k_w, kw = _prologue_inputs(unit_weights=True)
    ref = split_qkv_rmsnorm_rope_native(qkv, q_w, k_w, **kw)
    got = getattr(fused_bugs, bug)(qkv, q_w, k_w, **kw)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_op_is_opaque_to_torch_compile_and_matches_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """The served op under a fullgraph compile: its fake gives the shapes, its body runs the Triton kernel
    (the interpreter here), and the result is the unfused math within fp32 rounding."""
    import torch

    from eval_harness.kernels.fused import split_qkv_rmsnorm_rope_native
    from eval_harness.plugin import fused  # noqa: F401  (defines rope_eval::fused_qkv_norm_rope)

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    qkv, q_w, k_w, kw = _prologue_inputs()

    def prologue(qkv, q_w, k_w, positions, cache):
        args = (kw["q_size"], kw["kv_size"], kw["head_size"], kw["eps"], kw["is_neox"], "fused")
        return torch.ops.rope_eval.fused_qkv_norm_rope(qkv, q_w, k_w, positions, cache, *args)

    compiled = torch.compile(prologue, fullgraph=True, backend="aot_eager")
    q, k = compiled(qkv, q_w, k_w, kw["positions"], kw["cos_sin_cache"])
    ref_q, ref_k, _ = split_qkv_rmsnorm_rope_native(qkv, q_w, k_w, **kw)
    torch.testing.assert_close(q, ref_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, ref_k, rtol=1e-5, atol=1e-5)


def test_fused_op_counts_a_fallback_under_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Triton cannot launch the op runs the unfused math and says so in the name it counts."""
    import torch

    from eval_harness.plugin import fused

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ran, fn = fused._resolve("fused", torch.device("cpu"))
    assert ran == "fused(fallback:native)" and fn.__name__ == "split_qkv_rmsnorm_rope_native"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ran, fn = fused._resolve("fused", torch.device("cpu"))
    assert ran == "fused" and fn.__name__ == "split_qkv_rmsnorm_rope_triton"


def test_a_fused_path_accepts_its_plain_rope_layers_but_never_its_fallback() -> None:
    from eval_harness.paths import accepted_counts

    assert accepted_counts("fused") == {"fused", "fused/rope:native"}
    assert "fused(fallback:native)" not in accepted_counts("fused")
    assert accepted_counts("custom-fused:m:f") == {"custom-fused:m:f", "custom-fused:m:f/rope:native"}
    assert accepted_counts("triton") == {"triton"}
