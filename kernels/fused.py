"""Fused split of the qkv projection, per-head RMSNorm of q and k (Qwen3's q_norm/k_norm), and RoPE.

Stock Triton: one program per token reads its q and k heads once from the fused `[T, q + 2*kv]`
projection and writes contiguous q `[T, q_size]` and k `[T, kv_size]`; v is returned as a view of
the input (no copy), as `qkv.split` gives it in vLLM's unfused path.

Rounding follows the unfused path so that the two agree up to the order of the sum of squares:
vLLM's RMSNorm rounds the normalised x to the weight dtype, multiplies by the weight there and
rounds to the storage dtype; the optional bias is then added in the storage dtype (vllm-ascend's
op defines `norm(x) * weight + bias` before RoPE, and its kernel also rounds that to bf16 before
rotating); RoPE then computes in fp32 from those values and rounds once.
"""

from __future__ import annotations

import torch

from ._triton_support import LazyJit, next_pow2, tl, triton_usable, warn_fallback_once
from .reference import rope_native
from .rope import FLOAT_DTYPES, check_cache_and_positions

# Elements of one [heads, head_size] tile (each program loads a tile and its rotary partner), and
# warps per program: the best of a sweep on an H200 at Qwen3-8B decode and prefill shapes.
_TILE_ELEMENTS = 4096
_NUM_WARPS = 8


@LazyJit
def _split_qkv_rmsnorm_rope_kernel(
    qkv_ptr,
    qkv_stride_t,
    q_out_ptr,
    k_out_ptr,
    q_weight_ptr,
    k_weight_ptr,
    q_bias_ptr,
    k_bias_ptr,
    positions_ptr,
    positions_stride,
    cache_ptr,
    cache_stride_p,
    max_position,
    eps,
    HQ: tl.constexpr,
    HK: tl.constexpr,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    ROT_HALF: tl.constexpr,
    IS_NEOX: tl.constexpr,
    HAS_Q_BIAS: tl.constexpr,
    HAS_K_BIAS: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + t * positions_stride).to(tl.int64)
    c = tl.arange(0, BLOCK_D)
    c_ok = c < D
    is_rot = c < 2 * ROT_HALF
    # Each rotary column pairs with a partner column and one cos/sin index; `sign` is -1 where the
    # column takes `x*cos - partner*sin`: the first half (neox) or the even element of a pair (GPT-J).
    if IS_NEOX:
        first = c < ROT_HALF
        partner = tl.where(first, c + ROT_HALF, c - ROT_HALF)
        freq = tl.where(first, c, c - ROT_HALF)
    else:
        first = (c % 2) == 0
        partner = c ^ 1
        freq = c // 2
    partner = tl.where(is_rot, partner, c)
    sign = tl.where(first, -1.0, 1.0)[None, :]
    # A scalar bound, not `is_rot & pos_ok`: the interpreter mistypes a block & scalar mask.
    cs_ok = c < tl.where((pos >= 0) & (pos < max_position), 2 * ROT_HALF, 0)
    row = cache_ptr + pos * cache_stride_p
    cos = tl.load(row + freq, mask=cs_ok, other=float("nan")).to(tl.float32)[None, :]
    sin = tl.load(row + ROT_HALF + freq, mask=cs_ok, other=float("nan")).to(tl.float32)[None, :]

    wq = tl.load(q_weight_ptr + c, mask=c_ok).to(tl.float32)[None, :]
    wk = tl.load(k_weight_ptr + c, mask=c_ok).to(tl.float32)[None, :]
    wq_p = tl.load(q_weight_ptr + partner, mask=c_ok).to(tl.float32)[None, :]
    wk_p = tl.load(k_weight_ptr + partner, mask=c_ok).to(tl.float32)[None, :]
    out_ty = q_out_ptr.dtype.element_ty
    w_ty = q_weight_ptr.dtype.element_ty
    # An absent bias is zero; z + 0 rounds back to z exactly. A bias is used in the storage dtype.
    bq = tl.full([1, BLOCK_D], 0.0, tl.float32)
    bq_p = tl.full([1, BLOCK_D], 0.0, tl.float32)
    bk = tl.full([1, BLOCK_D], 0.0, tl.float32)
    bk_p = tl.full([1, BLOCK_D], 0.0, tl.float32)
    if HAS_Q_BIAS:
        bq = tl.load(q_bias_ptr + c, mask=c_ok).to(out_ty).to(tl.float32)[None, :]
        bq_p = tl.load(q_bias_ptr + partner, mask=c_ok).to(out_ty).to(tl.float32)[None, :]
    if HAS_K_BIAS:
        bk = tl.load(k_bias_ptr + c, mask=c_ok).to(out_ty).to(tl.float32)[None, :]
        bk_p = tl.load(k_bias_ptr + partner, mask=c_ok).to(out_ty).to(tl.float32)[None, :]

    # Rows 0..HQ-1 are q heads, HQ..HQ+HK-1 k heads: contiguous in qkv, so one row index serves both.
    for r0 in tl.static_range(0, HQ + HK, BLOCK_ROWS):
        h = r0 + tl.arange(0, BLOCK_ROWS)
        is_q = (h < HQ)[:, None]
        mask = (h < HQ + HK)[:, None] & c_ok[None, :]
        src = qkv_ptr + t * qkv_stride_t + h[:, None] * D
        x = tl.load(src + c[None, :], mask=mask, other=0.0).to(tl.float32)
        x_p = tl.load(src + partner[None, :], mask=mask, other=0.0).to(tl.float32)
        # tl.sum itself is jitted at import (see LazyJit); this is its body, through builtins.
        inv_rms = tl.rsqrt(tl.reduce(x * x, 1, tl.standard._sum_combine) / D + eps)[:, None]
        # vLLM's RMSNorm: round to the weight dtype, multiply there, round to the storage dtype.
        z = ((x * inv_rms).to(w_ty).to(tl.float32) * tl.where(is_q, wq, wk)).to(w_ty).to(out_ty)
        z_p = ((x_p * inv_rms).to(w_ty).to(tl.float32) * tl.where(is_q, wq_p, wk_p)).to(w_ty).to(out_ty)
        z = (z.to(tl.float32) + tl.where(is_q, bq, bk)).to(out_ty).to(tl.float32)
        z_p = (z_p.to(tl.float32) + tl.where(is_q, bq_p, bk_p)).to(out_ty).to(tl.float32)

        y = tl.where(is_rot[None, :], z * cos + sign * z_p * sin, z)
        dst = tl.where(
            is_q, q_out_ptr + (t * HQ + h[:, None]) * D, k_out_ptr + (t * HK + h[:, None] - HQ) * D
        )
        tl.store(dst + c[None, :], y.to(out_ty), mask=mask)


