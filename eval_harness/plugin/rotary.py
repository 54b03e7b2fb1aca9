"""Out-of-tree RotaryEmbedding classes that route every forward through the chosen path.

vLLM's `CustomOp.__new__` looks a class up by its own name in the out-of-tree registry, so
each RoPE class a model may build (RotaryEmbedding and the scaling subclasses that share its
`cos_sin_cache` math) gets a subclass here. All `forward_*` methods point at one dispatcher:
whichever of them vLLM picks (native when the op is disabled, cuda/cpu when enabled), the
requested path runs.
"""

from __future__ import annotations

import torch
import vllm.model_executor.layers.rotary_embedding  # noqa: F401  (imports every vLLM RoPE class)
from vllm.model_executor.custom_op import CustomOp, op_registry_oot
from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding
from vllm.platforms import current_platform

from eval_harness.paths import PathSpec

from . import ops
from .coverage import SWITCHED_ATTR

FORWARDS = (
    "forward",
    "forward_native",
    "forward_cuda",
    "forward_cpu",
    "forward_oot",
    "forward_hip",
    "forward_xpu",
)


def _platform_forward(base: type[RotaryEmbedding]):
    if current_platform.is_cpu():
        return base.forward_cpu
    if current_platform.is_out_of_tree():
        return base.forward_oot
    return base.forward_cuda


REFERENCE_CACHE = "rope_eval_reference_cache"


def _reference_cache(module: RotaryEmbedding) -> torch.Tensor:
    """The `reference` path's cos/sin cache, computed in float64 from the module's own parameters.
    Classes that build their cache their own way (scaling variants) keep their fp32 math, upcast: still
    never rounded to the model's dtype, which is what vLLM's own `cos_sin_cache` is."""
    from eval_harness.kernels.reference import reference_compute_dtype, reference_cos_sin_cache

    cls = type(module)
    own_math = (
        cls._compute_inv_freq is RotaryEmbedding._compute_inv_freq
        and cls._compute_cos_sin_cache is RotaryEmbedding._compute_cos_sin_cache
    )
    device = module.cos_sin_cache.device
    if own_math:
        dtype = reference_compute_dtype(device)
        rot = module.rotary_dim
        inv_freq = 1.0 / (module.base ** (torch.arange(0, rot, 2, dtype=dtype, device=device) / rot))
        return reference_cos_sin_cache(inv_freq, module.max_position_embeddings, device)
    return module._compute_cos_sin_cache().to(device, reference_compute_dtype(device))


def _make_class(base: type[RotaryEmbedding], spec: PathSpec) -> type:
    platform_forward = _platform_forward(base)
    name = spec.name

    def forward(self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None = None):
        if spec.kind == "native":
            ops.mark(positions, name)
            return RotaryEmbedding.forward_native(self, positions, query, key)
        if spec.kind == "platform":
            ops.mark(positions, name)
            return platform_forward(self, positions, query, key)
        if spec.kind == "reference":
            cache = getattr(self, REFERENCE_CACHE)
        else:
            cache = self._match_cos_sin_cache_dtype(query)
        ops.apply(positions, query, key, self.head_size, cache, self.is_neox_style, name)
        return query, key

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        if spec.kind == "reference":
            # A buffer, so it follows the module to its device; built here, outside any traced forward.
            self.register_buffer(REFERENCE_CACHE, _reference_cache(self), persistent=False)

    methods = {m: forward for m in FORWARDS if m != "forward"}  # CustomOp.forward dispatches to these
    attrs = {"__init__": __init__, SWITCHED_ATTR: True, **methods}
    return type(f"RopeEval{base.__name__}", (base,), attrs)


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def switchable_classes() -> list[type[RotaryEmbedding]]:
    """vLLM's RoPE classes whose forward is RotaryEmbedding's (they only change how `cos_sin_cache` is
    built), so swapping the forward swaps the path without changing the math. Every other RoPE class
    (its own forward: MRoPE, DeepSeek scaling, ...) stays vLLM's, and its calls count as unswitched."""
    out = [RotaryEmbedding]
    for cls in _subclasses(RotaryEmbedding):
        if vars(cls).get(SWITCHED_ATTR) or not cls.__module__.startswith("vllm."):
            continue  # ours, or a platform plugin's
        between = cls.__mro__[: cls.__mro__.index(RotaryEmbedding)]
        if not any(m in vars(c) for c in between for m in FORWARDS) and cls not in out:
            out.append(cls)
    return out


def register_classes(spec: PathSpec) -> list[str]:
    """Register our subclass for each switchable class; returns the names registered."""
    done = []
    for base in switchable_classes():
        existing = op_registry_oot.get(base.__name__)
        if existing is not None:
            if existing.__name__.startswith("RopeEval"):
                continue  # plugin loaded twice in one process
            raise RuntimeError(
                f"{base.__name__} already has an out-of-tree implementation ({existing.__module__}."
                f"{existing.__name__}); rope-eval cannot also replace it"
            )
        CustomOp.register_oot(_make_class(base, spec), name=base.__name__)
        done.append(base.__name__)
    return done
