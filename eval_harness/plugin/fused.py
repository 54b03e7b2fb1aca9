"""The `fused` and `custom-fused:` paths: one counted op in place of the QK-norm attention prologue.

Qwen3-form attention (vLLM's `Qwen3Attention`, `Qwen3MoeAttention`, and `Glm4MoeAttention` when its
config sets `use_qk_norm`) splits the qkv projection, RMS-normalises every q and k head, then rotates
them. vllm-ascend runs those three steps as one fused kernel; the `fused` path runs ours
(`eval_harness.kernels.fused`) there instead, so that the served model runs what such a deployment runs.

- Each attention class gets `fused_forward` in place of its `forward`, and an `__init__` that checks the
  layer once built, so an unsupported layer fails the server's start-up. The classes are patched when
  their module is first imported (an import hook), never at plugin load: importing vLLM's model modules
  can initialise CUDA, which vLLM itself avoids by inspecting models in a subprocess.
- The prologue runs inside `rope_eval::fused_qkv_norm_rope`, a torch.library op returning new q and k
  (v stays the split's view of qkv, as in vLLM): opaque to torch.compile, so it runs and counts on every
  call; under CUDA graphs its kernel and the counter bump are captured together. The count is bumped
  after the implementation returns, under the name of what ran: `fused` (our Triton kernel),
  `fused(fallback:native)` (the unfused torch math, where Triton cannot launch), or the `custom-fused:`
  name. One call per attention layer per forward pass.
- RoPE layers outside such an attention have no QK norm to fuse with (an eagle3 draft's Llama layer).
  They keep vLLM's native RoPE math and count as `<path>/rope:native`, so the counts show which layers
  ran fused and which did not. A model with no QK-norm attention at all (GLM-4-0414, Llama) fails at
  start-up: its first RoPE layer is built before any fused layer, which a served target never does.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

from eval_harness.kernels._triton_support import triton_usable, warn_fallback_once
from eval_harness.kernels.fused import split_qkv_rmsnorm_rope_native, split_qkv_rmsnorm_rope_triton
from eval_harness.paths import FALLBACK_SUFFIX, PLAIN_ROPE_SUFFIX, PathError, PathSpec, load_custom

from . import ops

# fn(qkv, q_weight, k_weight, *, q_size, kv_size, head_size, eps, cos_sin_cache, positions, is_neox)
#   -> (q, k, v): the signature of `split_qkv_rmsnorm_rope`, which `custom-fused:` targets share.
FusedFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

# Module -> the attention classes in it whose prologue is split + q_norm/k_norm + rotary_emb.
ATTENTION_CLASSES: dict[str, tuple[str, ...]] = {
    "vllm.model_executor.models.qwen3": ("Qwen3Attention",),
    "vllm.model_executor.models.qwen3_moe": ("Qwen3MoeAttention",),
    "vllm.model_executor.models.glm4_moe": ("Glm4MoeAttention",),
}
# Every name the forwards we replace use (identical in vLLM 0.26 and 0.32). A forward that uses anything
# else (an output gate, a per-layer window...) would lose it when replaced, so patching refuses instead.
KNOWN_FORWARD_NAMES = frozenset(
    {"qkv_proj", "split", "q_size", "kv_size", "view", "reshape", "shape", "head_dim", "num_heads"}
    | {"num_kv_heads", "use_qk_norm", "q_norm", "k_norm", "rotary_emb", "attn", "o_proj"}
)
_FORWARDS = ("forward_native", "forward_cuda", "forward_cpu", "forward_oot", "forward_hip", "forward_xpu")
SUPPORTED = "Qwen3Attention, Qwen3MoeAttention, Glm4MoeAttention with use_qk_norm"


class FusedPathError(PathError):
    """A model or vLLM version the fused path cannot serve as asked."""


@dataclass
class _State:
    path: str = ""
    impls: dict[str, FusedFn] | None = None
    sites: int = 0  # fused attention layers built in this process
    building: int = 0  # fused attention constructors in progress (their own RoPE is built inside)


_STATE = _State()


# ---- the op ------------------------------------------------------------------------------------


def _resolve(impl: str, device: torch.device) -> tuple[str, FusedFn]:
    """(the name to count, the function to run) for a path name on this device."""
    if impl != "fused":
        assert _STATE.impls is not None, "rope-eval fused path not installed in this process"
        return impl, _STATE.impls[impl]
    if triton_usable(device):
        return impl, split_qkv_rmsnorm_rope_triton
    warn_fallback_once("fused_qkv_norm_rope", device)
    return impl + FALLBACK_SUFFIX, split_qkv_rmsnorm_rope_native


def _own(x: torch.Tensor, like: torch.Tensor, width: int, what: str, impl: str) -> torch.Tensor:
    """`x` as a new contiguous [tokens, width] tensor: a custom op's output may not alias its input."""
    if x.shape != (like.shape[0], width):
        raise RuntimeError(f"{impl}: {what} has shape {tuple(x.shape)}, expected {(like.shape[0], width)}")
    x = x.to(like.dtype).contiguous()
    return x.clone() if x.untyped_storage().data_ptr() == like.untyped_storage().data_ptr() else x


