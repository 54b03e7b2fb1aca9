"""`rope-eval plan`: what a profile will cost and what it can detect, before running it.

The point it makes to a release manager: task accuracy is an expensive detector. A 1-point
AIME change needs about 260 samples per problem, which is why L1 and L2 exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from eval_harness.config import ModelEntry, Profile, RunConfig
from eval_harness.stats import mde_mcnemar, mde_paired_proportion, samples_needed
from eval_harness.suites import DataSource, Item, get_suite

CHARS_PER_TOKEN = 4.0  # rough BPE average for English and LaTeX; enough for a budget
DEFAULT_DISCORDANCE = 0.05  # share of greedy problems that flip between two equivalent paths


@dataclass(frozen=True)
class SuitePlan:
    model: str
    suite: str
    problems: int
    k: int
    requests_per_path: int
    est_tokens_per_path: int
    mde: float  # minimum detectable Δ accuracy at 80% power (a proportion)
    mde_method: str
    k_for_effect: int | None  # samples per problem to detect the target effect


def _prompt_chars(suite_name: str, items: list[Item], style: str) -> float:
    suite = get_suite(suite_name)
    total = 0
    for it in items:
        p = suite.prompt(it, style)
        total += len(p.text or "") + sum(len(m["content"]) for m in p.messages or [])
    return total / max(1, len(items))


def plan_suite(
    cfg: RunConfig, model: ModelEntry, name: str, items: list[Item], effect: float, discordance: float
) -> SuitePlan:
    sc = cfg.suites[name]
    n, k = len(items), sc.sampling.k
    tokens = int(n * k * (_prompt_chars(name, items, sc.style) / CHARS_PER_TOKEN + sc.sampling.max_tokens))
    if sc.sampling.greedy:
        mde, method = mde_mcnemar(n, discordance), f"McNemar, {discordance:.0%} discordant"
        k_eff = None
    else:
        mde, method = mde_paired_proportion(n, k), "clustered bootstrap (ICC 0.6)"
        k_eff = samples_needed(effect, n)
    return SuitePlan(model.name, name, n, k, n * k, tokens, mde, method, k_eff)


def plan(
    cfg: RunConfig,
    profile: Profile,
    source: DataSource,
    effect: float = 0.01,
    discordance: float = DEFAULT_DISCORDANCE,
) -> list[SuitePlan]:
    out = []
    for model in cfg.models:
        for name in cfg.suites_for(model):
            items = get_suite(name).load(source, "test", cfg.suites[name].limit.get(profile))
            out.append(plan_suite(cfg, model, name, items, effect, discordance))
    return out


def render(plans: list[SuitePlan], cfg: RunConfig, profile: Profile, effect: float) -> str:
    paths = len(cfg.paths) + (1 if cfg.profile(profile).aa else 0)
    lines = [
        f"plan for {cfg.name} ({profile}): {len(cfg.paths)} paths"
        f"{' + A/A' if cfg.profile(profile).aa else ''}, {paths} arms per model",
        f"{'model':<16} {'suite':<14} {'problems':>8} {'k':>4} {'requests':>9} {'~tokens':>10} "
        f"{'MDE@80%':>8}  method; k to detect {effect:.1%}",
    ]
    for p in plans:
        mde = "none" if math.isinf(p.mde) else f"{p.mde:.1%}"
        k_eff = f"; k={p.k_for_effect}" if p.k_for_effect else ""
        lines.append(
            f"{p.model:<16} {p.suite:<14} {p.problems:>8} {p.k:>4} {p.requests_per_path:>9} "
            f"{p.est_tokens_per_path:>10} {mde:>8}  {p.mde_method}{k_eff}"
        )
    total = sum(p.requests_per_path for p in plans) * paths
    lines.append(
        f"total generation requests (all arms): {total}; L1 adds "
        f"{cfg.l1.sequences[profile]} teacher-forced sequences per arm"
    )
    return "\n".join(lines)
