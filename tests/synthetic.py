"""A run directory written through the store from a synthetic language model, so the back half
(evaluate -> gate -> report) is tested on records with known truth, in milliseconds and without vLLM.

The "model" gives logits that depend on (prompt, position, previous token) through a hash. The reference
arm uses them as they are; a correct arm adds small noise (rounding); a bug arm adds large noise (a RoPE
error). Every arm records what the runner records: greedy generations with top-k logprobs, teacher-forced
prompt logprobs of the reference's sequences, scores and eagle3 acceptance batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval_harness.config import RunConfig
from eval_harness.proof import Status, Verification
from eval_harness.records import (
    AcceptanceBatch,
    ArmMeta,
    ModelMeta,
    Role,
    RunManifest,
    Sample,
    Score,
    SpecDecodeCounters,
)
from eval_harness.store import RunStore

VOCAB, TOP_K, PROMPT_LEN, GEN_LEN = 64, 5, 24, 16
MODEL = "toy"


@dataclass(frozen=True)
class ArmSpec:
    label: str
    path: str
    role: Role
    noise: float  # logit noise on top of the reference's: ~1e-3 rounding, ~1 a RoPE bug
    shuffle_seed: int | None = None
    acceptance: float = 0.6  # acceptance rate per draft position 1
    verified: bool = True


def _logits(prompt: int, pos: int, prev: int, noise: float, arm: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{prompt}/{pos}/{prev}".encode()).digest()[:8], "little")
    base = np.random.default_rng(seed).normal(0, 3.0, VOCAB)
    jitter = np.random.default_rng(seed ^ int.from_bytes(arm.encode()[:8].ljust(8, b"\0"), "little"))
    return base + noise * jitter.normal(0, 1.0, VOCAB)


def _logprobs(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    return z - np.log(np.exp(z).sum())


def _top(lp: np.ndarray, actual: int) -> list[list[float]]:
    ids = [int(i) for i in np.argsort(-lp)[:TOP_K]]
    if actual not in ids:
        ids.append(actual)
    return [[i, float(lp[i])] for i in ids]


def _prompt(i: int) -> list[int]:
    return [int(x) for x in np.random.default_rng(1000 + i).integers(0, VOCAB, PROMPT_LEN)]


def _generate(i: int, arm: ArmSpec) -> tuple[list[int], list[list[list[float]]]]:
    prompt = _prompt(i)
    toks, tops, prev = [], [], prompt[-1]
    for pos in range(PROMPT_LEN, PROMPT_LEN + GEN_LEN):
        lp = _logprobs(_logits(i, pos, prev, arm.noise, arm.label))
        tok = int(lp.argmax())
        toks.append(tok)
        tops.append(_top(lp, tok))
        prev = tok
    return toks, tops


def _teacher_forced(i: int, seq: list[int], arm: ArmSpec) -> list[list[list[float]] | None]:
    out: list[list[list[float]] | None] = [None]
    for pos in range(1, len(seq)):
        lp = _logprobs(_logits(i, pos, seq[pos - 1], arm.noise, arm.label))
        out.append(_top(lp, seq[pos]))
    return out


def write_run(root: Path, arms: list[ArmSpec], prompts: int = 24) -> Path:
    """A complete run directory with one model; the first arm must be the reference."""
    cfg = RunConfig.model_validate(
        {
            "name": "synthetic",
            "paths": [a.path for a in arms if a.role in (Role.BASELINE, Role.CANDIDATE)],
            "models": [{"name": MODEL, "path": "/nonexistent"}],
            "suites": {"toy-arith": {"limit": {"smoke": prompts}}},
        }
    )
    store = RunStore(root)
    ref = arms[0]
    ref_seqs = {i: _prompt(i) + _generate(i, ref)[0] for i in range(prompts)}
    for arm in arms:
        _write_arm(store, arm, ref_seqs)
    baseline = next(a for a in arms if a.role is Role.BASELINE)
    store.write_manifest(
        RunManifest(
            name="synthetic",
            profile="smoke",
            baseline=baseline.label,
            reference=ref.label,
            paths=cfg.paths,
            config=cfg.model_dump(mode="json"),
            data_source="synthetic",
            provenance={"versions": {"vllm": "synthetic", "torch": None}, "git_sha": None},
            started="2026-11-29T00:00:00+0000",
            finished="2026-11-29T00:00:01+0000",
            models={MODEL: ModelMeta(model_path="/nonexistent", arms=[a.label for a in arms])},
        )
    )
    return root


def _write_arm(store: RunStore, arm: ArmSpec, ref_seqs: dict[int, list[int]]) -> None:
    a = store.arm(MODEL, arm.label)
    status = Status.VERIFIED if arm.verified else Status.FAILED
    meta = ArmMeta(
        label=arm.label,
        path=arm.path,
        role=arm.role,
        fingerprint="f",
        parts={},
        shuffle_seed=arm.shuffle_seed,
        seconds=1.0,
        verification=Verification(status, "synthetic", {arm.path: 10}),
    )
    a.open(meta, resume=False)
    scores = []
    for i, seq in ref_seqs.items():
        toks, tops = _generate(i, arm)
        item = f"toy-arith/test/{i}"
        a.append_sample(
            Sample(
                key=f"{item}#0",
                kind="gen",
                suite="toy-arith",
                item_id=item,
                prompt_hash=str(i),
                token_ids=toks,
                prompt_token_ids=_prompt(i),
                top_logprobs=tops,
                finish_reason="length",
            )
        )
        a.append_sample(
            Sample(
                key=f"l1/{item}#0",
                kind="l1",
                suite="l1",
                item_id=item,
                prompt_hash=str(i),
                token_ids=[0],
                prompt_token_ids=seq,
                prompt_logprobs=_teacher_forced(i, seq, arm),
            )
        )
        scores.append(
            Score(key=f"{item}#0", suite="toy-arith", item_id=item, correct=float(toks[0] % 2 == 0))
        )
    a.append_scores(scores)
    for batch in range(4):
        drafts, rate = 100.0, arm.acceptance * (1 + 0.03 * batch)  # batches differ in difficulty
        per_pos = (drafts * rate, drafts * rate**2, drafts * rate**3)
        counters = SpecDecodeCounters(
            drafts=drafts, draft_tokens=3 * drafts, accepted=sum(per_pos), accepted_per_pos=per_pos
        )
        a.append_acceptance(AcceptanceBatch(suite="toy-arith", batch=batch, requests=6, counters=counters))
