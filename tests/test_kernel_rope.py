"""L0: the Triton RoPE kernel against the float64 reference, and the native path against vLLM.

Device-agnostic: on a CUDA machine the kernels compile for real; elsewhere they run on CPU through
the Triton interpreter (TRITON_INTERPRET=1, set for this module by the fixture below, which the
kernels read at their first launch).
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eval_harness.kernels.reference import (
    cos_sin_cache,
    rope_native,
    rotary_embedding_f64,
    rotary_embedding_native,
)
from eval_harness.kernels.rope import rope_forward_triton, rotary_embedding

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
BIG_CACHE = 131072  # positions up to 131071

# Output tolerance relative to |ref|: the kernel computes in fp32 and rounds once to the storage
# dtype, so |out - ref| <= 1 ulp <= eps * |ref| (0.5 ulp with round-to-nearest on GPUs; the Triton
# interpreter rounds fp32 -> bf16 toward zero, up to 1 ulp). The absolute term covers fp32
# arithmetic error near zero outputs (cancellation in x1*cos - x2*sin): a few 2^-24 of the largest
# output, taken as 2^-18 for margin.
EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


@pytest.fixture(autouse=True, scope="module")
def _interpreter_on_cpu():
    with pytest.MonkeyPatch.context() as mp:
        if DEVICE.type == "cpu":
            mp.setenv("TRITON_INTERPRET", "1")
        yield


@functools.cache
def _cache(max_position: int, rot_dim: int, dtype: torch.dtype) -> torch.Tensor:
    return cos_sin_cache(max_position, rot_dim, 1e6, torch.float32, DEVICE).to(dtype)


def assert_rope_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    out, ref = out.double().reshape(ref.shape), ref.to(out.device)
    if ref.numel() == 0:
        return
    tol = EPS[dtype] * ref.abs() + 2.0**-18 * ref.abs().max()
    err = (out - ref).abs()
    assert torch.isfinite(out).all()
    assert (err <= tol).all(), f"max err {err.max().item():.3g}, worst excess {(err - tol).max().item():.3g}"


def make_qkv(
    tokens: int, q_heads: int, kv_heads: int, head_size: int, dtype: torch.dtype, layout: str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(qkv, q, k): q and k as vLLM hands them over, views into one fused projection tensor.

    "2d": `qkv.split` column slices [T, H*D] (row stride != H*D); "3d": [T, H, D] views of the same;
    "contiguous": separate contiguous [T, H, D] tensors (qkv is then only the v holder).
    """
    gen = torch.Generator().manual_seed(seed)
    q_size, kv_size = q_heads * head_size, kv_heads * head_size
    qkv = torch.randn(tokens, q_size + 2 * kv_size, generator=gen).to(DEVICE, dtype)
    q, k, _ = qkv.split([q_size, kv_size, kv_size], dim=-1)
    if layout == "3d":
        q, k = q.view(tokens, q_heads, head_size), k.view(tokens, kv_heads, head_size)
    elif layout == "contiguous":
        q = q.reshape(tokens, q_heads, head_size).clone()
        k = k.reshape(tokens, kv_heads, head_size).clone()
    return qkv, q, k


