"""torch.library custom ops through which every RoPE call passes.

Both ops are opaque to torch.compile (a `register_fake` gives their shapes), so their bodies
run on every call instead of being traced away, and the counter bump inside stays on the
data path. `apply` runs a kernel-signature implementation in place; `mark` only counts, for
paths whose math must stay traceable (vLLM's native math is compiled by Inductor in real
deployments, and the `native` baseline should be that, not an eager copy of it).

`apply` counts after the implementation returns, under the name of what ran: an implementation
that fell back (our Triton kernel where Triton cannot launch) counts as `triton(fallback:native)`,
so an arm that silently ran native math fails verification instead of passing with KL 0.
"""

from __future__ import annotations

import torch

from eval_harness.kernels._triton_support import fallback_scope
from eval_harness.paths import RopeFn

from .counters import CounterBank, CountsWriter

_BANK: CounterBank | None = None
_WRITER: CountsWriter | None = None
_IMPLS: dict[str, RopeFn] = {}


def install(bank: CounterBank, impls: dict[str, RopeFn], writer: CountsWriter | None = None) -> None:
    global _BANK, _WRITER
    _BANK, _WRITER = bank, writer
    _IMPLS.update(impls)


def alias(name: str, target: str) -> None:
    """Run `target`'s implementation under another counter name (a degraded variant of a path)."""
    _IMPLS[name] = _IMPLS[target]


def _bump(name: str, device: torch.device) -> None:
    if _BANK is not None:
        _BANK.bump(name, device)
        if _WRITER is not None and not _WRITER.started:
            _WRITER.ensure_started()  # the first call of this process (or of a forked child)


def executed_name(impl: str, fallbacks: list[str]) -> str:
    """The counter name of a call: the implementation, or what it fell back to."""
    return f"{impl}(fallback:{'+'.join(sorted(set(fallbacks)))})" if fallbacks else impl


def count(name: str, device: torch.device) -> None:
    """Count one call of `name` made inside another rope_eval op (the fused path's, plugin/fused.py)."""
    _bump(name, device)


@torch.library.custom_op("rope_eval::apply", mutates_args=("query", "key"))
def apply(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
    impl: str,
) -> None:
    with fallback_scope() as fallbacks:
        _IMPLS[impl](positions, query, key, head_size, cos_sin_cache, is_neox)
    _bump(executed_name(impl, fallbacks), query.device)


@apply.register_fake
def _apply_fake(positions, query, key, head_size, cos_sin_cache, is_neox, impl) -> None:
    return None


# `positions` is declared mutated (it is not) so the compiler keeps the op and its order:
# an op with no used output and no mutation would be dead-code-eliminated.
@torch.library.custom_op("rope_eval::mark", mutates_args=("positions",))
def mark(positions: torch.Tensor, impl: str) -> None:
    _bump(impl, positions.device)


@mark.register_fake
def _mark_fake(positions, impl) -> None:
    return None
