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
    out = x.detach().to(cos.dtype).reshape(x.shape[0], x.shape[1:].numel() // head_size, head_size).clone()
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
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RoPE in float64 (or `dtype`) from the given cache values: new (query, key) tensors in that dtype,
    inputs untouched."""
    half = cos_sin_cache.shape[1] // 2
    rows = cos_sin_cache.to(dtype)[positions.flatten().long()]
    cos, sin = rows[:, :half], rows[:, half:]
    q = _rotate_f64(query, cos, sin, head_size, is_neox)
    k = None if key is None else _rotate_f64(key, cos, sin, head_size, is_neox)
    return q, k


def reference_compute_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it; fp32 elsewhere (Ascend NPUs and Apple MPS lack float64)."""
    return torch.float32 if device.type in ("npu", "mps") else torch.float64


def reference_cos_sin_cache(
    inv_freq: torch.Tensor, max_position: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The `[cos | sin]` cache computed in the reference dtype from `inv_freq`, never rounded to the
    model's dtype: vLLM stores its own cache in the model dtype (bf16 in bf16 serving), and a yardstick
    that inherited that rounding would measure the paths against a rounded truth."""
    device = torch.device(device or inv_freq.device)
    dtype = reference_compute_dtype(device)
    t = torch.arange(max_position, dtype=dtype, device=device)
    freqs = torch.outer(t, inv_freq.to(device=device, dtype=dtype))
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1)


def rotary_embedding_reference(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """The `reference` path: RoPE in float64 (fp32 where the device lacks it), rounded once to the
    storage dtype, in place. The cache must already be in the reference dtype: a cache that was
    rounded to bf16 would make this a bf16 kernel in disguise, so that is refused."""
    want = reference_compute_dtype(query.device)
    if cos_sin_cache.dtype != want:
        raise TypeError(f"reference RoPE needs a {want} cos/sin cache, got {cos_sin_cache.dtype}")
    q, k = rotary_embedding_f64(positions, query, key, head_size, cos_sin_cache, is_neox, want)
    query.copy_(q)  # the one rounding, to the storage dtype
    if key is not None and k is not None:
        key.copy_(k)
