"""RoPE paths: the named serving variants that rope-eval compares.

A path is chosen in the *server process* through `ROPE_EVAL_PATH`; this module parses and
resolves the name. It is imported by the vLLM plugin in every vLLM process, so it stays
light: no torch import at module level.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ENV_PATH = "ROPE_EVAL_PATH"
ENV_COUNTS_DIR = "ROPE_EVAL_COUNTS_DIR"
ENV_INSTANCE = "ROPE_EVAL_INSTANCE"  # one server start: count files of another start are stale

# `reference` is the yardstick the others are judged by: RoPE in float64, rounded once.
# `fused` replaces the QK-norm attention prologue (split, q/k RMSNorm, RoPE) with one kernel.
BUILTIN: tuple[str, ...] = ("native", "triton", "platform", "reference", "fused")
Kind = Literal["native", "triton", "platform", "reference", "fused", "custom", "custom-fused"]
# Kinds that replace the attention prologue rather than the RoPE op (eval_harness.plugin.fused).
FUSED_KINDS: tuple[str, ...] = ("fused", "custom-fused")
# What a fused-kind path counts besides its own name: the fused kernel's native fallback, and the
# plain RoPE layers it leaves alone (an eagle3 draft has no QK norm), which keep vLLM's native math.
FALLBACK_SUFFIX = "(fallback:native)"
PLAIN_ROPE_SUFFIX = "/rope:native"

# The kernel signature every implementation shares (vLLM's `_custom_ops.rotary_embedding`):
#   fn(positions, query, key | None, head_size, cos_sin_cache, is_neox) -> None, in place.
RopeFn = Callable[..., None]
KERNEL_PARAMS: tuple[str, ...] = ("positions", "query", "key", "head_size", "cos_sin_cache", "is_neox")


class PathError(ValueError):
    """An unknown path name, or a `custom:` target that does not import."""


@dataclass(frozen=True)
class PathSpec:
    kind: Kind
    module: str | None = None
    function: str | None = None

    @property
    def name(self) -> str:
        if self.kind in ("custom", "custom-fused"):
            return f"{self.kind}:{self.module}:{self.function}"
        return self.kind

    @property
    def fused(self) -> bool:
        return self.kind in FUSED_KINDS


def parse_path(text: str) -> PathSpec:
    """`native` | `triton` | `platform` | `reference` | `fused` | `custom:<module>:<function>` |
    `custom-fused:<module>:<function>`."""
    text = text.strip()
    if text in BUILTIN:
        return PathSpec(text)  # type: ignore[arg-type]
    for kind in ("custom", "custom-fused"):
        if text.startswith(kind + ":"):
            parts = text.split(":")
            if len(parts) == 3 and all(parts[1:]):
                return PathSpec(kind, parts[1], parts[2])  # type: ignore[arg-type]
            raise PathError(f"bad {kind} path {text!r}: expected {kind}:<module>:<function>")
    raise PathError(
        f"unknown RoPE path {text!r}: expected one of {', '.join(BUILTIN)}, custom:<module>:<function> "
        "or custom-fused:<module>:<function>"
    )


def load_custom(spec: PathSpec) -> RopeFn:
    """Import a `custom:` or `custom-fused:` target, failing with a message that names what was missing."""
    assert spec.kind in ("custom", "custom-fused") and spec.module and spec.function
    try:
        module = importlib.import_module(spec.module)
    except Exception as exc:  # any import-time failure of user code is a config error
        raise PathError(f"path {spec.name}: cannot import module {spec.module!r}: {exc}") from exc
    fn = getattr(module, spec.function, None)
    if not callable(fn):
        raise PathError(f"path {spec.name}: module {spec.module!r} has no callable {spec.function!r}")
    return fn


def accepted_counts(path: str) -> frozenset[str]:
    """The count names a correct run of `path` may show: its own, and for a fused-kind path the plain RoPE
    layers it leaves native (an eagle3 draft has no QK norm to fuse with). Never a fallback's name."""
    spec = parse_path(path)
    return frozenset({spec.name, spec.name + PLAIN_ROPE_SUFFIX} if spec.fused else {spec.name})


def check_signature(spec: PathSpec, fn: RopeFn) -> None:
    """PathError unless `fn` takes the kernel's six arguments, positionally and in the kernel's order.

    The names are checked, not only the count: an implementation with another layout (vllm-ascend's
    `rope_forward_triton(q, k, cos, sin, ...)`) takes six positional arguments too, and would run on the
    wrong ones. A `*args` signature cannot be checked and is accepted, as is a callable whose signature
    Python cannot inspect (a C function)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    expected = "(" + ", ".join(KERNEL_PARAMS) + ")"
    try:
        sig.bind(*KERNEL_PARAMS)
    except TypeError as exc:
        raise PathError(
            f"path {spec.name}: {spec.function}{sig} cannot be called as the kernel {expected}: {exc}"
        ) from None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(sig.parameters.values())
    names = [p.name for p in params if p.kind in positional][: len(KERNEL_PARAMS)]
    if len(names) == len(KERNEL_PARAMS) and tuple(names) != KERNEL_PARAMS:
        raise PathError(
            f"path {spec.name}: {spec.function}{sig} does not have the kernel signature {expected}; "
            "it is called with these six arguments, positionally, in this order"
        )


def check_path(text: str) -> PathSpec:
    """Parse a path and, for `custom:`, import its target and check its signature: a bad path fails here,
    in the harness, before any server starts, not minutes later in a worker's log."""
    spec = parse_path(text)
    if spec.kind == "custom":
        check_signature(spec, load_custom(spec))
    return spec
