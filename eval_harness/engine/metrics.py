"""Spec-decode counters from vLLM's Prometheus `/metrics`, summed across DP engines.

Acceptance is computed from counter *deltas* around a workload, so whatever the server did
before (warm-up, other suites) does not leak into a suite's figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

_PREFIXES = ("vllm:", "vllm_")
_NAMES = {
    "spec_decode_num_drafts": "drafts",
    "spec_decode_num_draft_tokens": "draft_tokens",
    "spec_decode_num_accepted_tokens": "accepted",
}
_PER_POS = "spec_decode_num_accepted_tokens_per_pos"


@dataclass(frozen=True)
class SpecDecodeCounters:
    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    accepted_per_pos: tuple[float, ...] = field(default_factory=tuple)

    def __sub__(self, other: SpecDecodeCounters) -> SpecDecodeCounters:
        n = max(len(self.accepted_per_pos), len(other.accepted_per_pos))
        a = self.accepted_per_pos + (0.0,) * (n - len(self.accepted_per_pos))
        b = other.accepted_per_pos + (0.0,) * (n - len(other.accepted_per_pos))
        return SpecDecodeCounters(
            self.drafts - other.drafts,
            self.draft_tokens - other.draft_tokens,
            self.accepted - other.accepted,
            tuple(x - y for x, y in zip(a, b, strict=False)),
        )


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
    return SpecDecodeCounters(totals["drafts"], totals["draft_tokens"], totals["accepted"], ordered)


async def scrape(client: httpx.AsyncClient | None, base_url: str) -> SpecDecodeCounters:
    if client is None:
        async with httpx.AsyncClient(timeout=30.0) as c:
            resp = await c.get(f"{base_url.rstrip('/')}/metrics")
    else:
        resp = await client.get(f"{base_url.rstrip('/')}/metrics")
    resp.raise_for_status()
    return parse_spec_decode(resp.text)
