"""Triton RoPE with the semantics of vLLM's `_custom_ops.rotary_embedding` (in place, returns None).

One program per token rotates every q and k head of that token: the cos/sin row is loaded once and
the heads are processed as 2-D tiles [heads, rot_dim/2], so a single launch covers q and k whatever
the head counts. Only the rotary part of each head is read and written; the rest stays untouched.
Math is fp32 and each output is rounded once to the storage dtype.

Layouts follow vLLM's op: `[T, H*D]` or `[T, H, D]` with any token and head strides (q and k are
usually column slices of the fused qkv projection, rotated in place there), q and k may have
different head counts, `positions` is `[T]` (vLLM's `[batch, seq]` form is not taken), and the cache
is `[max_position, rot_dim]` with rows `[cos | sin]`, in fp32 or the storage dtype. Heads whose
elements are not contiguous, which vLLM's op does not take, go through a contiguous copy.

Position bounds: on CPU an out-of-range position raises ValueError. On a GPU the wrapper does not
check, since that would cost a device-to-host sync per call; the kernel masks the cache read
instead and writes NaN for that token, so a bad position can neither read stray memory nor pass
silently.
"""

from __future__ import annotations

import functools

import torch

from ._triton_support import LazyJit, next_pow2, tl, triton_usable, warn_fallback_once
from .reference import rotary_embedding_native

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.int64, torch.int32)
# Elements of one [heads, rot_dim/2] tile; more heads loop inside the program, which bounds register
# use for many or wide heads without giving up the single launch. With 4 warps this was the best or
# within 2% of the best of a sweep on an H200 (1-8 warps, 1024-8192 elements) at every benchmark
# section 9 shape; one tile covers Qwen3's 32 + 8 heads, so decode needs a single round trip.
_TILE_ELEMENTS = 4096
_NUM_WARPS = 4
# Tokens per program where the kernel runs on CPU tensors, i.e. under the interpreter.
_INTERPRET_BLOCK_T = 64


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


@LazyJit
def _rope_kernel(
    positions_ptr,
    positions_stride,
    cache_ptr,
    cache_stride_p,
    max_position,
    num_tokens,
    q_ptr,
    q_stride_t,
    q_stride_h,
    k_ptr,
    k_stride_t,
    k_stride_h,
    HQ: tl.constexpr,
    HK: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    ROT_HALF: tl.constexpr,
    BLOCK_R: tl.constexpr,
    IS_NEOX: tl.constexpr,
):
    # BLOCK_T tokens per program: 1 on a GPU (the tuned design), many under the CPU interpreter,
    # whose cost is per program, so a prefill is a handful of programs instead of one per token.
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
    t_ok = t < num_tokens
    pos = tl.load(positions_ptr + t * positions_stride, mask=t_ok, other=0).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    r_ok = r < ROT_HALF
    cs_ok = (t_ok & (pos >= 0) & (pos < max_position))[:, None] & r_ok[None, :]
    row = cache_ptr + pos[:, None] * cache_stride_p + r[None, :]
    cos = tl.load(row, mask=cs_ok, other=float("nan")).to(tl.float32)[:, None, :]
    sin = tl.load(row + ROT_HALF, mask=cs_ok, other=float("nan")).to(tl.float32)[:, None, :]

    # Rows 0..HQ-1 are the q heads of a token and rows HQ..HQ+HK-1 its k heads (HK == 0 without
    # key), so one tile covers both tensors; usually a single iteration.
    for r0 in tl.static_range(0, HQ + HK, BLOCK_ROWS):
        h = (r0 + tl.arange(0, BLOCK_ROWS))[None, :]
        heads = tl.where(
            h < HQ,
            q_ptr + t[:, None] * q_stride_t + h * q_stride_h,
            k_ptr + t[:, None] * k_stride_t + (h - HQ) * k_stride_h,
        )
        h_ok = (t_ok[:, None] & (h < HQ + HK))[:, :, None]
        if IS_NEOX:
            # The two halves of the rotary part: x[i] pairs with x[i + rot_dim/2].
            mask = h_ok & r_ok[None, None, :]
            p1 = heads[:, :, None] + r[None, None, :]
            p2 = p1 + ROT_HALF
            x1 = tl.load(p1, mask=mask).to(tl.float32)
            x2 = tl.load(p2, mask=mask).to(tl.float32)
            tl.store(p1, (x1 * cos - x2 * sin).to(p1.dtype.element_ty), mask=mask)
            tl.store(p2, (x2 * cos + x1 * sin).to(p2.dtype.element_ty), mask=mask)
        else:
            # Interleaved pairs (x[2i], x[2i+1]): one contiguous load, split in registers.
            c = tl.arange(0, 2 * BLOCK_R)
            mask = h_ok & (c < 2 * ROT_HALF)[None, None, :]
            p = heads[:, :, None] + c[None, None, :]
            x = tl.load(p, mask=mask).to(tl.float32)
            x1, x2 = tl.split(tl.reshape(x, (BLOCK_T, BLOCK_ROWS, BLOCK_R, 2)))
            y = tl.join(x1 * cos - x2 * sin, x2 * cos + x1 * sin)
            tl.store(p, tl.reshape(y, (BLOCK_T, BLOCK_ROWS, 2 * BLOCK_R)).to(p.dtype.element_ty), mask=mask)


