"""Path switching on Ascend, where vllm-ascend already owns the RotaryEmbedding registration.

A second `register_oot("RotaryEmbedding")` would assert, so instead of replacing the class we
replace vllm-ascend's `rope_forward_oot` in both places it is reached from:
- the torch op `vllm::npu_rotary_embedding`, which `AscendRotaryEmbedding.forward_oot` calls. Its
  kernel is the function object bound when `vllm_ascend.ops.register_custom_ops` was imported (which
  importing any `vllm_ascend.ops` module does first), so the op's kernel is re-registered;
- the module attribute, which the key=None branch of `forward_oot` looks up at call time.
`platform` keeps vllm-ascend's own branch (Triton or torch_npu, by its `HAS_TRITON`) and only counts
it; `native` runs vLLM's native math (`rope_native`); `triton` and `custom:` run in place.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

from eval_harness.paths import PathSpec

from . import ops

MODULE = "vllm_ascend.ops.rotary_embedding"
OP = "npu_rotary_embedding"
# Dispatch keys a kernel of the op may be registered for: PrivateUse1 is the NPU.
_KEYS = ("PrivateUse1", "CPU", "CUDA")
_LIB: torch.library.Library | None = None  # the re-registered kernel lives as long as this does


def ascend_present() -> bool:
    return importlib.util.find_spec("vllm_ascend") is not None


def _reroute_op(fn) -> list[str]:
    """Point every registered kernel of `vllm::npu_rotary_embedding` at `fn`; the keys replaced."""
    global _LIB
    qualname = f"vllm::{OP}"
    keys = [k for k in _KEYS if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, k)]
    if keys:
        _LIB = torch.library.Library("vllm", "IMPL")
        for key in keys:
            _LIB.impl(OP, fn, key)
    return keys


def install(spec: PathSpec) -> None:
    mod = importlib.import_module(MODULE)  # imports vllm_ascend.ops: the op is registered by now
    original = mod.rope_forward_oot
    if getattr(original, "_rope_eval", False):
        return  # plugin loaded twice in one process
    name = spec.name

    def rope_forward_oot(
        positions, query, key, cos_sin_cache, head_size, rotary_dim, is_neox_style, *args, **kwargs
    ):
        offsets = kwargs.get("offsets", args[0] if args else None)
        out_dtype = kwargs.get("out_dtype", args[1] if len(args) > 1 else None)
        if spec.kind == "platform" or offsets is not None or out_dtype is not None:
            # Passed through as given: vllm-ascend 0.23 has no out_dtype parameter, later ones do.
            ops.mark(positions, name if spec.kind == "platform" else "platform")
            return original(
                positions, query, key, cos_sin_cache, head_size, rotary_dim, is_neox_style, *args, **kwargs
            )
        if spec.kind == "native":
            from eval_harness.kernels.reference import rope_native

            ops.mark(positions, name)
            return rope_native(positions, query, key, head_size, cos_sin_cache[:, :rotary_dim], is_neox_style)
        query, key = query.clone(), key.clone()  # vllm-ascend's contract returns new tensors
        cache = cos_sin_cache[:, :rotary_dim]
        if spec.kind == "reference":
            # Here the cache arrives already built by vllm-ascend; the reference upcasts its values and
            # computes in fp32 (NPUs lack float64), so only the rotation's roundings are removed.
            from eval_harness.kernels.reference import reference_compute_dtype

            cache = cache.to(reference_compute_dtype(cache.device))
        ops.apply(positions, query, key, head_size, cache, is_neox_style, name)
        return query, key

    rope_forward_oot._rope_eval = True
    mod.rope_forward_oot = rope_forward_oot
    _reroute_op(rope_forward_oot)
