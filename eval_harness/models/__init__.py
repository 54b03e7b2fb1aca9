"""Tiny test models covering the RoPE forms rope-eval must check.

`SPECS` and `ModelSpec` are import-light. `build_all` and `build_model` pull in torch and transformers, so
they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eval_harness.models.specs import SPECS, ModelSpec

if TYPE_CHECKING:
    from eval_harness.models.builder import PROMPTS_FILE, SPEC_FILE, build_all, build_model

__all__ = ["PROMPTS_FILE", "SPECS", "SPEC_FILE", "ModelSpec", "build_all", "build_model"]

_LAZY = {"build_all", "build_model", "PROMPTS_FILE", "SPEC_FILE"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from eval_harness.models import builder

        return getattr(builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
