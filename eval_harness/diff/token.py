"""L2: greedy continuations of the same prompts under path A and path B.

Per prompt: are the token sequences identical; where do they first diverge; and does the
divergence pass vLLM's ``check_logprobs_close`` rule (tests/models/utils.py): walking both
sequences together, at the first position where the tokens differ, A's token must be in B's
top-k logprobs at that step AND B's token must be in A's top-k; nothing after it is compared.
When one continuation is a strict prefix of the other, the divergence index is the shorter
length (kind ``"length"``); there is no pair of tokens to check, so containment is None, and
like vLLM's rule (which only walks the common prefix) such a prompt counts as close.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from eval_harness.stats import Histogram, Interval, Result, histogram, pow2_edges, quantiles, wilson_ci

TopK = Sequence[Mapping[int, float]]
DivergenceKind = Literal["none", "token", "length"]


@dataclass(frozen=True)
class GreedyDiff(Result):
    identical: bool
    first_divergence: int | None
    kind: DivergenceKind
    token_a: int | None
    token_b: int | None
    contained: bool | None
    len_a: int
    len_b: int

    @property
    def close(self) -> bool:
        """vLLM's check_logprobs_close verdict (None containment counts as close)."""
        return self.contained is not False


def _check_topk(tokens: Sequence[int], top: TopK | None, side: str) -> None:
    if top is not None and len(top) != len(tokens):
        raise ValueError(f"path {side}: {len(tokens)} tokens but {len(top)} top-k logprob steps")


def compare_greedy(
    tokens_a: Sequence[int], tokens_b: Sequence[int], top_a: TopK | None = None, top_b: TopK | None = None
) -> GreedyDiff:
    """Compare one prompt's greedy continuations. ``top_a[i]`` is A's {token_id: logprob} at step
    i (same length as ``tokens_a``); without top-k lists, containment is None."""
    _check_topk(tokens_a, top_a, "A")
    _check_topk(tokens_b, top_b, "B")
    la, lb = len(tokens_a), len(tokens_b)
    for i, (ta, tb) in enumerate(zip(tokens_a, tokens_b)):  # noqa: B905 - prefix walk is intended
        if ta != tb:
            contained = None
            if top_a is not None and top_b is not None:
                contained = (ta in top_b[i]) and (tb in top_a[i])
            return GreedyDiff(False, i, "token", int(ta), int(tb), contained, la, lb)
    if la == lb:
        return GreedyDiff(True, None, "none", None, None, None, la, lb)
    return GreedyDiff(False, min(la, lb), "length", None, None, None, la, lb)


@dataclass(frozen=True)
class L2Summary(Result):
    n_prompts: int
    n_identical: int
    identical_rate: Interval
    n_token_divergence: int
    n_length_divergence: int
    n_contained: int
    containment_rate: float | None
    close_rate: float
    first_divergence_quantiles: dict[str, float]
    first_divergence_histogram: Histogram | None


def summarize_l2(diffs: Iterable[GreedyDiff]) -> L2Summary:
    """Aggregate per-prompt diffs. ``identical_rate`` carries a Wilson 95% CI;
    ``containment_rate`` is among token divergences with top-k available (None if there are
    none); ``close_rate`` is the share of prompts passing vLLM's rule."""
    ds = list(diffs)
    if not ds:
        raise ValueError("no prompts to summarize")
    n_ident = sum(d.identical for d in ds)
    token = [d for d in ds if d.kind == "token"]
    checked = [d for d in token if d.contained is not None]
    n_cont = sum(bool(d.contained) for d in checked)
    firsts = np.asarray([d.first_divergence for d in ds if d.first_divergence is not None], dtype=float)
    return L2Summary(
        n_prompts=len(ds),
        n_identical=n_ident,
        identical_rate=wilson_ci(n_ident, len(ds)),
        n_token_divergence=len(token),
        n_length_divergence=sum(d.kind == "length" for d in ds),
        n_contained=n_cont,
        containment_rate=n_cont / len(checked) if checked else None,
        close_rate=sum(d.close for d in ds) / len(ds),
        first_divergence_quantiles=quantiles(firsts, (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)),
        first_divergence_histogram=histogram(firsts, pow2_edges(firsts.max())) if firsts.size else None,
    )
