"""Path switching on Ascend, where vllm-ascend already owns the RotaryEmbedding registration.

A second `register_oot("RotaryEmbedding")` would assert, so instead of replacing the class we
replace vllm-ascend's `rope_forward_oot` in both places it is reached from:
- the torch op `vllm::npu_rotary_embedding`, which the forwards of `AscendRotaryEmbedding`,
  `AscendYaRNRotaryEmbedding` and `AscendDeepseekScalingRotaryEmbedding` call. Its kernel is the
  function object bound when `vllm_ascend.ops.register_custom_ops` was imported (which importing any
  `vllm_ascend.ops` module does first), so the op's kernel is re-registered;
- the module attribute, for any caller that looks it up at call time.
`platform` keeps vllm-ascend's own branch (Triton or torch_npu, by its `HAS_TRITON`) and only counts
it; `native` runs vLLM's native math (`rope_native`); `triton` and `custom:` run in place.

Checked against the real vllm-ascend 0.23.0.post1 sources by tests/test_ascend_wheel.py, and run
against a fake with the same interface by tests/test_ascend_switch.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import torch
from torch import nn

from eval_harness.paths import PathSpec

from . import ops
from .coverage import SWITCHED_ATTR, is_switched, rope_sites

MODULE = "vllm_ascend.ops.rotary_embedding"
OP = "npu_rotary_embedding"
# rope_forward_oot's parameters in vllm-ascend 0.23.0.post1; later versions append `out_dtype`.
ROPE_FORWARD_OOT_PARAMS = (
    "positions",
    "query",
    "key",
    "cos_sin_cache",
    "head_size",
    "rotary_dim",
    "is_neox_style",
    "offsets",
)
# vllm-ascend's RoPE classes whose forwards call the op above: the ones the switch reaches. Its MRoPE
# (triton_mrope / npu_mrope) and ApplyRotaryEmb do not, and stay unswitched.
SWITCHED_CLASSES = (
    "AscendRotaryEmbedding",
    "AscendYaRNRotaryEmbedding",
    "AscendDeepseekScalingRotaryEmbedding",
)
# Dispatch keys a kernel of the op may be registered for: PrivateUse1 is the NPU.
_KEYS = ("PrivateUse1", "CPU", "CUDA")
REFERENCE_FALLBACK = "reference(fallback:model-dtype-cache)"
_LIB: torch.library.Library | None = None  # the re-registered kernel lives as long as this does
_SPEC: PathSpec | None = None
# data_ptr of a switched module's cos_sin_cache -> the reference cache rebuilt from its parameters
_REFERENCE_CACHES: dict[int, torch.Tensor] = {}


def ascend_present() -> bool:
    return importlib.util.find_spec("vllm_ascend") is not None


def _override_kwargs() -> dict[str, bool]:
    """torch 2.8-2.12 refuse a second Python kernel for an op and key unless `allow_override=True`
    (vllm-ascend 0.23 pins torch 2.10); later torch allows it by default, earlier has no flag."""
    params = inspect.signature(torch.library.Library.impl).parameters
    return {"allow_override": True} if "allow_override" in params else {}


def _reroute_op(fn) -> list[str]:
    """Point every registered kernel of `vllm::npu_rotary_embedding` at `fn`; the keys replaced."""
    global _LIB
    qualname = f"vllm::{OP}"
    keys = [k for k in _KEYS if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, k)]
    if keys:
        _LIB = torch.library.Library("vllm", "IMPL")
        for key in keys:
            _LIB.impl(OP, fn, key, **_override_kwargs())
    return keys


def _mark_switched(mod) -> None:
    for name in SWITCHED_CLASSES:
        cls = getattr(mod, name, None)
        if cls is not None:
            setattr(cls, SWITCHED_ATTR, True)  # coverage counts their modules as ours


def note_model(model: nn.Module, role: str, vllm_config: object = None) -> None:
    """After a model load: for `reference`, rebuild each switched module's cos/sin cache from its own
    parameters (float64 math, fp32 where the device lacks float64), keyed by the cache vllm-ascend will
    pass to the op. vllm-ascend's own cache is rounded to the model dtype: no yardstick."""
    if _SPEC is None or _SPEC.kind != "reference":
        return
    from .rotary import _reference_cache

    for _, module in rope_sites(model):
        cache = getattr(module, "cos_sin_cache", None)
        if not is_switched(module) or not isinstance(cache, torch.Tensor):
            continue
        if cache.data_ptr() not in _REFERENCE_CACHES:
            ref = _reference_cache(module)
            if ref.shape == cache.shape:
                _REFERENCE_CACHES[cache.data_ptr()] = ref


def install(spec: PathSpec) -> None:
    global _SPEC
    mod = importlib.import_module(MODULE)  # imports vllm_ascend.ops: the op is registered by now
    original = mod.rope_forward_oot
    if getattr(original, "_rope_eval", False):
        return  # plugin loaded twice in one process
    _SPEC = spec
    _mark_switched(mod)
    name = spec.name
    if spec.kind == "reference":
        ops.alias(REFERENCE_FALLBACK, name)

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
        impl, cache = name, cos_sin_cache[:, :rotary_dim]
        if spec.kind == "reference":
            ref = _REFERENCE_CACHES.get(cos_sin_cache.data_ptr())
            if ref is not None:
                cache = ref[:, :rotary_dim]
            else:
                # No module seen for this cache: vllm-ascend's rounded values, upcast. Counted under its own
                # name, so the arm fails verification instead of passing off a weaker yardstick.
                from eval_harness.kernels.reference import reference_compute_dtype

                impl, cache = REFERENCE_FALLBACK, cache.to(reference_compute_dtype(cache.device))
        ops.apply(positions, query, key, head_size, cache, is_neox_style, impl)
        return query, key

    rope_forward_oot._rope_eval = True
    mod.rope_forward_oot = rope_forward_oot
    _reroute_op(rope_forward_oot)
