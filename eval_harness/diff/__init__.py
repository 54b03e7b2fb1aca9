"""Pure diff math of path A vs path B at levels L1 (logprobs), L2 (greedy tokens), L3 (task
accuracy) and eagle3 acceptance. No I/O: callers load the run store and pass plain data."""

from eval_harness.diff.acceptance import AcceptanceDiff, PathAcceptance, compare_acceptance
from eval_harness.diff.logprob import (
    L1Summary,
    PositionLogprobs,
    compare_sequence,
    from_prompt_logprobs,
    kl_topk,
    summarize_l1,
)
from eval_harness.diff.task import L3Result, compare_suite, compare_suites, paired_arrays
from eval_harness.diff.token import GreedyDiff, L2Summary, compare_greedy, summarize_l2

__all__ = [
    "AcceptanceDiff",
    "GreedyDiff",
    "L1Summary",
    "L2Summary",
    "L3Result",
    "PathAcceptance",
    "PositionLogprobs",
    "compare_acceptance",
    "compare_greedy",
    "compare_sequence",
    "compare_suite",
    "compare_suites",
    "from_prompt_logprobs",
    "kl_topk",
    "paired_arrays",
    "summarize_l1",
    "summarize_l2",
]
