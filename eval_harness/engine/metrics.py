"""Spec-decode counters from vLLM's Prometheus `/metrics`, summed across DP engines.

Acceptance is computed from counter *deltas* around a workload, so whatever the server did
before (warm-up, other suites) does not leak into a suite's figures.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from eval_harness.records import SpecDecodeCounters

_PREFIXES = ("vllm:", "vllm_")
_NAMES = {
    "spec_decode_num_drafts": "drafts",
    "spec_decode_num_draft_tokens": "draft_tokens",
    "spec_decode_num_accepted_tokens": "accepted",
}
_PER_POS = "spec_decode_num_accepted_tokens_per_pos"


def _base_name(name: str) -> str | None:
    for p in _PREFIXES:
        if name.startswith(p):
            name = name[len(p) :]
            return name.removesuffix("_total")
    return None


def parse_spec_decode(text: str) -> SpecDecodeCounters:
    """Parse Prometheus text; every sample of a counter is summed (one per `engine` label)."""
    totals = {v: 0.0 for v in _NAMES.values()}
    per_pos: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # skip `_created` timestamps
            base = _base_name(sample.name)
            if base in _NAMES:
                totals[_NAMES[base]] += sample.value
            elif base == _PER_POS:
                pos = int(sample.labels["position"])
                per_pos[pos] = per_pos.get(pos, 0.0) + sample.value
    ordered = tuple(per_pos.get(i, 0.0) for i in range(max(per_pos) + 1)) if per_pos else ()
    return SpecDecodeCounters(
        drafts=totals["drafts"],
        draft_tokens=totals["draft_tokens"],
        accepted=totals["accepted"],
        accepted_per_pos=ordered,
    )


async def scrape(base_url: str) -> SpecDecodeCounters:
    async with httpx.AsyncClient(timeout=30.0) as c:
        resp = await c.get(f"{base_url.rstrip('/')}/metrics")
    resp.raise_for_status()
    return parse_spec_decode(resp.text)
