"""vLLM general plugin: switch the RoPE path from `ROPE_EVAL_PATH` and count every call.

vLLM calls `register()` in every process (API server, engine core, workers). With the variable
unset it does nothing, so installing rope-eval never changes a user's vLLM.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from eval_harness.paths import (
    ENV_COUNTS_DIR,
    ENV_INSTANCE,
    ENV_PATH,
    PathSpec,
    RopeFn,
    check_signature,
    load_custom,
    parse_path,
)

logger = logging.getLogger("rope_eval.plugin")
ENV_CACHE_ISOLATED = "ROPE_EVAL_CACHE_ISOLATED"
_registered: PathSpec | None = None


def _implementation(spec: PathSpec) -> dict[str, RopeFn]:
    """The in-place kernel-signature function a path runs inside `rope_eval::apply`."""
    if spec.kind == "triton":
        from eval_harness.kernels.rope import rotary_embedding

        return {spec.name: rotary_embedding}
    if spec.kind == "reference":
        from eval_harness.kernels.reference import rotary_embedding_reference

        return {spec.name: rotary_embedding_reference}
    if spec.kind == "custom":
        fn = load_custom(spec)
        check_signature(spec, fn)  # fail the server's start-up, not its first request
        return {spec.name: fn}
    return {}  # native and platform keep vLLM's own code and only count


def _isolate_compile_cache(spec: PathSpec) -> None:
    """Give each path its own vLLM cache root. vLLM keys its torch.compile cache on the model and
    config, not on our variable: a triton server would otherwise load the graph a native server
    compiled, with the native op baked in, and silently run native (seen on CUDA; the call counts
    caught it). Child processes inherit the variable, so only the first process sets it."""
    if os.environ.get(ENV_CACHE_ISOLATED) == spec.name:
        return
    base = os.environ.get("VLLM_CACHE_ROOT") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vllm"
    )
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in spec.name)
    os.environ["VLLM_CACHE_ROOT"] = os.path.join(base, "rope-eval", slug)
    os.environ[ENV_CACHE_ISOLATED] = spec.name


def register() -> None:
    global _registered
    text = os.environ.get(ENV_PATH)
    if not text:
        return
    spec = parse_path(text)  # an unknown name fails the server's start-up, loudly
    if _registered is not None:
        return
    _isolate_compile_cache(spec)
    from . import ops
    from .counters import CounterBank, CountsWriter

    bank = CounterBank(spec.name)
    counts_dir = os.environ.get(ENV_COUNTS_DIR)
    writer = CountsWriter(bank, Path(counts_dir), os.environ.get(ENV_INSTANCE)) if counts_dir else None
    ops.install(bank, _implementation(spec), writer)
    from . import ascend

    if spec.fused:
        from .fused import install as install_fused

        switched = install_fused(spec)
    elif ascend.ascend_present():
        ascend.install(spec)
        switched = ["vllm_ascend rope_forward_oot"]
    else:
        from .rotary import register_classes

        switched = register_classes(spec)
    from .coverage import install

    install(bank, writer, ascend.note_model if ascend.ascend_present() else None)
    _registered = spec
    logger.warning(
        "rope-eval: RoPE path %s active in pid %d (%s)", spec.name, os.getpid(), ", ".join(switched)
    )
