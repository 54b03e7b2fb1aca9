"""Runs in a subprocess of tests/test_proof_plugin.py: the plugin loaded the way vLLM loads it (one
`register()` per process, the environment set by the caller), then one scenario. Prints one JSON line.

    python tests/plugin_probe.py cuda-spy | fork | fallback | coverage
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

ROOT = __file__.rsplit("/tests/", 1)[0] + "/"


def _ours(frame) -> bool:
    """Whether the code that called into torch is rope-eval's own (the repo, not its virtualenv)."""
    while frame is not None and "/torch/" in frame.f_code.co_filename:
        frame = frame.f_back
    name = frame.f_code.co_filename if frame is not None else ""
    return name.startswith(ROOT) and "/.venv/" not in name


def cuda_spy() -> dict:
    """What `import eval_harness.plugin` and `register()` call that could touch CUDA: Python functions of
    torch.cuda, C functions with cuda or pinning in their name, and tensor factories asked for pinned
    memory, split by who called: rope-eval's code, or a library it imported (vLLM's own imports probe
    Triton's drivers, which ask torch.cuda.is_available; every vLLM process does that anyway)."""
    import torch
    from vllm.platforms import current_platform

    current_platform.is_cpu()  # vLLM's own platform detection, done before plugins load in vLLM
    calls: dict[str, set[str]] = {"ours": set(), "imported": set()}

    def note(frame, what: str) -> None:
        calls["ours" if _ours(frame) else "imported"].add(what)

    def profile(frame, event, arg):
        if event == "call" and "/torch/cuda/" in frame.f_code.co_filename:
            note(frame.f_back, f"torch.cuda {frame.f_code.co_name}")
        elif event == "c_call":
            name = getattr(arg, "__name__", "")
            if "cuda" in name.lower() or "pin" in name.lower():
                note(frame, f"C {name}")

    def pin_guard(factory: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            if kwargs.get("pin_memory"):
                note(sys._getframe(1), f"{factory.__name__}(pin_memory=True)")
            return factory(*args, **kwargs)

        return wrapped

    originals = {n: getattr(torch, n) for n in ("zeros", "empty", "ones", "tensor", "full")}
    for name, factory in originals.items():
        setattr(torch, name, pin_guard(factory))
    sys.setprofile(profile)
    try:
        from eval_harness.plugin import register

        register()
    finally:
        sys.setprofile(None)
        for name, factory in originals.items():
            setattr(torch, name, factory)
    return {k: sorted(v) for k, v in calls.items()} | {"cuda_initialized": torch.cuda.is_initialized()}


def _rope_module():
    """A real vLLM RoPE module, built the way a model builds it (after the plugin registered)."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    with set_current_vllm_config(VllmConfig()):
        return get_rope(64, max_position=256, rope_parameters={"rope_type": "default", "rope_theta": 1e4})


def _call(rope, times: int) -> None:
    import torch

    for _ in range(times):
        positions = torch.arange(5)
        rope(positions, torch.randn(5, 2 * 64), torch.randn(5, 64))


def _child(times: int) -> None:
    from eval_harness.plugin.counters import FLUSH_SECONDS

    _call(_ROPE[0], times)
    time.sleep(4 * FLUSH_SECONDS)  # vLLM's workers live on; let the flush thread write (no atexit in a fork)


_ROPE: list = []


def fork() -> dict:
    """The parent registers and calls RoPE once, then forks a child that calls it three times, as vLLM
    forks its engine after loading plugins. Each process must write its own file, counted from zero."""
    import multiprocessing
    import os

    from eval_harness.plugin import register

    register()
    _ROPE.append(_rope_module())
    _call(_ROPE[0], 1)
    child = multiprocessing.get_context("fork").Process(target=_child, args=(3,))
    child.start()
    child.join(60)
    return {"parent": os.getpid(), "child": child.pid, "child_exit": child.exitcode}


def fallback() -> dict:
    """The triton path's op on CPU tensors: first without TRITON_INTERPRET, where Triton has no driver
    ("0 active drivers") and the kernel falls back to torch, then with it, where the kernel runs."""
    import os

    import torch

    from eval_harness.plugin import ops, register

    register()

    def call() -> dict[str, int]:
        before = ops._BANK.snapshot()
        ops.apply(
            torch.arange(5), torch.randn(5, 128), torch.randn(5, 64), 64, torch.randn(16, 64), True, "triton"
        )
        return {k: v - before.get(k, 0) for k, v in ops._BANK.snapshot().items() if v != before.get(k, 0)}

    os.environ.pop("TRITON_INTERPRET", None)
    without = call()
    os.environ["TRITON_INTERPRET"] = "1"
    return {"without_interpreter": without, "with_interpreter": call(), "coverage": coverage()}


def coverage() -> dict:
    """The coverage walk over a model-like tree: two layers sharing one switched RoPE instance (as vLLM's
    get_rope cache makes them) and one layer with a RoPE class the plugin does not switch (vLLM's DeepSeek
    YaRN class has its own forward)."""
    import torch
    from torch import nn
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding.deepseek_scaling_rope import (
        DeepseekScalingRotaryEmbedding,
    )

    from eval_harness.plugin import coverage as cov
    from eval_harness.plugin import ops, register

    register()  # a no-op when fallback() registered already
    before = ops._BANK.snapshot()

    class Attn(nn.Module):
        def __init__(self, rope: nn.Module):
            super().__init__()
            self.rotary_emb = rope

    class Model(nn.Module):
        def __init__(self, shared: nn.Module, foreign: nn.Module):
            super().__init__()
            self.layers = nn.ModuleList([Attn(shared), Attn(shared), Attn(foreign)])

    with set_current_vllm_config(VllmConfig()):
        foreign = DeepseekScalingRotaryEmbedding(64, 64, 256, 1e4, True, 1.0, torch.float32)
        model = Model(_rope_module(), foreign)
        found = cov.coverage(model, "target")
        for layer in model.layers:
            layer.rotary_emb(torch.arange(5), torch.randn(5, 2, 64), torch.randn(5, 1, 64))
    counts = {k: v - before.get(k, 0) for k, v in ops._BANK.snapshot().items() if v != before.get(k, 0)}
    return {"coverage": found.__dict__, "counts": counts}


def dp_index() -> dict:
    """A dense model's DP rank as vLLM's engine core sets it up: each rank an independent engine whose DP
    group holds only itself. Real vLLM groups (gloo, one process) under the reconfigured config."""
    import socket

    from vllm.config import ParallelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import parallel_state as ps

    from eval_harness.plugin.counters import dp_index, worker_identity

    cfg = VllmConfig(parallel_config=ParallelConfig(data_parallel_size=2, data_parallel_rank=1))
    cfg.parallel_config.reconfigure_for_independent_dp_rank()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with set_current_vllm_config(cfg):
        ps.init_distributed_environment(1, 0, f"tcp://127.0.0.1:{port}", 0, "gloo")
        ps.initialize_model_parallel(1, 1, backend="gloo")
    return {
        "group_dp": ps._DP.rank_in_group,
        "identity": str(worker_identity(dp_index(cfg))[0]),
        "from_group_alone": str(worker_identity()[0]),
    }


if __name__ == "__main__":
    print(
        json.dumps(
            {
                "cuda-spy": cuda_spy,
                "fork": fork,
                "fallback": fallback,
                "coverage": coverage,
                "dp-index": dp_index,
            }[sys.argv[1]]()
        )
    )
