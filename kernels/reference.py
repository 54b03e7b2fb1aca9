"""Torch references for RoPE: vLLM's native math (the `native` path) and a float64 oracle for tests.

`rope_native` repeats vLLM's `RotaryEmbedding.forward_static` (base.py) and
`ApplyRotaryEmb.forward_static` (common.py) operation for operation, so that on the same device
and dtype it matches vLLM's native path bit for bit: cos/sin are cast to the storage dtype and the
products are rounded there, unlike the Triton kernel, which computes in fp32 and rounds once.
"""

from __future__ import annotations

import torch


def cos_sin_cache(
    max_position: int,
    rotary_dim: int,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """vLLM's `[max_position, rotary_dim]` cache of `[cos | sin]` rows (`_compute_cos_sin_cache`)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float, device=device) / rotary_dim))
    freqs = torch.einsum("i,j -> ij", torch.arange(max_position, dtype=torch.float, device=device), inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(dtype)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox: bool) -> torch.Tensor:
    # ApplyRotaryEmb.forward_static with enable_fp32_compute=False, as RotaryEmbedding calls it.
    cos = cos.unsqueeze(-2).to(x.dtype)
    sin = sin.unsqueeze(-2).to(x.dtype)
    if is_neox:
        x1, x2 = torch.chunk(x, 2, dim=-1)
    else:
        x1 = x[..., ::2]
        x2 = x[..., 1::2]
    o1 = x1 * cos - x2 * sin
    o2 = x2 * cos + x1 * sin
    if is_neox:
        return torch.cat((o1, o2), dim=-1)
    return torch.stack((o1, o2), dim=-1).flatten(-2)


def _rotate_native(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_size: int, rot_dim: int, is_neox: bool
) -> torch.Tensor:
    shape = x.shape
    x = x.view(cos.shape[0], -1, head_size)
    x_rot = _apply_rotary(x[..., :rot_dim], cos, sin, is_neox)
    return torch.cat((x_rot, x[..., rot_dim:]), dim=-1).reshape(shape)


def rope_native(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """vLLM's native RoPE: new (query, key) tensors, inputs untouched (as `forward_native` returns).

    The cache is used in the storage dtype, as `forward_native` casts it with
    `_match_cos_sin_cache_dtype` (the cast commutes with the row gather, so it happens per row here).
    """
    positions = positions.flatten()
    cos, sin = cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)
    rot_dim = cos_sin_cache.shape[1]
    query = _rotate_native(query, cos, sin, head_size, rot_dim, is_neox)
    if key is not None:
        key = _rotate_native(key, cos, sin, head_size, rot_dim, is_neox)
    return query, key


def rotary_embedding_native(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """`rope_native` with the kernel's in-place signature (writes through views, like the kernel)."""
    new_query, new_key = rope_native(positions, query, key, head_size, cos_sin_cache, is_neox)
    query.copy_(new_query)
    if key is not None:
        key.copy_(new_key)


def _rotate_f64(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_size: int, is_neox: bool
) -> torch.Tensor:
    # Written from the definition (pair index arithmetic), independently of the native code above.
    out = (
        x.detach().to(torch.float64).reshape(x.shape[0], x.shape[1:].numel() // head_size, head_size).clone()
    )
    half = cos.shape[1]
    idx = torch.arange(half, device=x.device)
    first, second = (idx, idx + half) if is_neox else (2 * idx, 2 * idx + 1)
    a, b = out[..., first], out[..., second]
    c, s = cos[:, None, :], sin[:, None, :]
    out[..., first], out[..., second] = a * c - b * s, b * c + a * s
    return out.reshape(x.shape)


def rotary_embedding_f64(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RoPE in float64 from the given cache values: new (query, key) float64 tensors, inputs untouched."""
    half = cos_sin_cache.shape[1] // 2
    rows = cos_sin_cache.to(torch.float64)[positions.flatten().long()]
    cos, sin = rows[:, :half], rows[:, half:]
    q = _rotate_f64(query, cos, sin, head_size, is_neox)
    k = None if key is None else _rotate_f64(key, cos, sin, head_size, is_neox)
    return q, k
