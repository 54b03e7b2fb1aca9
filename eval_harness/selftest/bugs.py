"""A catalogue of planted RoPE bugs, each a `custom:` path with the kernel signature.

Every bug wraps the native reference and breaks exactly one thing that real RoPE kernels
have got wrong. The two `control_*` entries are *correct* implementations (one rotates every
position of q and k by one extra step, which is invisible in exact arithmetic because RoPE is
relative): the harness must not flag them.
"""

from __future__ import annotations

import torch

from eval_harness.kernels.reference import rotary_embedding_native


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _halves(cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = cache.shape[1] // 2
    return cache[:, :half], cache[:, half:]


def no_rotation(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """RoPE skipped: the op returns its inputs untouched (a dispatch that never reached a kernel)."""
    return None


def key_off_by_one(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """Keys rotated one position ahead of queries: every q·k sees distance i - j - 1."""
    rotary_embedding_native(positions, query, None, head_size, cos_sin_cache, is_neox)
    if key is not None:
        shifted = (positions + 1).clamp(max=cos_sin_cache.shape[0] - 1)
        rotary_embedding_native(shifted, key, None, head_size, cos_sin_cache, is_neox)


def style_swapped(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """Neox (halves) and GPT-J (interleaved pairs) confused."""
    rotary_embedding_native(positions, query, key, head_size, cos_sin_cache, not is_neox)


def sin_sign_flipped(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """Rotation by -θ: still relative, but mirrored in distance."""
    cos, sin = _halves(cos_sin_cache)
    rotary_embedding_native(positions, query, key, head_size, torch.cat((cos, -sin), 1), is_neox)


def partial_rotates_whole_head(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """Partial rotary treated as full: the pass-through part of each head gets rotated too."""
    cos, sin = _halves(cos_sin_cache)
    idx = torch.arange(head_size // 2, device=cos.device) % cos.shape[1]
    cache = torch.cat((cos[:, idx], sin[:, idx]), 1)
    rotary_embedding_native(positions, query, key, head_size, cache, is_neox)


def sin_offset_npot(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """sin read at the power-of-two-padded offset: wrong only when rot_dim is not a power of two."""
    rot = cos_sin_cache.shape[1]
    half, offset = rot // 2, _next_pow2(rot) // 2
    padded = torch.nn.functional.pad(cos_sin_cache, (0, offset))
    cache = torch.cat((cos_sin_cache[:, :half], padded[:, offset : offset + half]), 1)
    rotary_embedding_native(positions, query, key, head_size, cache, is_neox)


def draft_uses_target_cache(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """Every RoPE layer uses the *target's* theta, so an eagle3 draft with its own rope_theta is
    rotated wrongly (the vllm-ascend bug behind rope-eval). The target itself is unaffected."""
    from eval_harness.models.specs import SPECS

    rot = cos_sin_cache.shape[1]
    base = SPECS["qwen3-tiny"].rope_theta
    inv_freq = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float, device=positions.device) / rot))
    freqs = torch.einsum("i,j -> ij", positions.flatten().float(), inv_freq)
    cache = torch.cat((freqs.cos(), freqs.sin()), 1).to(cos_sin_cache.dtype)
    local = torch.arange(positions.numel(), device=positions.device)
    rotary_embedding_native(local, query, key, head_size, cache, is_neox)


def bf16_math(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """The rotation computed in bf16 where fp32 is required."""
    q = query.to(torch.bfloat16)
    k = key.to(torch.bfloat16) if key is not None else None
    rotary_embedding_native(positions, q, k, head_size, cos_sin_cache.to(torch.bfloat16), is_neox)
    query.copy_(q)
    if key is not None:
        key.copy_(k)


def wraps_past_4096(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """Positions wrap at 4096 (a 12-bit index): only a query past 4096 looking back across the
    boundary sees a wrong distance, so short-context tests pass."""
    rotary_embedding_native(positions % 4096, query, key, head_size, cos_sin_cache, is_neox)


def control_shift_both(positions, query, key, head_size, cos_sin_cache, is_neox) -> None:
    """Correct: q and k both rotated one step further. Relative distances are unchanged."""
    shifted = (positions + 1).clamp(max=cos_sin_cache.shape[0] - 1)
    rotary_embedding_native(shifted, query, key, head_size, cos_sin_cache, is_neox)
