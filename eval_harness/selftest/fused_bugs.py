"""Planted bugs in the fused attention prologue (split + per-head q/k RMSNorm + RoPE), each a
`custom-fused:` path with the signature of `eval_harness.kernels.fused.split_qkv_rmsnorm_rope`.

Each wraps the correct unfused reference (`split_qkv_rmsnorm_rope_native`) and breaks exactly one
thing that a fused kernel can get wrong and a RoPE-only test cannot see. `control_fused_reference`
is the reference itself: served as `custom-fused:`, it must pass.

Two of them are invisible where q_norm and k_norm carry the same weight, all ones (a freshly
initialised checkpoint): RoPE is a rotation, so the RMS of a head is the same before and after it,
and a norm moved past the rotation only differs by where the weight multiplies. Real checkpoints,
and the toy models trained on toy-arith, carry learned, different weights; serve those to see them.
"""

from __future__ import annotations

import torch

from eval_harness.kernels.fused import rms_norm_heads, split_qkv_rmsnorm_rope_native
from eval_harness.kernels.reference import rope_native

Fused = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def control_fused_reference(qkv, q_weight, k_weight, **kw) -> Fused:
    """Correct: the unfused torch path (split, RMSNorm per head, RoPE), through the fused signature."""
    return split_qkv_rmsnorm_rope_native(qkv, q_weight, k_weight, **kw)


def norm_after_rope(
    qkv, q_weight, k_weight, *, q_size, kv_size, head_size, eps, cos_sin_cache, positions, is_neox, **bias
) -> Fused:
    """RoPE first, then the per-head RMSNorm: the norm weight multiplies rotated coordinates."""
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    q, k = rope_native(positions, q, k, head_size, cos_sin_cache, is_neox)
    q = rms_norm_heads(q, q_weight, bias.get("q_bias"), head_size, eps)
    k = rms_norm_heads(k, k_weight, bias.get("k_bias"), head_size, eps)
    return q, k, v


def k_norm_uses_q_weight(qkv, q_weight, k_weight, **kw) -> Fused:
    """k normalised with q_norm's weight (one weight pointer for both head kinds)."""
    return split_qkv_rmsnorm_rope_native(qkv, q_weight, q_weight, **kw)


def gqa_k_offset(qkv, q_weight, k_weight, *, q_size, kv_size, head_size, **kw) -> Fused:
    """Under GQA, k read from the q/k boundary computed with the kv head count: k is a slice of q."""
    if q_size == kv_size:
        raise ValueError("gqa_k_offset needs GQA (fewer kv heads than q heads) to differ from correct")
    bad = qkv.clone()
    bad[:, q_size : q_size + kv_size] = qkv[:, kv_size : 2 * kv_size]
    q, k, _ = split_qkv_rmsnorm_rope_native(
        bad, q_weight, k_weight, q_size=q_size, kv_size=kv_size, head_size=head_size, **kw
    )
    return q, k, qkv[:, q_size + kv_size :]
