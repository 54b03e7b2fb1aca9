"""Benchmark suites: GSM8K, AIME, LiveCodeBench (imported as eval_harness.suites)."""
