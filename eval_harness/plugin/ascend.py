"""Path switching on Ascend, where vllm-ascend already owns the RotaryEmbedding registration.

A second `register_oot("RotaryEmbedding")` would assert, so instead of replacing the class we
wrap vllm-ascend's module-level `rope_forward_oot`, which its `AscendRotaryEmbedding` (through
`torch.ops.vllm.npu_rotary_embedding`) looks up at call time. `platform` keeps vllm-ascend's
own branch (Triton or `torch_npu.npu_mrope`, by its `HAS_TRITON`) and only counts it.
"""

from __future__ import annotations

import importlib
import importlib.util

from eval_harness.paths import PathSpec

from . import ops

MODULE = "vllm_ascend.ops.rotary_embedding"


def ascend_present() -> bool:
    return importlib.util.find_spec("vllm_ascend") is not None


def install(spec: PathSpec) -> None:
    mod = importlib.import_module(MODULE)
    original = mod.rope_forward_oot
    if getattr(original, "_rope_eval", False):
        return  # plugin loaded twice in one process
    name = spec.name

    def rope_forward_oot(
        positions,
        query,
        key,
        cos_sin_cache,
        head_size,
        rotary_dim,
        is_neox_style,
        offsets=None,
        out_dtype=None,
    ):
        if spec.kind == "platform" or out_dtype is not None:
            ops.mark(positions, name if out_dtype is None else "platform")
            return original(
                positions, query, key, cos_sin_cache, head_size, rotary_dim, is_neox_style, offsets, out_dtype
            )
        query, key = query.clone(), key.clone()  # vllm-ascend's contract returns new tensors
        ops.apply(positions, query, key, head_size, cos_sin_cache[:, :rotary_dim], is_neox_style, name)
        return query, key

    rope_forward_oot._rope_eval = True
    mod.rope_forward_oot = rope_forward_oot
