"""The paired workload: identical requests, seeds and order for every path.

Everything here is a pure function of the config, the profile and the data, so two paths
(or two runs, for resume) build byte-identical request lists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from eval_harness.config import LM_EVAL_PREFIX, ModelEntry, Profile, RunConfig, SuiteConfig
from eval_harness.engine.client import Request, Sampling
from eval_harness.engine.server import serve_arg
from eval_harness.records import Sample
from eval_harness.suites import DataSource, Item, data_hash, get_suite

PROBE = "probe"  # unscored prompts for models that run no suite: feeds L1 and L2 only
DRAFT_PROBE = "draft-probe"  # unscored prompts a builtin eagle3 draft was fitted on: acceptance


@dataclass(frozen=True)
class Work:
    request: Request
    suite: str
    item_id: str
    sample_idx: int
    prompt_hash: str


def derive_seed(run_seed: int, key: str) -> int:
    """A per-request seed: different per sample, identical across paths and reruns."""
    return int.from_bytes(hashlib.sha256(f"{run_seed}/{key}".encode()).digest()[:4], "big") >> 1


def _prompt_hash(messages: list[dict] | None, text: str | list[int] | None) -> str:
    return hashlib.sha256(json.dumps([messages, text], sort_keys=True).encode()).hexdigest()[:16]


def _sampling(sc: SuiteConfig, seed: int) -> Sampling:
    s = sc.sampling
    return Sampling(
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        seed=seed,
        logprobs=s.logprobs or None,
    )


def suite_work(cfg: RunConfig, name: str, items: list[Item]) -> list[Work]:
    sc = cfg.suites[name]
    suite = get_suite(name)
    out = []
    for item in items:
        prompt = suite.prompt(item, sc.style)
        for j in range(sc.sampling.k):
            key = f"{item.id}#{j}"
            req = Request(
                key=key,
                sampling=_sampling(sc, derive_seed(cfg.seed, key)),
                messages=prompt.messages,
                prompt=prompt.text,
            )
            out.append(Work(req, name, item.id, j, _prompt_hash(prompt.messages, prompt.text)))
    return out


def load_items(
    cfg: RunConfig, model: ModelEntry, profile: Profile, source: DataSource
) -> tuple[dict[str, list[Item]], dict[str, str]]:
    """Items per suite for this model and profile, and their data hashes for the manifest. `lm-eval:`
    suites load their own documents inside lm-eval: their hash is the resolved task config's."""
    items, hashes = {}, {}
    for name in cfg.suites_for(model):
        sc = cfg.suites[name]
        if name.startswith(LM_EVAL_PREFIX):
            hashes[name] = lm_eval_task_hash(name, source)
            continue
        items[name] = get_suite(name, sc.options).load(source, "test", sc.limit.get(profile))
        hashes[name] = data_hash(items[name])
    return items, hashes


def lm_eval_task_hash(name: str, source: DataSource) -> str:
    """Resolves the task (unknown names, bad YAML and missing data fail here, before any server starts)."""
    from eval_harness.suites.lm_eval_task import resolve_task, task_of_suite

    cfg, _, _ = resolve_task(task_of_suite(name) or name, source.root)
    return "sha256:" + hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def probe_work(cfg: RunConfig, model: ModelEntry, profile: Profile, max_tokens: int = 48) -> list[Work]:
    """Greedy continuations of fixed texts of growing length, so a position-dependent RoPE error
    shows in L1/L2 even where no suite runs. The longest fill the context window: vLLM keeps the
    last tokens of each prompt that would not fit."""
    from eval_harness.models.corpus import CORPUS

    max_len = serve_arg([*cfg.serve_args, *model.serve_args], "--max-model-len")
    keep = int(max_len) - max_tokens - 1 if max_len else None
    corpus = "\n".join(CORPUS)
    text = corpus * (1 + cfg.l1.probe_chars // len(corpus))
    n = cfg.l1.sequences[profile]
    out = []
    for i in range(n):
        prompt = text[: 200 + (cfg.l1.probe_chars - 200) * i // max(1, n - 1)]
        key = f"{PROBE}/{i}#0"
        req = Request(
            key=key,
            sampling=Sampling(max_tokens=max_tokens, logprobs=cfg.l1.top_k),
            prompt=prompt,
            truncate_prompt_tokens=keep,
        )
        out.append(Work(req, PROBE, f"{PROBE}/{i}", 0, _prompt_hash(None, prompt)))
    return out


def draft_probe_work(draft_dir: str | None, cfg: RunConfig) -> list[Work]:
    """The prompts a builtin eagle3 draft was fitted on: the only ones where a tiny draft is
    accepted at all, so its acceptance (and any RoPE damage to it) is measurable. Real drafts
    ship no such file, and this returns nothing."""
    from eval_harness.models.builder import PROMPTS_FILE

    path = Path(draft_dir) / PROMPTS_FILE if draft_dir else None
    if path is None or not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        ids = json.loads(line)["prompt_token_ids"]
        key = f"{DRAFT_PROBE}/{i}#0"
        req = Request(key=key, sampling=Sampling(max_tokens=48, logprobs=cfg.l1.top_k), prompt=ids)
        out.append(Work(req, DRAFT_PROBE, f"{DRAFT_PROBE}/{i}", 0, _prompt_hash(None, ids)))
    return out


def l1_work(cfg: RunConfig, profile: Profile, baseline: list[Sample]) -> list[Work]:
    """Teacher-force the baseline's own sequences (prompt + generated tokens) under a path."""
    seqs = [s for s in sorted(baseline, key=lambda s: s.key) if s.kind == "gen" and s.prompt_token_ids]
    out = []
    for s in seqs[: cfg.l1.sequences[profile]]:
        ids = list(s.prompt_token_ids or []) + list(s.token_ids)
        req = Request(
            key=f"l1/{s.key}", sampling=Sampling(max_tokens=1), prompt=ids, prompt_logprobs=cfg.l1.top_k
        )
        out.append(Work(req, "l1", s.item_id or s.key, 0, _prompt_hash(None, ids)))
    return out