def check_rope(
    tokens: int,
    q_heads: int,
    kv_heads: int,
    head_size: int,
    rot_dim: int,
    is_neox: bool,
    dtype: torch.dtype,
    *,
    layout: str = "2d",
    cache_dtype: torch.dtype = torch.float32,
    max_position: int = 4096,
    with_key: bool = True,
    seed: int = 0,
) -> None:
    """Rotate in place and compare with float64; the pass-through part and v must stay bit-identical."""
    qkv, q, k = make_qkv(tokens, q_heads, kv_heads, head_size, dtype, layout, seed)
    key = k if with_key else None
    cache = _cache(max_position, rot_dim, cache_dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    positions = torch.randint(0, max_position, (tokens,), generator=gen)
    positions[: min(tokens, 2)] = torch.tensor([max_position - 1, 0])[: min(tokens, 2)]
    positions = positions.to(DEVICE)
    ref_q, ref_k = rotary_embedding_f64(positions, q, key, head_size, cache, is_neox)
    before_qkv, before_q, before_k = qkv.clone(), q.clone(), k.clone()

    assert rotary_embedding(positions, q, key, head_size, cache, is_neox) is None

    assert_rope_close(q, ref_q, dtype)
    heads_q = q.reshape(tokens, q_heads, head_size)
    assert torch.equal(heads_q[..., rot_dim:], before_q.reshape(tokens, q_heads, head_size)[..., rot_dim:])
    if with_key:
        assert_rope_close(k, ref_k, dtype)
    else:
        assert torch.equal(k, before_k)
    q_size, kv_size = q_heads * head_size, kv_heads * head_size
    assert torch.equal(qkv[:, q_size + kv_size :], before_qkv[:, q_size + kv_size :])  # v untouched


# (q_heads, kv_heads, head_size, rot_dim, is_neox) of the Qwen3, GLM-4-0414 and GLM-4.5 models
MODELS = {
    "qwen3": (32, 8, 128, 128, True),
    "glm4-0414": (32, 2, 128, 64, False),
    "glm4.5": (24, 4, 128, 64, True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["2d", "3d"])
@pytest.mark.parametrize("model", MODELS)
def test_model_shapes(model: str, layout: str, dtype: torch.dtype) -> None:
    check_rope(7, *MODELS[model], dtype, layout=layout, max_position=BIG_CACHE)


@pytest.mark.parametrize("cache_dtype", [torch.float32, "storage"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cache_in_storage_dtype(dtype: torch.dtype, cache_dtype: torch.dtype | str) -> None:
    # vLLM's forward_cuda hands the op a cache cast to the query dtype.
    check_rope(5, 8, 2, 128, 128, True, dtype, cache_dtype=dtype if cache_dtype == "storage" else cache_dtype)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize(
    ("head_size", "rot_dim"),
    [(64, 64), (64, 32), (80, 80), (80, 48), (128, 96), (128, 48), (256, 256), (256, 96)],
)
def test_head_and_rotary_sizes(head_size: int, rot_dim: int, is_neox: bool) -> None:
    check_rope(3, 4, 2, head_size, rot_dim, is_neox, torch.float32)
    check_rope(3, 4, 2, head_size, rot_dim, is_neox, torch.bfloat16, layout="3d")


@pytest.mark.parametrize("tokens", [0, 1, 3, 17])
def test_token_counts(tokens: int) -> None:
    check_rope(tokens, 4, 2, 128, 64, False, torch.bfloat16)


@pytest.mark.parametrize(("q_heads", "kv_heads"), [(64, 4), (32, 8), (32, 2), (1, 1), (5, 3)])
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_head_counts(q_heads: int, kv_heads: int, with_key: bool) -> None:
    check_rope(3, q_heads, kv_heads, 128, 128, True, torch.bfloat16, with_key=with_key)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_contiguous_inputs(is_neox: bool) -> None:
    check_rope(4, 8, 2, 128, 64, is_neox, torch.float16, layout="contiguous")


def test_int32_positions_and_strided_views() -> None:
    # positions as a strided int32 view; query with a non-unit element stride (taken through a copy).
    qkv, q, k = make_qkv(4, 4, 2, 64, torch.float32, "2d")
    positions = torch.arange(0, 40, 5, dtype=torch.int32, device=DEVICE)[::2]
    cache = _cache(64, 64, torch.float32)
    q_t = q.reshape(4, 4, 64).transpose(1, 2).contiguous().transpose(1, 2)  # stride(-1) == 4
    ref_q, ref_k = rotary_embedding_f64(positions, q_t, k, 64, cache, True)
    rotary_embedding(positions, q_t, k, 64, cache, True)
    assert_rope_close(q_t, ref_q, torch.float32)
    assert_rope_close(k, ref_k, torch.float32)


@pytest.mark.parametrize("form", ["cache", "gathered"])
def test_rope_forward_triton_wrapper(form: str) -> None:
    """vllm-ascend's call shape, with a cache + positions or with cos/sin already gathered per token."""
    _, q, k = make_qkv(5, 4, 2, 128, torch.bfloat16, "contiguous")
    cache = _cache(4096, 64, torch.float32)
    positions = torch.arange(5, device=DEVICE) * 97
    ref_q, ref_k = rotary_embedding_f64(positions, q, k, 128, cache, False)
    if form == "cache":
        kwargs = dict(cos_sin_cache=cache, positions=positions, rope_dim=64)
    else:
        cos, sin = cache[positions].chunk(2, dim=-1)
        kwargs = dict(cos=cos, sin=sin)
    out_q, out_k = rope_forward_triton(q, k, is_neox_style=False, **kwargs)
    assert out_q is q and out_k is k
    assert_rope_close(q, ref_q, torch.bfloat16)
    assert_rope_close(k, ref_k, torch.bfloat16)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    tokens=st.integers(1, 9),
    q_heads=st.integers(1, 12),
    kv_heads=st.integers(1, 4),
    head_size=st.sampled_from([32, 48, 64, 80, 96, 128, 160, 256]),
    rot_frac=st.sampled_from([1.0, 0.75, 0.5, 0.25]),
    is_neox=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    layout=st.sampled_from(["2d", "3d", "contiguous"]),
    with_key=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(
    tokens: int,
    q_heads: int,
    kv_heads: int,
    head_size: int,
    rot_frac: float,
    is_neox: bool,
    dtype: torch.dtype,
    layout: str,
    with_key: bool,
    seed: int,
) -> None:
    rot_dim = max(2, int(head_size * rot_frac) // 2 * 2)
    check_rope(
        tokens, q_heads, kv_heads, head_size, rot_dim, is_neox, dtype, layout=layout, with_key=with_key
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_native_inplace_matches_native(dtype: torch.dtype) -> None:
    _, q, k = make_qkv(6, 4, 2, 128, dtype, "2d")
    cache = _cache(4096, 64, dtype)
    positions = torch.tensor([0, 1, 7, 100, 4000, 4095], device=DEVICE)
    new_q, new_k = rope_native(positions, q, k, 128, cache, False)
    rotary_embedding_native(positions, q, k, 128, cache, False)
    assert torch.equal(q, new_q) and torch.equal(k, new_k)


@pytest.fixture(scope="module")
def vllm_config():
    pytest.importorskip("vllm")
    from vllm.config import VllmConfig, set_current_vllm_config

    with set_current_vllm_config(VllmConfig()):
        yield


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("head_size", "rot_dim", "is_neox"), [(128, 128, True), (128, 64, False), (128, 64, True)]
)
def test_native_is_vllm_forward_native(
    vllm_config, head_size: int, rot_dim: int, is_neox: bool, dtype
) -> None:
    """Our `native` path is vLLM's RotaryEmbedding.forward_native, bit for bit."""
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

    rope = RotaryEmbedding(head_size, rot_dim, 8192, 1e6, is_neox, dtype).to(DEVICE)
    _, q, k = make_qkv(5, 4, 2, head_size, dtype, "2d")
    positions = torch.tensor([0, 3, 777, 8000, 8191], device=DEVICE)
    want_q, want_k = rope.forward_native(positions, q, k)
    got_q, got_k = rope_native(positions, q, k, head_size, rope.cos_sin_cache, is_neox)
    assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k)
    # And vLLM's own cache builder is ours.
    assert torch.equal(cos_sin_cache(8192, rot_dim, 1e6, dtype).to(DEVICE), rope.cos_sin_cache)


@pytest.mark.parametrize(("rot_dim", "is_neox"), [(128, True), (64, False), (96, True)])
def test_kernel_matches_vllm_op(vllm_config, rot_dim: int, is_neox: bool) -> None:
    """Same results as the op we stand in for, vLLM's `_custom_ops.rotary_embedding`, on the layout
    vLLM's models pass ([T, H*D] column slices of qkv). Only 2-D: vLLM 0.32's CPU op mis-rotates
    [T, H, D] inputs (even contiguous ones) and, given [T, H, D] views of qkv, writes into v."""
    from vllm import _custom_ops as ops

    if not hasattr(torch.ops._C, "rotary_embedding"):
        pytest.skip("this vLLM build has no rotary_embedding op")
    _, q, k = make_qkv(6, 8, 2, 128, torch.float32, "2d")
    _, q2, k2 = make_qkv(6, 8, 2, 128, torch.float32, "2d")
    cache = _cache(4096, rot_dim, torch.float32)
    positions = torch.tensor([0, 9, 4095, 17, 2048, 1], device=DEVICE)
    ops.rotary_embedding(positions, q2, k2, 128, cache, is_neox)
    rotary_embedding(positions, q, k, 128, cache, is_neox)
    torch.testing.assert_close(q, q2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, k2, rtol=1e-5, atol=1e-5)


@gpu
@needs_cuda
@pytest.mark.parametrize("model", MODELS)
def test_prefill_sized_on_gpu(model: str) -> None:
    check_rope(4099, *MODELS[model], torch.bfloat16, max_position=BIG_CACHE, cache_dtype=torch.bfloat16)


@gpu
@needs_cuda
def test_out_of_range_position_is_nan_on_gpu() -> None:
    """No bound check (it would cost a sync): the bad token comes out NaN, the others stay right."""
    _, q, k = make_qkv(3, 4, 2, 128, torch.bfloat16, "2d")
    cache = _cache(64, 128, torch.float32)
    positions = torch.tensor([5, 64, 7], device=DEVICE)
    ref_q, _ = rotary_embedding_f64(positions.clamp(max=63), q, k, 128, cache, True)
    rotary_embedding(positions, q, k, 128, cache, True)
    assert torch.isnan(q[1]).all() and torch.isnan(k[1]).all()
    assert_rope_close(q[[0, 2]], ref_q[[0, 2]], torch.bfloat16)


@gpu
@needs_cuda
def test_cuda_graph_replay() -> None:
    _, q, k = make_qkv(64, 32, 8, 128, torch.bfloat16, "2d")
    cache = _cache(4096, 128, torch.bfloat16)
    positions = torch.randint(0, 4096, (64,), device=DEVICE)
    start_q, start_k = q.clone(), k.clone()
    ref_q, ref_k = rotary_embedding_f64(positions, q, k, 128, cache, True)
    rotary_embedding(positions, q, k, 128, cache, True)  # compile outside the capture
    q.copy_(start_q)
    k.copy_(start_k)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        rotary_embedding(positions, q, k, 128, cache, True)
    q.copy_(start_q)
    k.copy_(start_k)
    graph.replay()
    torch.cuda.synchronize()
    assert_rope_close(q, ref_q, torch.bfloat16)
    assert_rope_close(k, ref_k, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("rot_dim", "is_neox"), [(128, True), (64, False), (96, True)])
def test_reference_rounds_once_from_an_exact_cache(dtype: torch.dtype, rot_dim: int, is_neox: bool) -> None:
    """The `reference` path equals float64 RoPE from float64 cos/sin, rounded once; and it is closer to
    that truth than vLLM's native math, which uses a cache rounded to the storage dtype."""
    from eval_harness.kernels.reference import reference_cos_sin_cache, rotary_embedding_reference

    inv_freq = 1.0 / (1e6 ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim))
    exact = reference_cos_sin_cache(inv_freq, 4096, DEVICE)
    assert exact.dtype == torch.float64
    _, q, k = make_qkv(64, 4, 2, 128, dtype, "2d")
    positions = torch.randint(0, 4096, (64,), device=DEVICE)
    want_q, want_k = rotary_embedding_f64(positions, q, k, 128, exact, is_neox)
    native_q, _ = rope_native(positions, q, k, 128, _cache(4096, rot_dim, dtype), is_neox)
    rotary_embedding_reference(positions, q, k, 128, exact, is_neox)
    assert torch.equal(q, want_q.to(dtype)) and torch.equal(k, want_k.to(dtype))
    ref_err = (q.double() - want_q).abs().mean()
    native_err = (native_q.double() - want_q).abs().mean()
    assert ref_err < native_err
    with pytest.raises(TypeError, match="float64 cos/sin cache"):
        rotary_embedding_reference(positions, q, k, 128, exact.to(dtype), is_neox)
