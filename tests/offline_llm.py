"""Runs in a subprocess of tests/test_offline_llm.py: offline `vllm.LLM` with the plugin's environment.

    ROPE_EVAL_PATH=native ROPE_EVAL_COUNTS_DIR=DIR python tests/offline_llm.py MODEL [--draft DRAFT] [--tp N]
        [--graphs] [--dtype bfloat16] [--max-tokens 64]

(`--graphs` drops `enforce_eager`: on a GPU the model then runs under CUDA graphs.)

vLLM starts its engine (and workers) with the start method of VLLM_WORKER_MULTIPROC_METHOD; with `spawn`
the children re-import this file, hence the `__main__` guard. Prints one JSON line: the generated token
ids and whether CUDA was initialised in this (the parent) process.
"""

from __future__ import annotations

import argparse
import json

PROMPTS = ["Rotary position embeddings encode where each token sits", "def solve(n: int) -> int:\n"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--draft")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--graphs", action="store_true", help="compile and capture graphs (no enforce_eager)")
    ap.add_argument("--gpu", action="store_true", help="CUDA: the Triton attention backend, a small share")
    args = ap.parse_args()

    import torch
    from vllm import LLM, SamplingParams

    kwargs: dict = {}
    if args.gpu:
        # The cut-down CUDA vLLM has no FlashAttention and no custom all-reduce; a fixed KV size skips the
        # start-up memory profiling, so the test runs beside other servers on the same GPU.
        kwargs.update(
            attention_config={"backend": "TRITON_ATTN"},
            gpu_memory_utilization=0.05,
            kv_cache_memory_bytes=1 << 30,
            disable_custom_all_reduce=True,
        )
    if args.draft:
        kwargs["speculative_config"] = {"method": "eagle3", "model": args.draft, "num_speculative_tokens": 3}
    llm = LLM(
        model=args.model,
        dtype=args.dtype,
        max_model_len=512,
        max_num_seqs=4,
        enforce_eager=not args.graphs,
        tensor_parallel_size=args.tp,
        seed=0,
        **kwargs,
    )
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=args.max_tokens, temperature=0.0))
    print(
        json.dumps(
            {
                "tokens": [list(o.outputs[0].token_ids) for o in outs],
                "parent_cuda_initialized": torch.cuda.is_initialized(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