_Layout = tuple[int, int, int, int]


def _layout(x: torch.Tensor, head_size: int, name: str) -> _Layout:
    """(heads, token stride, head stride, element stride) of a [T, H*D] or [T, H, D] tensor.

    ValueError naming `name` for other shapes.
    """
    shape, stride = x.shape, x.stride()
    if len(shape) == 2:
        if shape[1] % head_size:
            raise ValueError(f"{name}: last dim {shape[1]} is not a multiple of head_size={head_size}")
        return shape[1] // head_size, stride[0], head_size * stride[1], stride[1]
    if len(shape) == 3:
        if shape[2] != head_size:
            raise ValueError(f"{name}: shape {tuple(shape)} has last dim != head_size={head_size}")
        return shape[1], stride[0], stride[1], stride[2]
    raise ValueError(f"{name}: expected [T, H*D] or [T, H, D], got shape {tuple(shape)}")


def _check_inputs(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
) -> tuple[_Layout, _Layout]:
    """The q and k layouts, or a ValueError naming the argument at fault.

    Metadata only, plus the position bounds on CPU; kept lean, as it runs on every call.
    """
    if head_size <= 0:
        raise ValueError(f"head_size must be positive, got {head_size}")
    if query.dtype not in FLOAT_DTYPES:
        raise ValueError(f"query: dtype {query.dtype} is not one of {FLOAT_DTYPES}")
    q_layout = _layout(query, head_size, "query")
    k_layout = (0, 0, 0, 1)
    if key is not None:
        if key.dtype != query.dtype:
            raise ValueError(f"key: dtype {key.dtype} differs from query dtype {query.dtype}")
        if key.device != query.device:
            raise ValueError(f"key: on {key.device}, query on {query.device}")
        k_layout = _layout(key, head_size, "key")
        if key.shape[0] != query.shape[0]:
            raise ValueError(f"key: {key.shape[0]} tokens, query has {query.shape[0]}")
    check_cache_and_positions(cos_sin_cache, positions, head_size, query)
    return q_layout, k_layout


def check_cache_and_positions(
    cos_sin_cache: torch.Tensor, positions: torch.Tensor, head_size: int, x: torch.Tensor
) -> None:
    """The cache and position checks shared with the fused op; `x` gives the tokens and the device."""
    if cos_sin_cache.dim() != 2 or cos_sin_cache.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"cos_sin_cache: expected a 2-D float tensor, "
            f"got {cos_sin_cache.dtype} {tuple(cos_sin_cache.shape)}"
        )
    rot_dim = cos_sin_cache.shape[1]
    if rot_dim == 0 or rot_dim % 2 or rot_dim > head_size:
        raise ValueError(
            f"cos_sin_cache: rot_dim={rot_dim} must be even, positive and <= head_size={head_size}"
        )
    if cos_sin_cache.device != x.device:
        raise ValueError(f"cos_sin_cache: on {cos_sin_cache.device}, inputs on {x.device}")
    if positions.dim() != 1 or positions.shape[0] != x.shape[0]:
        raise ValueError(
            f"positions: shape {tuple(positions.shape)}, expected [T] with T={x.shape[0]} tokens"
        )
    if positions.dtype not in _INDEX_DTYPES:
        raise ValueError(f"positions: dtype {positions.dtype} is not one of {_INDEX_DTYPES}")
    if positions.device != x.device:
        raise ValueError(f"positions: on {positions.device}, inputs on {x.device}")
    if positions.device.type == "cpu" and positions.shape[0]:
        lo, hi = (int(v) for v in torch.aminmax(positions))
        if lo < 0 or hi >= cos_sin_cache.shape[0]:
            raise ValueError(
                f"positions: values span [{lo}, {hi}], outside the cache's {cos_sin_cache.shape[0]} rows"
            )


