"""The typed records a run directory holds, one class per kind of file (docs/architecture.md).

They cross module boundaries (engine -> runner -> store -> analysis -> report), so they live here, with no
I/O and no heavy imports; `store.py` reads and writes them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from eval_harness.proof import Verification


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sample(Record):
    """One request's result. `key` is stable across paths: it pairs arm A's sample with arm B's."""

    key: str
    kind: str  # "gen" (suite generation) or "l1" (teacher-forced scoring)
    suite: str | None = None
    item_id: str | None = None
    sample_idx: int = 0
    seed: int | None = None
    temperature: float = 0.0  # 0: greedy, so A and B continuations can be compared token by token
    prompt_hash: str
    text: str = ""
    reasoning: str | None = None
    token_ids: list[int] = Field(default_factory=list)
    prompt_token_ids: list[int] | None = None
    # top-k per generated step / per prompt position, as [[token_id, logprob], ...]
    top_logprobs: list[list[list[float]]] | None = None
    prompt_logprobs: list[list[list[float]] | None] | None = None
    finish_reason: str | None = None
    batch: int | None = None
    server: str | None = None  # the server start that produced it: its counts must prove the path


class Score(Record):
    """A suite's verdict on one generated sample."""

    key: str
    suite: str
    item_id: str
    sample_idx: int = 0
    correct: float  # 0/1, or a fraction for suites that give partial credit
    extracted: str | None = None
    reason: str | None = None
    finish_reason: str | None = None


class SpecDecodeCounters(Record):
    """vLLM's spec-decode counters (cumulative, or a delta around a batch): the one shape they have."""

    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    accepted_per_pos: tuple[float, ...] = ()

    def _zip(self, other: SpecDecodeCounters, sign: int) -> tuple[float, ...]:
        n = max(len(self.accepted_per_pos), len(other.accepted_per_pos))
        a = self.accepted_per_pos + (0.0,) * (n - len(self.accepted_per_pos))
        b = other.accepted_per_pos + (0.0,) * (n - len(other.accepted_per_pos))
        return tuple(x + sign * y for x, y in zip(a, b, strict=True))

    def __add__(self, other: SpecDecodeCounters) -> SpecDecodeCounters:
        return SpecDecodeCounters(
            drafts=self.drafts + other.drafts,
            draft_tokens=self.draft_tokens + other.draft_tokens,
            accepted=self.accepted + other.accepted,
            accepted_per_pos=self._zip(other, 1),
        )

    def __sub__(self, other: SpecDecodeCounters) -> SpecDecodeCounters:
        return SpecDecodeCounters(
            drafts=self.drafts - other.drafts,
            draft_tokens=self.draft_tokens - other.draft_tokens,
            accepted=self.accepted - other.accepted,
            accepted_per_pos=self._zip(other, -1),
        )


class AcceptanceBatch(Record):
    """The counter delta around one batch of one suite's requests on one arm."""

    suite: str
    batch: int
    requests: int
    counters: SpecDecodeCounters


class Role(StrEnum):
    REFERENCE = "reference"  # the yardstick: RoPE in float64 (or the model in fp32)
    BASELINE = "baseline"  # the first configured path: a correct anchor
    AA = "aa"  # the baseline served again, fresh server, shuffled order: the noise floor
    CANDIDATE = "candidate"  # every other configured path


class ArmMeta(Record):
    """`arm.json`: what an arm is, the settings its samples were made under, and (once it has run) the
    proof of which RoPE implementation served it."""

    label: str
    path: str
    role: Role
    fingerprint: str
    parts: dict[str, Any]
    shuffle_seed: int | None = None  # A/A arms send their requests in a shuffled order
    urls: list[str] = Field(default_factory=list)
    seconds: float | None = None  # wall time of the arm, server start-up included
    verification: Verification | None = None
    tasks: dict[str, dict[str, Any]] = Field(default_factory=dict)  # `lm-eval:` suites: provenance, timing


class ModelMeta(Record):
    model_path: str
    draft_path: str | None = None
    data_hashes: dict[str, str] = Field(default_factory=dict)
    arms: list[str] = Field(default_factory=list)  # labels, in the order they ran


class RunManifest(BaseModel):
    """`manifest.json`: the run as a whole; updated as models finish, so it is not frozen."""

    model_config = ConfigDict(extra="forbid")

    name: str
    profile: str
    baseline: str
    reference: str  # the label of the reference arm
    paths: list[str]
    config: dict[str, Any]
    data_source: str
    provenance: dict[str, Any]
    started: str
    finished: str | None = None
    models: dict[str, ModelMeta] = Field(default_factory=dict)
