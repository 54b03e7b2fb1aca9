"""RoPE paths: the named serving variants that rope-eval compares.

A path is chosen in the *server process* through `ROPE_EVAL_PATH`; this module parses and
resolves the name. It is imported by the vLLM plugin in every vLLM process, so it stays
light: no torch import at module level.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ENV_PATH = "ROPE_EVAL_PATH"
ENV_COUNTS_DIR = "ROPE_EVAL_COUNTS_DIR"
ENV_INSTANCE = "ROPE_EVAL_INSTANCE"  # one server start: count files of another start are stale

# `reference` is the yardstick the others are judged by: RoPE in float64, rounded once.
BUILTIN: tuple[str, ...] = ("native", "triton", "platform", "reference")
Kind = Literal["native", "triton", "platform", "reference", "custom"]

# The kernel signature every implementation shares (vLLM's `_custom_ops.rotary_embedding`):
#   fn(positions, query, key | None, head_size, cos_sin_cache, is_neox) -> None, in place.
RopeFn = Callable[..., None]


class PathError(ValueError):
    """An unknown path name, or a `custom:` target that does not import."""


@dataclass(frozen=True)
class PathSpec:
    kind: Kind
    module: str | None = None
    function: str | None = None

    @property
    def name(self) -> str:
        return f"custom:{self.module}:{self.function}" if self.kind == "custom" else self.kind


def parse_path(text: str) -> PathSpec:
    """`native` | `triton` | `platform` | `custom:<module>:<function>`."""
    text = text.strip()
    if text in BUILTIN:
        return PathSpec(text)  # type: ignore[arg-type]
    if text.startswith("custom:"):
        parts = text.split(":")
        if len(parts) == 3 and all(parts[1:]):
            return PathSpec("custom", parts[1], parts[2])
        raise PathError(f"bad custom path {text!r}: expected custom:<module>:<function>")
    raise PathError(
        f"unknown RoPE path {text!r}: expected one of {', '.join(BUILTIN)} or custom:<module>:<function>"
    )


def load_custom(spec: PathSpec) -> RopeFn:
    """Import a `custom:` target, failing with a message that names what was missing."""
    assert spec.kind == "custom" and spec.module and spec.function
    try:
        module = importlib.import_module(spec.module)
    except Exception as exc:  # any import-time failure of user code is a config error
        raise PathError(f"path {spec.name}: cannot import module {spec.module!r}: {exc}") from exc
    fn = getattr(module, spec.function, None)
    if not callable(fn):
        raise PathError(f"path {spec.name}: module {spec.module!r} has no callable {spec.function!r}")
    return fn