@torch.library.custom_op("rope_eval::fused_qkv_norm_rope", mutates_args=())
def fused_qkv_norm_rope(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    q_size: int,
    kv_size: int,
    head_size: int,
    eps: float,
    is_neox: bool,
    impl: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    ran, fn = _resolve(impl, qkv.device)
    q, k, _ = fn(
        qkv,
        q_weight,
        k_weight,
        q_size=q_size,
        kv_size=kv_size,
        head_size=head_size,
        eps=eps,
        cos_sin_cache=cos_sin_cache,
        positions=positions,
        is_neox=is_neox,
    )
    out = _own(q, qkv, q_size, "q", ran), _own(k, qkv, kv_size, "k", ran)
    ops.count(ran, qkv.device)  # after the implementation returned: a count means it ran
    return out


@fused_qkv_norm_rope.register_fake
def _fused_fake(qkv, q_weight, k_weight, positions, cache, q_size, kv_size, head_size, eps, is_neox, impl):
    return qkv.new_empty((qkv.shape[0], q_size)), qkv.new_empty((qkv.shape[0], kv_size))


# ---- the attention layers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """One fused attention layer's fixed arguments, checked once when the layer is built."""

    q_size: int
    kv_size: int
    head_size: int
    eps: float
    is_neox: bool
    impl: str


def _checked_norm(attn: torch.nn.Module, name: str) -> torch.nn.Module:
    from vllm.model_executor.layers.layernorm import RMSNorm

    norm = getattr(attn, name, None)
    what = f"{type(attn).__name__}.{name}"
    if norm is None:
        raise FusedPathError(f"fused path: {what} is missing; the fused kernel replaces a QK-norm prologue")
    if not isinstance(norm, RMSNorm) or not norm.has_weight or norm.variance_size_override is not None:
        raise FusedPathError(
            f"fused path: {what} is {type(norm).__name__}; the kernel computes vLLM's RMSNorm with a weight "
            "over each whole head"
        )
    return norm


def site_of(attn: torch.nn.Module, impl: str) -> Site:
    """The layer's `Site`, or a `FusedPathError` saying why the fused kernel cannot stand in for it."""
    cls = type(attn).__name__
    if getattr(attn, "use_qk_norm", True) is False:
        raise FusedPathError(
            f"fused path: {cls} is built with use_qk_norm=false (this model's config): there is no q/k "
            "RMSNorm to fuse. Serve this model with native, triton, platform or reference."
        )
    q_norm, k_norm = _checked_norm(attn, "q_norm"), _checked_norm(attn, "k_norm")
    if q_norm.variance_epsilon != k_norm.variance_epsilon:
        raise FusedPathError(f"fused path: {cls} has different q_norm and k_norm eps; the kernel takes one")
    rope = attn.rotary_emb
    if not getattr(type(rope), "rope_eval_plain", False):
        raise FusedPathError(
            f"fused path: {cls} uses {type(rope).__name__}; the fused kernel takes RotaryEmbedding's "
            "[cos | sin] cache indexed by 1-D positions (not M-RoPE or dual-chunk RoPE)"
        )
    if rope.head_size != attn.head_dim or attn.q_size % attn.head_dim or attn.kv_size % attn.head_dim:
        raise FusedPathError(f"fused path: {cls}: rope head size {rope.head_size}, attention {attn.head_dim}")
    eps = float(q_norm.variance_epsilon)
    return Site(attn.q_size, attn.kv_size, attn.head_dim, eps, rope.is_neox_style, impl)


def fused_forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
    """The attention forward with split + q_norm + k_norm + rotary_emb as one counted op."""
    site: Site = self.rope_eval_site
    qkv, _ = self.qkv_proj(hidden_states)
    cache = self.rotary_emb._match_cos_sin_cache_dtype(qkv)  # as vLLM's RoPE forwards use it
    q, k = torch.ops.rope_eval.fused_qkv_norm_rope(
        qkv,
        self.q_norm.weight,
        self.k_norm.weight,
        positions,
        cache,
        site.q_size,
        site.kv_size,
        site.head_size,
        site.eps,
        site.is_neox,
        site.impl,
    )
    v = qkv.split([site.q_size, site.kv_size, site.kv_size], dim=-1)[2]
    attn_output = self.attn(q, k, v)
    output, _ = self.o_proj(attn_output)
    return output


def patch_attention(cls: type) -> None:
    """Give `cls` the fused forward and a constructor that checks each layer it builds."""
    if getattr(cls, "rope_eval_fused", False):
        return
    extra = set(cls.forward.__code__.co_names) - KNOWN_FORWARD_NAMES
    if extra:
        raise FusedPathError(
            f"fused path: {cls.__qualname__}.forward in this vLLM also uses {sorted(extra)}, which the fused "
            "forward would drop; eval_harness.plugin.fused must learn this version first"
        )
    original_init = cls.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs) -> None:
        _STATE.building += 1
        try:
            original_init(self, *args, **kwargs)
        finally:
            _STATE.building -= 1
        self.rope_eval_site = site_of(self, _STATE.path)
        _STATE.sites += 1

    cls.__init__ = __init__
    cls.forward = fused_forward
    cls.rope_eval_fused = True


