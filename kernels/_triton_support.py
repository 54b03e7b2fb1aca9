"""Whether Triton can launch here, a late `triton.jit`, and the once-per-process fallback warning.

Triton chooses compiled or interpreted execution when `triton.jit` decorates a function, reading
TRITON_INTERPRET at that moment. The kernels here are decorated at their first launch instead, so a
caller may set the variable after importing this package, as long as it does so before that launch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # kernels are then never launched; their tl.constexpr annotations stay strings
    triton = tl = None

logger = logging.getLogger(__name__)
_warned = False
_scope = threading.local()  # what the kernels of this thread ran instead of Triton, inside fallback_scope


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): Triton's block shapes must be powers of two."""
    return 1 << max(n - 1, 0).bit_length()


def can_launch(device_type: str, *, has_triton: bool, interpret: bool, has_driver: bool) -> bool:
    """The launch decision, from inputs a test can set.

    The interpreter runs anywhere (it stages tensors through host memory); compiled Triton needs an
    active driver and tensors on its device, never CPU tensors.
    """
    if not has_triton:
        return False
    if interpret:
        return True
    return has_driver and device_type != "cpu"


def interpret_enabled() -> bool:
    # The truthy spellings Triton itself accepts for the variable.
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _has_driver() -> bool:
    # Without a GPU Triton raises "0 active drivers".
    try:
        triton.runtime.driver.active.get_current_target()
    except Exception:
        return False
    return True


def triton_usable(device: torch.device) -> bool:
    """Whether a Triton kernel can run on tensors of `device` in this process, as configured now."""
    return _usable(device.type, interpret_enabled())


@functools.cache
def _usable(device_type: str, interpret: bool) -> bool:
    # Cached: this sits on every call's path, and its inputs are the whole answer.
    has_triton = triton is not None
    has_driver = has_triton and not interpret and device_type != "cpu" and _has_driver()
    return can_launch(device_type, has_triton=has_triton, interpret=interpret, has_driver=has_driver)


def warn_fallback_once(what: str, device: torch.device, used: str = "native") -> None:
    """Record a fallback to `used` in the enclosing `fallback_scope` (every call: a caller counting what
    ran must see each one), and warn once per process: a warning on every call would flood a serving log."""
    seen = getattr(_scope, "seen", None)
    if seen is not None:
        seen.append(used)
    global _warned
    if _warned:
        return
    _warned = True
    reason = (
        "triton is not importable"
        if triton is None
        else f"no Triton driver for {device.type} tensors and TRITON_INTERPRET is not set"
    )
    logger.warning("%s: %s; using the %s torch implementation instead (warned once)", what, reason, used)


@contextlib.contextmanager
def fallback_scope() -> Iterator[list[str]]:
    """Collect what ran instead of a Triton kernel inside the block, one name per fallback: the RoPE
    path counts a call that fell back under its own name, never as the kernel it asked for."""
    outer = getattr(_scope, "seen", None)
    seen: list[str] = []
    _scope.seen = seen
    try:
        yield seen
    finally:
        _scope.seen = outer
        if outer is not None:
            outer.extend(seen)


class LazyJit:
    """`triton.jit(fn)`, applied at the first launch (see the module docstring).

    Kernels wrapped this way call Triton builtins only: a jitted helper, triton.language's own
    (tl.sum, tl.zeros, ...) included, keeps the mode in force when it was imported.
    """

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    @functools.cached_property
    def jitted(self) -> Any:
        return triton.jit(self.fn)

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., Any]:
        return self.jitted[grid]