def rms_norm_native(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """vLLM's RMSNorm math (`vllm.ir.ops.layernorm.rms_norm`) over the last dim."""
    orig_dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (x.to(weight.dtype) * weight).to(orig_dtype)


def rms_norm_heads(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, head_size: int, eps: float
) -> torch.Tensor:
    by_head = rms_norm_native(x.reshape(x.shape[0], -1, head_size), weight, eps)
    if bias is not None:
        by_head = by_head + bias.to(by_head.dtype)
    return by_head.reshape(x.shape)


def split_qkv_rmsnorm_rope_native(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    *,
    q_size: int,
    kv_size: int,
    head_size: int,
    eps: float,
    cos_sin_cache: torch.Tensor,
    positions: torch.Tensor,
    is_neox: bool,
    q_bias: torch.Tensor | None = None,
    k_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The unfused torch path, as Qwen3Attention runs it: split, RMSNorm per head, (+ bias), RoPE."""
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    q = rms_norm_heads(q, q_weight, q_bias, head_size, eps)
    k = rms_norm_heads(k, k_weight, k_bias, head_size, eps)
    q, k = rope_native(positions, q, k, head_size, cos_sin_cache, is_neox)
    return q, k, v


def _check_vector(x: torch.Tensor | None, name: str, head_size: int, qkv: torch.Tensor) -> None:
    if x is None:
        return
    if x.shape != (head_size,) or x.dtype not in FLOAT_DTYPES or x.device != qkv.device:
        raise ValueError(
            f"{name}: expected a float [{head_size}] tensor on {qkv.device}, "
            f"got {x.dtype} {tuple(x.shape)} on {x.device}"
        )


def _check_inputs(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_bias: torch.Tensor | None,
    q_size: int,
    kv_size: int,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    positions: torch.Tensor,
) -> None:
    if head_size <= 0:
        raise ValueError(f"head_size must be positive, got {head_size}")
    if q_size <= 0 or q_size % head_size:
        raise ValueError(f"q_size={q_size} must be a positive multiple of head_size={head_size}")
    if kv_size <= 0 or kv_size % head_size:
        raise ValueError(f"kv_size={kv_size} must be a positive multiple of head_size={head_size}")
    if qkv.dim() != 2 or qkv.dtype not in FLOAT_DTYPES:
        raise ValueError(f"qkv: expected a 2-D float tensor, got {qkv.dtype} {tuple(qkv.shape)}")
    if qkv.shape[1] != q_size + 2 * kv_size:
        raise ValueError(f"qkv: last dim {qkv.shape[1]} != q_size + 2 * kv_size = {q_size + 2 * kv_size}")
    for name, x in (("q_weight", q_weight), ("k_weight", k_weight), ("q_bias", q_bias), ("k_bias", k_bias)):
        _check_vector(x, name, head_size, qkv)
    if k_weight.dtype != q_weight.dtype:
        raise ValueError(f"k_weight: dtype {k_weight.dtype} differs from q_weight dtype {q_weight.dtype}")
    check_cache_and_positions(cos_sin_cache, positions, head_size, qkv)


def split_qkv_rmsnorm_rope(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    *,
    q_size: int,
    kv_size: int,
    head_size: int,
    eps: float,
    cos_sin_cache: torch.Tensor,
    positions: torch.Tensor,
    is_neox: bool,
    q_bias: torch.Tensor | None = None,
    k_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, k, v) from the fused projection: q and k normalised per head and rotated, v a view of qkv.

    Falls back to `split_qkv_rmsnorm_rope_native` (one warning per process) where Triton cannot launch;
    a caller that must know which ran (the served `fused` path counts it) decides with `triton_usable`
    and calls `split_qkv_rmsnorm_rope_triton` or the native function itself.
    """
    kwargs = dict(
        q_size=q_size,
        kv_size=kv_size,
        head_size=head_size,
        eps=eps,
        cos_sin_cache=cos_sin_cache,
        positions=positions,
        is_neox=is_neox,
        q_bias=q_bias,
        k_bias=k_bias,
    )
    if triton_usable(qkv.device):
        return split_qkv_rmsnorm_rope_triton(qkv, q_weight, k_weight, **kwargs)
    _check_inputs(
        qkv, q_weight, k_weight, q_bias, k_bias, q_size, kv_size, head_size, cos_sin_cache, positions
    )
    warn_fallback_once("split_qkv_rmsnorm_rope", qkv.device)
    return split_qkv_rmsnorm_rope_native(qkv, q_weight, k_weight, **kwargs)


def split_qkv_rmsnorm_rope_triton(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    *,
    q_size: int,
    kv_size: int,
    head_size: int,
    eps: float,
    cos_sin_cache: torch.Tensor,
    positions: torch.Tensor,
    is_neox: bool,
    q_bias: torch.Tensor | None = None,
    k_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernel only, never the fallback: raises where Triton cannot launch on `qkv`'s device."""
    _check_inputs(
        qkv, q_weight, k_weight, q_bias, k_bias, q_size, kv_size, head_size, cos_sin_cache, positions
    )
    if not triton_usable(qkv.device):
        raise RuntimeError(
            f"split_qkv_rmsnorm_rope_triton: Triton cannot launch on {qkv.device.type} tensors here "
            "(no driver, and TRITON_INTERPRET is not set)"
        )
    num_tokens = qkv.shape[0]
    q = torch.empty((num_tokens, q_size), dtype=qkv.dtype, device=qkv.device)
    k = torch.empty((num_tokens, kv_size), dtype=qkv.dtype, device=qkv.device)
    v = qkv[:, q_size + kv_size :]
    if num_tokens == 0:
        return q, k, v
    # The kernel takes unit column strides; a projection output has them, other layouts are copied.
    src = qkv if qkv.stride(1) == 1 else qkv.contiguous()
    cache = cos_sin_cache if cos_sin_cache.stride(1) == 1 else cos_sin_cache.contiguous()
    q_weight, k_weight = q_weight.contiguous(), k_weight.contiguous()
    hq, hk = q_size // head_size, kv_size // head_size
    block_d = next_pow2(head_size)
    _split_qkv_rmsnorm_rope_kernel[(num_tokens,)](
        src,
        src.stride(0),
        q,
        k,
        q_weight,
        k_weight,
        # An absent bias gets a placeholder pointer that the kernel never reads.
        q_weight if q_bias is None else q_bias.contiguous(),
        k_weight if k_bias is None else k_bias.contiguous(),
        positions,
        positions.stride(0),
        cache,
        cache.stride(0),
        cache.shape[0],
        float(eps),
        HQ=hq,
        HK=hk,
        D=head_size,
        BLOCK_D=block_d,
        BLOCK_ROWS=min(next_pow2(hq + hk), max(1, _TILE_ELEMENTS // block_d)),
        ROT_HALF=cache.shape[1] // 2,
        IS_NEOX=is_neox,
        HAS_Q_BIAS=q_bias is not None,
        HAS_K_BIAS=k_bias is not None,
        num_warps=_NUM_WARPS,
    )
    return q, k, v