def _patch_module(module: ModuleType) -> None:
    for name in ATTENTION_CLASSES[module.__name__]:
        patch_attention(getattr(module, name))


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the module before anyone can use its classes."""

    def __init__(self, loader: importlib.abc.Loader, patch: Callable[[ModuleType], None]) -> None:
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.patch(module)

    def __getattr__(self, name: str):  # get_source, get_filename...: inspect and linecache ask for them
        return getattr(self.loader, name)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, modules: set[str]) -> None:
        self.modules = modules

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, _patch_module)
        return spec


def _hook_attention_modules() -> None:
    pending = set()
    for name in ATTENTION_CLASSES:
        if name in sys.modules:
            _patch_module(sys.modules[name])
        else:
            pending.add(name)
    if pending and not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport(pending))


# ---- plain RoPE layers -------------------------------------------------------------------------


def _plain_rope_class(base: type, count_as: str) -> type:
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

    def __init__(self, *args, **kwargs) -> None:
        if _STATE.building == 0 and _STATE.sites == 0:
            raise FusedPathError(
                f"fused path: this model builds a RoPE layer outside any attention with QK norm, before any "
                f"such attention: it has no split + q/k RMSNorm + RoPE prologue to fuse (supported: "
                f"{SUPPORTED}). Serve it with native, triton, platform or reference."
            )
        base.__init__(self, *args, **kwargs)

    def forward(self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None = None):
        ops.mark(positions, count_as)
        return RotaryEmbedding.forward_native(self, positions, query, key)

    attrs = {"__init__": __init__, "rope_eval_plain": True, **dict.fromkeys(_FORWARDS, forward)}
    return type(f"RopeEvalFusedPlain{base.__name__}", (base,), attrs)


def _register_plain_rope(count_as: str) -> list[str]:
    """Out-of-tree RoPE classes for the layers the fused path leaves alone; the names registered."""
    from vllm.model_executor.custom_op import CustomOp, op_registry_oot

    from .rotary import switchable_classes

    done = []
    for base in switchable_classes():
        existing = op_registry_oot.get(base.__name__)
        if existing is not None:
            if getattr(existing, "rope_eval_plain", False):
                continue  # plugin loaded twice in one process
            raise FusedPathError(
                f"{base.__name__} already has an out-of-tree implementation ({existing.__module__}."
                f"{existing.__name__}); rope-eval cannot also replace it"
            )
        CustomOp.register_oot(_plain_rope_class(base, count_as), name=base.__name__)
        done.append(base.__name__)
    return done


def install(spec: PathSpec) -> list[str]:
    """Switch this process to a fused-kind path; returns what was switched, for the start-up log."""
    from .ascend import ascend_present

    if ascend_present():
        raise FusedPathError(
            f"path {spec.name}: not available with vllm-ascend, which owns these layers and fuses them with "
            "its own kernel (serve `platform` with its fuse_qknorm_rope on for that)"
        )
    _STATE.path = spec.name
    _STATE.impls = {spec.name: load_custom(spec)} if spec.kind == "custom-fused" else {}
    plain = _register_plain_rope(spec.name + PLAIN_ROPE_SUFFIX)
    _hook_attention_modules()
    attention = [f"{m.rsplit('.', 1)[1]}.{c}" for m, cs in ATTENTION_CLASSES.items() for c in cs]
    return [*attention, *(f"{p} (plain)" for p in plain)]