@functools.cache
def _meta(hq: int, hk: int, half: int, is_neox: bool, block_t: int) -> dict[str, int | bool]:
    """The kernel's compile-time parameters for one model shape (cached: needed on every call)."""
    block_r = next_pow2(half)
    return dict(
        HQ=hq,
        HK=hk,
        BLOCK_T=block_t,
        BLOCK_ROWS=min(next_pow2(hq + hk), max(1, _TILE_ELEMENTS // block_r)),
        ROT_HALF=half,
        BLOCK_R=block_r,
        IS_NEOX=is_neox,
        num_warps=_NUM_WARPS,
    )


def _launch(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    q_layout: _Layout,
    k_layout: _Layout,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    hq, q_st, q_sh, _ = q_layout
    hk, k_st, k_sh, _ = k_layout
    tokens = query.shape[0]
    block_t = min(_INTERPRET_BLOCK_T, next_pow2(tokens)) if query.device.type == "cpu" else 1
    _rope_kernel[(triton_cdiv(tokens, block_t),)](
        positions,
        positions.stride(0),
        cos_sin_cache,
        cos_sin_cache.stride(0),
        cos_sin_cache.shape[0],
        tokens,
        query,
        q_st,
        q_sh,
        query if key is None else key,
        k_st,
        k_sh,
        **_meta(hq, hk, cos_sin_cache.shape[1] // 2, is_neox, block_t),
    )


def _rotate_contiguous_copies(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """Head elements not contiguous (vLLM's op does not take these): rotate copies, write them back."""
    q = query.contiguous()
    k = None if key is None else key.contiguous()
    rotary_embedding(positions, q, k, head_size, cos_sin_cache.contiguous(), is_neox)
    query.copy_(q)
    if key is not None:
        key.copy_(k)


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """Rotate `query` and `key` in place, as vLLM's `_custom_ops.rotary_embedding` does.

    Falls back to vLLM's native torch math (one warning per process) where Triton cannot launch, and
    reports each fallback to an enclosing `fallback_scope`, so a caller counting calls can name what ran.
    """
    q_layout, k_layout = _check_inputs(positions, query, key, head_size, cos_sin_cache)
    if query.shape[0] == 0:
        return
    if not triton_usable(query.device):
        warn_fallback_once("rotary_embedding", query.device)
        rotary_embedding_native(positions, query, key, head_size, cos_sin_cache, is_neox)
    elif q_layout[3] != 1 or k_layout[3] != 1 or cos_sin_cache.stride(1) != 1:
        _rotate_contiguous_copies(positions, query, key, head_size, cos_sin_cache, is_neox)
    else:
        _launch(positions, query, key, q_layout, k_layout, cos_sin_cache, is_neox)


def rope_forward_triton(
    q: torch.Tensor,
    k: torch.Tensor | None,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
    cos_sin_cache: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    rope_dim: int = -1,
    is_neox_style: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """vllm-ascend's `rope_forward_triton` signature over `rotary_embedding`: [T, H, D] q and k.

    Either `cos_sin_cache` and `positions`, or `cos` and `sin` already gathered per token
    ([T, rot_dim/2] each, or any shape with T rows), as Ascend accepts. `rope_dim` (-1: the
    cache's width) must match the cache. Unlike Ascend's, which rotates contiguous copies of
    non-contiguous inputs, this rotates q and k in place in every layout and returns them.
    """
    if q.dim() != 3:
        raise ValueError(f"q: expected [T, H, D], got shape {tuple(q.shape)}")
    if cos_sin_cache is None or positions is None:
        if cos is None or sin is None:
            raise ValueError("cos_sin_cache: pass cos_sin_cache and positions, or cos and sin")
        # Rows already gathered: token t reads row t of a per-call cache.
        tokens = q.shape[0]
        cos_sin_cache = torch.cat((cos.reshape(tokens, -1), sin.reshape(tokens, -1)), dim=-1)
        positions = torch.arange(tokens, device=q.device)
    if rope_dim not in (-1, cos_sin_cache.shape[1]):
        raise ValueError(
            f"rope_dim={rope_dim} differs from the cache's rotary width {cos_sin_cache.shape[1]}"
        )
    rotary_embedding(positions, q, k, q.shape[-1], cos_sin_cache, is_neox_style)
    return q, k
