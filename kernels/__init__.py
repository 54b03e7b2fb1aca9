"""Triton RoPE kernels, their float64/native references and benchmarks (imported as eval_harness.kernels)."""
