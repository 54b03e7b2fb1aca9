"""Benchmark suites: GSM8K, AIME, LiveCodeBench (imported as eval_harness.suites).

One interface (`Suite`: load, prompt, score, score_many) over all of them; data comes from a
local directory (`--data-dir` / `ROPE_EVAL_DATA`) or the Hugging Face Hub.
"""

from eval_harness.suites.base import (
    Item,
    ModelOutput,
    Prompt,
    Suite,
    Verdict,
    data_hash,
    get_suite,
    suite_names,
)
from eval_harness.suites.data import DataMissingError, DataSource, resolve_source

__all__ = [
    "DataMissingError",
    "DataSource",
    "Item",
    "ModelOutput",
    "Prompt",
    "Suite",
    "Verdict",
    "data_hash",
    "get_suite",
    "resolve_source",
    "suite_names",
]
