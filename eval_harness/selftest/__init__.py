"""`rope-eval selftest`: plant each RoPE bug of the catalogue (`bugs.py`) as a `custom:` path,
run the smallest workload that should expose it through real vLLM, and report which level
caught it and at what cost. Correct implementations (triton, and a shift applied to q and k
alike) run beside them: a check they fail is a false alarm.

The workload per model group is the probe (L1 + L2) plus, where the model has one, the eagle3
draft's own prompts (acceptance): the cheapest levels first, as the harness intends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eval_harness.analyze import diff_run
from eval_harness.config import LogprobConfig, ModelEntry, ProfileConfig, RunConfig
from eval_harness.gate import Check, Policy, evaluate
from eval_harness.runner import PathNotVerified, RunOptions, run
from eval_harness.suites import resolve_source

BUGS = "custom:eval_harness.selftest.bugs:"
LEVELS = ("L1", "L2", "L3", "acceptance")
EAGER = ["--dtype", "float32", "--enforce-eager", "--max-num-seqs", "16"]


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    bug: bool  # False: a correct implementation that must pass
    what: str


@dataclass(frozen=True)
class Group:
    name: str
    model: str
    draft: str | None
    cases: tuple[Case, ...]
    max_model_len: int = 2048
    probe_chars: int = 12000
    sequences: int = 8


def _bug(name: str, what: str) -> Case:
    return Case(name, BUGS + name, True, what)


TRITON = Case("triton", "triton", False, "our Triton kernel (correct)")
SHIFT = Case(
    "control_shift_both",
    BUGS + "control_shift_both",
    False,
    "q and k both one position further: invisible, RoPE is relative (correct)",
)

GROUPS: tuple[Group, ...] = (
    Group(
        "qwen3",
        "qwen3-tiny",
        "qwen3-tiny-eagle3",
        (
            TRITON,
            SHIFT,
            _bug("key_off_by_one", "positions off by one for the key only"),
            _bug("style_swapped", "neox and GPT-J styles swapped"),
            _bug("sin_sign_flipped", "sign of sin flipped"),
            _bug("bf16_math", "rotation computed in bf16 where fp32 is required"),
            _bug("draft_uses_target_cache", "eagle3 draft rotated with the target's rope_theta"),
        ),
    ),
    Group(
        "glm4-partial",
        "glm4-tiny",
        None,
        (
            TRITON,
            _bug("partial_rotates_whole_head", "whole head rotated although rotary is partial (64 of 128)"),
        ),
    ),
    Group(
        "glm4-rot96",
        "glm4-tiny-rot96",
        None,
        (
            TRITON,
            _bug("sin_offset_npot", "sin read at a power-of-two offset; rotary dim 96"),
        ),
    ),
    Group(
        "long-context",
        "qwen3-tiny",
        None,
        (_bug("wraps_past_4096", "positions wrap at 4096: only long contexts see it"),),
        max_model_len=8192,
        probe_chars=40000,
        sequences=4,
    ),
)


@dataclass
class CaseResult:
    group: str
    model: str
    id: str
    bug: bool
    what: str
    caught: bool
    level: str | None
    first_failure: str | None
    arm_seconds: float | None
    requests: int
    checks_failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.caught == self.bug


def group_config(g: Group) -> RunConfig:
    model = {"name": g.model, "path": f"builtin:{g.model}"}
    if g.draft:
        model["draft"] = {"path": f"builtin:{g.draft}", "num_speculative_tokens": 3}
    return RunConfig(
        name=f"selftest-{g.name}",
        models=[ModelEntry(**model, suites=[])],
        paths=["native", *(c.path for c in g.cases)],
        serve_args=[*EAGER, "--max-model-len", str(g.max_model_len)],
        l1=LogprobConfig(
            sequences={"smoke": g.sequences, "nightly": g.sequences, "release": g.sequences},
            probe_chars=g.probe_chars,
        ),
        profiles={"smoke": ProfileConfig(aa=False, concurrency=8)},
    )


def _level(check: Check) -> str:
    return next((lv for lv in LEVELS if check.name.startswith(lv)), "verification")


def judge(g: Group, run_dir: Path, checks: list[Check]) -> list[CaseResult]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    arms = manifest["models"][g.model]["arms"]
    out = []
    for case in g.cases:
        mine = [c for c in checks if c.comparison in (case.path, f"native vs {case.path}")]
        failed = [c for c in mine if not c.passed]
        failed.sort(key=lambda c: (LEVELS + ("verification",)).index(_level(c)))
        samples = run_dir / arms[case.path]["dir"] / "samples.jsonl"
        out.append(
            CaseResult(
                g.name,
                g.model,
                case.id,
                case.bug,
                case.what,
                bool(failed),
                _level(failed[0]) if failed else None,
                f"{failed[0].name}: {failed[0].detail}" if failed else None,
                arms[case.path].get("seconds"),
                sum(1 for _ in samples.open()) if samples.exists() else 0,
                [c.name for c in failed],
            )
        )
    return out


def run_group(g: Group, out: Path, models_dir: Path | None) -> list[CaseResult]:
    cfg = group_config(g)
    run_dir = out / cfg.name
    # A path that does not verify is reported by the gate's "path verified" check, per case.
    with contextlib.suppress(PathNotVerified):
        asyncio.run(
            run(
                RunOptions(
                    config=cfg,
                    profile="smoke",
                    out=run_dir,
                    source=resolve_source(None),
                    batch_size=4,
                    models_dir=models_dir,
                )
            )
        )
    checks = evaluate(diff_run(run_dir), Policy())  # the built-in (nightly) tolerances
    return judge(g, run_dir, checks)


def table(results: list[CaseResult]) -> str:
    lines = [
        "| model | implementation | planted bug? | result | caught at | first failing check | arm s "
        "| requests |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        verdict = (
            ("caught" if r.caught else "MISSED") if r.bug else ("pass" if not r.caught else "FALSE ALARM")
        )
        lines.append(
            f"| {r.model} | {r.id}: {r.what} | {'yes' if r.bug else 'no (control)'} | {verdict} | "
            f"{r.level or '–'} | {(r.first_failure or '–').replace('|', '/')} | "
            f"{r.arm_seconds if r.arm_seconds is not None else '–'} | {r.requests} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    groups = [g for g in GROUPS if not args.only or any(c.id in args.only for c in g.cases)]
    groups = [
        Group(
            g.name,
            g.model,
            g.draft,
            tuple(c for c in g.cases if not args.only or c.id in args.only),
            g.max_model_len,
            g.probe_chars,
            g.sequences,
        )
        for g in groups
    ]
    out = args.out.resolve() / f"selftest-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    results = [r for g in groups for r in run_group(g, out, args.models_dir)]
    md = table(results)
    (out / "selftest.md").write_text(md + "\n")
    (out / "selftest.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(md)
    bad = [r for r in results if not r.ok]
    print(
        f"\nselftest: {len(results) - len(bad)}/{len(results)} as expected"
        + (f"; wrong: {', '.join(r.id for r in bad)}" if bad else "")
        + f"\nresults: {out}"
    )
    return 0 if not bad else 1
