"""L0: the fused split + q/k RMSNorm + RoPE kernel against unfused RMSNorm and float64 RoPE.

Device-agnostic like test_kernel_rope.py: compiled on CUDA, the Triton interpreter on CPU.
"""

from __future__ import annotations

import pytest
import torch

from eval_harness.kernels.fused import (
    rms_norm_native,
    split_qkv_rmsnorm_rope,
    split_qkv_rmsnorm_rope_native,
)
from eval_harness.kernels.reference import cos_sin_cache, rotary_embedding_f64

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


@pytest.fixture(autouse=True, scope="module")
def _interpreter_on_cpu():
    with pytest.MonkeyPatch.context() as mp:
        if DEVICE.type == "cpu":
            mp.setenv("TRITON_INTERPRET", "1")
        yield


def _normed(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, head_size: int) -> torch.Tensor:
    """Unfused reference intermediate: vLLM's RMSNorm per head, then the bias in the storage dtype."""
    z = rms_norm_native(x.reshape(x.shape[0], -1, head_size), w, 1e-6)
    return (z if b is None else z + b.to(z.dtype)).reshape(x.shape)


def check_fused(
    tokens: int,
    q_heads: int,
    kv_heads: int,
    head_size: int,
    rot_dim: int,
    is_neox: bool,
    dtype: torch.dtype,
    *,
    bias: str = "none",
    weight_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    q_size, kv_size = q_heads * head_size, kv_heads * head_size
    qkv = (3 * torch.randn(tokens, q_size + 2 * kv_size, generator=gen)).to(DEVICE, dtype)
    w_dtype = weight_dtype or dtype
    q_w, k_w = ((1 + 0.3 * torch.randn(head_size, generator=gen)).to(DEVICE, w_dtype) for _ in range(2))
    q_b = torch.randn(head_size, generator=gen).to(DEVICE, dtype) if bias in ("q", "both") else None
    k_b = torch.randn(head_size, generator=gen).to(DEVICE, dtype) if bias == "both" else None
    cache = cos_sin_cache(32768, rot_dim, 1e6, torch.float32, DEVICE)
    positions = torch.randint(0, 32768, (tokens,), generator=gen).to(DEVICE)
    kwargs = dict(
        q_size=q_size,
        kv_size=kv_size,
        head_size=head_size,
        eps=1e-6,
        cos_sin_cache=cache,
        positions=positions,
        is_neox=is_neox,
        q_bias=q_b,
        k_bias=k_b,
    )
    before = qkv.clone()

    q, k, v = split_qkv_rmsnorm_rope(qkv, q_w, k_w, **kwargs)

    assert torch.equal(qkv, before)
    assert q.shape == (tokens, q_size) and k.shape == (tokens, kv_size) and q.is_contiguous()
    assert (
        torch.equal(v, qkv[:, q_size + kv_size :]) and v.data_ptr() == qkv[:, q_size + kv_size :].data_ptr()
    )
    if tokens == 0:
        return
    z_q = _normed(qkv[:, :q_size], q_w, q_b, head_size)
    z_k = _normed(qkv[:, q_size : q_size + kv_size], k_w, k_b, head_size)
    ref_q, ref_k = rotary_embedding_f64(positions, z_q, z_k, head_size, cache, is_neox)
    # The kernel's normalised intermediate, rounded to the storage dtype like the unfused path's,
    # can differ from torch's by an ulp or two (fp32 sum order; the interpreter also rounds
    # fp32 -> bf16 toward zero), and RoPE mixes two such values: 4 ulps of the largest output.
    for out, ref in ((q, ref_q), (k, ref_k)):
        ref = ref.to(DEVICE)
        tol = EPS[dtype] * ref.abs() + 4 * EPS[dtype] * ref.abs().max()
        err = (out.double() - ref).abs()
        assert torch.isfinite(out).all()
        assert (err <= tol).all(), f"max err {err.max().item():.3g}"
    # And against the unfused native path itself (its RoPE rounds in the storage dtype: looser).
    nat_q, nat_k, _ = split_qkv_rmsnorm_rope_native(qkv, q_w, k_w, **kwargs)
    for out, nat in ((q, nat_q), (k, nat_k)):
        torch.testing.assert_close(
            out, nat, rtol=4 * EPS[dtype], atol=8 * EPS[dtype] * nat.abs().max().item()
        )


MODELS = {
    "qwen3": (32, 8, 128, 128, True),
    "glm4-0414": (32, 2, 128, 64, False),
    "glm4.5": (24, 4, 128, 64, True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("model", MODELS)
def test_model_shapes(model: str, dtype: torch.dtype) -> None:
    check_fused(5, *MODELS[model], dtype)


@pytest.mark.parametrize("bias", ["q", "both"])
@pytest.mark.parametrize("model", ["qwen3", "glm4-0414"])
def test_bias(model: str, bias: str) -> None:
    check_fused(3, *MODELS[model], torch.bfloat16, bias=bias)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize(("head_size", "rot_dim"), [(64, 64), (80, 48), (128, 96), (256, 128), (256, 256)])
def test_head_and_rotary_sizes(head_size: int, rot_dim: int, is_neox: bool) -> None:
    check_fused(3, 4, 2, head_size, rot_dim, is_neox, torch.float32, bias="both")


@pytest.mark.parametrize("tokens", [0, 1, 6])
def test_token_counts(tokens: int) -> None:
    check_fused(tokens, 8, 2, 128, 128, True, torch.bfloat16)


def test_fp32_weights_with_bf16_storage() -> None:
    check_fused(3, 4, 2, 128, 64, True, torch.bfloat16, weight_dtype=torch.float32)


def test_strided_qkv_rows() -> None:
    """qkv as a column slice of a wider buffer (row stride != width), as a fused GEMM output may be."""
    wide = torch.randn(4, 8 * 128 + 100, device=DEVICE)
    qkv = wide[:, : 8 * 128]
    w = torch.ones(128, device=DEVICE)
    cache = cos_sin_cache(64, 128, device=DEVICE)
    kwargs = dict(q_size=4 * 128, kv_size=2 * 128, head_size=128, eps=1e-6, cos_sin_cache=cache, is_neox=True)
    positions = torch.tensor([0, 1, 2, 63], device=DEVICE)
    q, k, _ = split_qkv_rmsnorm_rope(qkv, w, w, positions=positions, **kwargs)
    nat_q, nat_k, _ = split_qkv_rmsnorm_rope_native(qkv.contiguous(), w, w, positions=positions, **kwargs)
    torch.testing.assert_close(q, nat_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, nat_k, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def vllm_rms_norm():
    return pytest.importorskip("vllm.ir.ops.layernorm").rms_norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_native_rms_norm_is_vllm(vllm_rms_norm, dtype: torch.dtype) -> None:
    """The unfused reference normalises exactly as vLLM's RMSNorm (Qwen3's q_norm/k_norm)."""
    x = torch.randn(5, 4, 128, device=DEVICE).to(dtype)
    w = torch.randn(128, device=DEVICE).to(dtype)
    assert torch.equal(rms_norm_native(x, w, 1e-6), vllm_rms_norm(x, w, 1e-6))


# ---- the benchmark's fused section, on the CPU through the interpreter (timings meaningless here) -----


def test_bench_fused_section_checks_every_impl_against_float64() -> None:
    from eval_harness.kernels import bench

    shape = bench.QUICK_SHAPES[0]
    results = bench.run([shape], DEVICE, [], None, section="fused")
    by_impl = {r.impl: r for r in results}
    assert {"copy floor", bench.FUSED, bench.UNFUSED[1]} <= set(by_impl)
    assert all(r.section == "fused" and r.us > 0 for r in results)
    # bf16 storage: the fused kernel and the unfused baseline both land within bf16 rounding of float64
    for name in (bench.FUSED, bench.UNFUSED[1]):
        assert by_impl[name].rel_err is not None and by_impl[name].rel_err < 1e-2, name
    assert set(bench.fused_speedups(results)) == {shape.name}


def test_bench_fused_floor_counts_the_bytes_the_prologue_moves() -> None:
    from eval_harness.kernels.bench import Shape, fused_floor_elements

    shape = Shape("s", tokens=4, q_heads=4, kv_heads=2, head_size=128, rot_dim=64, is_neox=True)
    # q and k read and written whole (2 * 4 * 6 * 128), cos/sin rows read (4 * 64); a copy moves twice
    assert fused_floor_elements(shape) == (2 * 4 * 6 * 128 + 4 * 64) // 2


def test_bench_main_runs_both_sections(tmp_path) -> None:
    import json

    from eval_harness.kernels import bench

    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--only", "copy floor", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert {r["section"] for r in record["results"]} == {"rope", "fused"}
    # against native's bf16 RoPE (rounded in bf16): the tolerance check_fused allows against it
    assert record["fused_max_rel_diff_vs_native"] < 8 * EPS[torch.bfloat16]
