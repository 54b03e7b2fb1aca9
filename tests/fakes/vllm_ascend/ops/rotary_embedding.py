"""FAKE: stands in for vllm-ascend, which needs Ascend hardware; same interface as
vllm_ascend/ops/rotary_embedding.py at vllm-ascend 0.23.

What rope-eval's plugin touches, and nothing else:
- module-level `rope_forward_oot(positions, query, key, cos_sin_cache, head_size, rotary_dim,
  is_neox_style, offsets=None)`, returning new `(query, key)` tensors of the input shapes;
- the module global `HAS_TRITON`, read at call time: the real function runs vllm-ascend's
  `rope_forward_triton` when it is true and `torch_npu._npu_rotary_embedding` when it is false;
- `AscendRotaryEmbedding`, a subclass of vLLM's RotaryEmbedding whose `forward_oot` calls the op
  `torch.ops.vllm.npu_rotary_embedding` with its own `cos_sin_cache` (the real one also records the
  cache for vllm-ascend's other kernels, which this fake leaves out).
tests/test_ascend_wheel.py checks these names and signatures against the real 0.23.0.post1 sources.

Both branches compute with torch here, in fp32, and record which one ran in `CALLS`; a test flips
`HAS_TRITON` to choose. `FAKE_VLLM_ASCEND_SIGNATURE=main` gives the later signature with a trailing
`out_dtype=None` (vllm-ascend main after 0.23), which 0.23.0.post1 does not have.
"""

from __future__ import annotations

import os

import torch

HAS_TRITON: bool = True  # the real one is vllm.triton_utils.HAS_TRITON: true where triton-ascend is
SIGNATURE: str = os.environ.get("FAKE_VLLM_ASCEND_SIGNATURE", "0.23")
CALLS: dict[str, int] = {}


def _rotate(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_size: int, neox: bool
) -> torch.Tensor:
    """RoPE of the leading `2 * cos.shape[1]` dims of every head; the rest passes through."""
    tokens, half = x.shape[0], cos.shape[1]
    heads = x.reshape(tokens, -1, head_size).float()
    rot, rest = heads[..., : 2 * half], heads[..., 2 * half :]
    c, s = cos[:, None, :], sin[:, None, :]
    if neox:
        x1, x2 = rot[..., :half], rot[..., half:]
        rot = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rot = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2)
    return torch.cat((rot, rest), dim=-1).reshape(x.shape).to(x.dtype)


def _forward(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    head_size: int,
    rotary_dim: int,
    is_neox_style: bool,
    offsets: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    if offsets is not None:
        raise NotImplementedError("Batched rotary embedding is currently not supported on NPU.")
    branch = "triton" if HAS_TRITON else "npu"
    CALLS[branch] = CALLS.get(branch, 0) + 1
    rows = cos_sin_cache.index_select(0, positions.flatten().long()).float()
    cos, sin = rows[:, : rotary_dim // 2], rows[:, rotary_dim // 2 : rotary_dim]
    return (
        _rotate(query, cos, sin, head_size, is_neox_style),
        _rotate(key, cos, sin, head_size, is_neox_style),
    )


def _rope_forward_oot_023(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    head_size: int,
    rotary_dim: int,
    is_neox_style: bool,
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(positions, query, key, cos_sin_cache, head_size, rotary_dim, is_neox_style, offsets)


def _rope_forward_oot_main(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    head_size: int,
    rotary_dim: int,
    is_neox_style: bool,
    offsets: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k = _forward(positions, query, key, cos_sin_cache, head_size, rotary_dim, is_neox_style, offsets)
    return (q, k) if out_dtype is None else (q.to(out_dtype), k.to(out_dtype))


rope_forward_oot = _rope_forward_oot_main if SIGNATURE == "main" else _rope_forward_oot_023


def _ascend_rotary_embedding() -> type:
    """Built on first use: it needs vLLM, which the module-level functions above do not."""
    from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding

    class AscendRotaryEmbedding(RotaryEmbedding):
        def forward_oot(
            self,
            positions: torch.Tensor,
            query: torch.Tensor,
            key: torch.Tensor,
            offsets: torch.Tensor | None = None,
            is_neox_style_override: bool | None = None,
        ):
            is_neox_style = self.is_neox_style if is_neox_style_override is None else is_neox_style_override
            return torch.ops.vllm.npu_rotary_embedding(
                positions, query, key, self.cos_sin_cache, self.head_size, self.rotary_dim, is_neox_style
            )

    return AscendRotaryEmbedding


def __getattr__(name: str) -> type:
    if name == "AscendRotaryEmbedding":
        cls = _ascend_rotary_embedding()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
