"""Runs in a subprocess of tests/test_ascend_switch.py, with the FAKE vllm_ascend on sys.path.

Loads rope-eval's plugin as vLLM would in each process (ROPE_EVAL_PATH is set by the caller), then
calls RoPE the two ways vllm-ascend reaches `rope_forward_oot`:
- `module`: through the module attribute, as `AscendRotaryEmbedding.forward_oot` does for key=None;
- `op`: through `torch.ops.vllm.npu_rotary_embedding`, as its forward does for every q/k call.
Both ways run once with the fake's HAS_TRITON true and once with it false (vllm-ascend's own RoPE
picks its Triton or its torch_npu branch by that global at call time).
Prints one JSON object: per RoPE form, route and HAS_TRITON value, the error against a float64
reference and the increments of rope-eval's per-implementation counters and of the fake's branches.
"""

from __future__ import annotations

import json
import sys
import traceback

import torch

# (name, q heads, k heads, head size, rotary dims, neox) for the three RoPE forms (Qwen3, GLM-4-0414, GLM-4.5)
FORMS = [
    ("qwen3", 4, 2, 128, 128, True),
    ("glm4-0414", 4, 2, 128, 64, False),
    ("glm45", 6, 2, 128, 64, True),
]
MAX_POSITION = 4096


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def main() -> dict:
    from eval_harness.plugin import register

    try:
        register()
    except Exception:
        return {"register_error": traceback.format_exc(limit=3)}
    import vllm_ascend.ops.rotary_embedding as mod

    from eval_harness.kernels.reference import cos_sin_cache, rotary_embedding_f64
    from eval_harness.plugin import ops

    results = []
    for has_triton in (True, False):
        mod.HAS_TRITON = has_triton
        for name, hq, hk, head, rot, neox in FORMS:
            g = torch.Generator().manual_seed(0)
            positions = torch.randint(0, MAX_POSITION, (9,), generator=g)
            query = torch.randn(9, hq * head, generator=g)
            key = torch.randn(9, hk * head, generator=g)
            cache = cos_sin_cache(MAX_POSITION, rot, base=1e6)
            ref_q, ref_k = rotary_embedding_f64(positions, query, key, head, cache, neox)
            for route in ("module", "op"):
                fn = mod.rope_forward_oot if route == "module" else torch.ops.vllm.npu_rotary_embedding
                counts, calls = ops._BANK.snapshot(), dict(mod.CALLS)
                rec: dict = {"form": name, "route": route, "has_triton": has_triton, "error": None}
                try:
                    q, k = fn(positions, query.clone(), key.clone(), cache, head, rot, neox)
                    assert q.shape == query.shape and k.shape == key.shape, (q.shape, k.shape)
                    rec["max_err"] = max(
                        (q.double() - ref_q).abs().max().item(), (k.double() - ref_k).abs().max().item()
                    )
                except Exception as exc:
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                rec["counts"] = _delta(counts, ops._BANK.snapshot())
                rec["fake_calls"] = _delta(calls, mod.CALLS)
                results.append(rec)
    # The triton path's kernel falls back to torch (with one warning) where Triton cannot launch.
    support = sys.modules.get("eval_harness.kernels._triton_support")
    module = module_route(mod)  # before the totals below, which must include it
    return {
        "register_error": None,
        "patched": bool(getattr(mod.rope_forward_oot, "_rope_eval", False)),
        "triton_fell_back": bool(support and support._warned),
        "counts_total": ops._BANK.snapshot(),
        "results": results,
        "module": module,
    }


def module_route(mod) -> dict:
    """RoPE through a vllm-ascend RoPE module after the plugin saw the model load (as vLLM's loader hook
    does), with the cache in bf16 as vllm-ascend builds it for a bf16 model: for `reference` the plugin must
    use a cache rebuilt from the module's parameters, not vllm-ascend's rounded one."""
    from vllm.config import VllmConfig, set_current_vllm_config

    from eval_harness.kernels.reference import reference_cos_sin_cache, rotary_embedding_f64
    from eval_harness.plugin import ascend, ops

    head, rot, base = 128, 64, 1e6
    with set_current_vllm_config(VllmConfig()):
        rope = mod.AscendRotaryEmbedding(head, rot, MAX_POSITION, base, True, torch.bfloat16)
        model = torch.nn.Sequential(torch.nn.ModuleDict({"rotary_emb": rope}))
        ascend.note_model(model, "target")
        g = torch.Generator().manual_seed(1)
        positions = torch.randint(0, MAX_POSITION, (9,), generator=g)
        query, key = torch.randn(9, 4 * head, generator=g), torch.randn(9, 2 * head, generator=g)
        before = ops._BANK.snapshot()
        # forward_oot: what vLLM dispatches to on the Ascend (out-of-tree) platform
        q, k = rope.forward_oot(positions, query.clone(), key.clone())
    # float64 all the way (reference.cos_sin_cache computes its frequencies in fp32, as vLLM does)
    inv_freq = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    exact = reference_cos_sin_cache(inv_freq, MAX_POSITION)
    ref_q, ref_k = rotary_embedding_f64(positions, query, key, head, exact, True)
    err = max((q.double() - ref_q).abs().max().item(), (k.double() - ref_k).abs().max().item())
    return {
        "max_err": err,
        "counts": _delta(before, ops._BANK.snapshot()),
        "switched": rope._rope_eval_switched,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
