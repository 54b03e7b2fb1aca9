"""`rope-eval selftest`: plant each RoPE bug of the catalogue (`bugs.py`) as a `custom:` path, serve it
through real vLLM beside the reference and the native baseline, and report which level caught it and at
what cost. Each case states the level expected to catch it: a bug caught only later, or only because its
path did not verify, fails the selftest. Correct implementations (triton, platform, a shift applied to q
and k alike) run beside the bugs in every group: any check they fail is a false alarm.

The qwen3 and glm4-partial groups serve the trained toy models on toy-arith, so L3 and eagle3 acceptance
carry signal; the npot and long-context groups use random-weight models on the probe workload (L1/L2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from eval_harness.config import (
    LogprobConfig,
    ModelEntry,
    ProfileConfig,
    RunConfig,
    SamplingConfig,
    SuiteConfig,
)
from eval_harness.errors import PathNotVerified
from eval_harness.gate import LEVELS, Check, Policy, concerns, judge
from eval_harness.runner import RunOptions, run
from eval_harness.store import RunStore
from eval_harness.suites import resolve_source

BUGS = "custom:eval_harness.selftest.bugs:"
EAGER = ["--enforce-eager", "--max-num-seqs", "16"]
TOY_PROBLEMS = 120  # toy-arith problems per arm: 90% power for a 10-point drop (`rope-eval plan`)
L3_ALPHA = 0.01  # a bug that costs accuracy must do so at this level (issue: p < 0.01 at default size)


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    what: str
    level: str | None  # the level expected to catch it; None: a correct implementation (a control)
    l3_drop: bool = False  # must also lower toy accuracy, McNemar p < L3_ALPHA
    bf16_level: str | None | bool = True  # True: same as `level`; bf16 serving may make a bug a non-bug

    def expected(self, dtype: str) -> str | None:
        return self.level if dtype == "float32" or self.bf16_level is True else self.bf16_level  # type: ignore[return-value]


@dataclass(frozen=True)
class Group:
    name: str
    model: str
    draft: str | None
    cases: tuple[Case, ...]
    toy_problems: int = 0  # toy-arith problems; 0: the probe workload (L1/L2 only)
    max_model_len: int = 2048
    probe_chars: int = 12000
    sequences: int = 8


FUSED_BUGS = "custom-fused:eval_harness.selftest.fused_bugs:"


def _bug(name: str, what: str, level: str = "L1", **kw) -> Case:
    return Case(name, BUGS + name, what, level, **kw)


def _fused_bug(name: str, what: str, level: str = "L1", **kw) -> Case:
    return Case(name, FUSED_BUGS + name, what, level, **kw)


TRITON = Case("triton", "triton", "our Triton kernel (correct)", None)
PLATFORM = Case("platform", "platform", "vLLM's own op (correct)", None)
SHIFT = Case(
    "control_shift_both",
    BUGS + "control_shift_both",
    "q and k both one position further: invisible, RoPE is relative (correct)",
    None,
)

GROUPS: tuple[Group, ...] = (
    Group(
        "qwen3",
        "qwen3-toy",
        "qwen3-toy-eagle3",
        (
            TRITON,
            PLATFORM,
            SHIFT,
            _bug("key_off_by_one", "positions off by one for the key only", l3_drop=True),
            _bug("style_swapped", "neox and GPT-J styles swapped", l3_drop=True),
            _bug("sin_sign_flipped", "sign of sin flipped"),
            # In bf16 vLLM's own native math rotates in bf16: there this is what the baseline does.
            _bug("bf16_math", "rotation computed in bf16 where fp32 is required", bf16_level=None),
            _bug(
                "draft_uses_target_cache", "eagle3 draft rotated with the target's rope_theta", "acceptance"
            ),
        ),
        toy_problems=TOY_PROBLEMS,
    ),
    Group(
        "qwen3-fused",
        "qwen3-toy",  # trained q/k norm weights: under all-ones weights two of these bugs change nothing
        None,
        (
            Case("fused", "fused", "our fused split + q/k RMSNorm + RoPE kernel (correct)", None),
            Case(
                "control_fused_reference",
                FUSED_BUGS + "control_fused_reference",
                "the unfused torch prologue served through custom-fused (correct)",
                None,
            ),
            _fused_bug("norm_after_rope", "q/k RMSNorm applied after RoPE instead of before"),
            _fused_bug("k_norm_uses_q_weight", "k normalised with q_norm's weight"),
            _fused_bug("gqa_k_offset", "k read from the q/k boundary computed with the kv head count (GQA)"),
        ),
        toy_problems=TOY_PROBLEMS // 3,
    ),
    Group(
        "glm4-partial",
        "glm4-toy",
        None,
        (
            TRITON,
            SHIFT,
            _bug("partial_rotates_whole_head", "whole head rotated although rotary is partial (64 of 128)"),
        ),
        toy_problems=TOY_PROBLEMS // 3,
    ),
    Group(
        "glm4-rot96",
        "glm4-tiny-rot96",
        None,
        (TRITON, SHIFT, _bug("sin_offset_npot", "sin read at a power-of-two offset; rotary dim 96")),
    ),
    Group(
        "long-context",
        "qwen3-tiny",
        None,
        (TRITON, _bug("wraps_past_4096", "positions wrap at 4096: only long contexts see it")),
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
    what: str
    expected: str | None
    caught: bool
    level: str | None
    first_failure: str | None
    l3: str | None  # toy-arith Δ accuracy and McNemar p against native
    l3_ok: bool
    arm_seconds: float | None
    requests: int
    checks_failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if self.expected is None:
            return not self.caught
        in_time = self.level is not None and LEVELS.index(self.level) <= LEVELS.index(self.expected)
        return self.caught and self.level != "verification" and in_time and self.l3_ok

    @property
    def outcome(self) -> str:
        if self.expected is None:
            return "pass" if self.ok else "FALSE ALARM"
        if not self.caught:
            return "MISSED"
        return "caught" if self.ok else f"caught late ({self.level})"


def group_config(g: Group, dtype: str, serve_args: list[str]) -> RunConfig:
    model = {"name": g.model, "path": f"builtin:{g.model}"}
    if g.draft:
        model["draft"] = {"path": f"builtin:{g.draft}", "num_speculative_tokens": 3}
    suites = {}
    if g.toy_problems:
        limit = {"smoke": g.toy_problems, "nightly": g.toy_problems, "release": g.toy_problems}
        suites["toy-arith"] = SuiteConfig(sampling=SamplingConfig(max_tokens=40), limit=limit)
    seqs = {"smoke": g.sequences, "nightly": g.sequences, "release": g.sequences}
    return RunConfig(
        name=f"selftest-{g.name}",
        models=[ModelEntry(**model, suites=list(suites))],
        paths=["native", *(c.path for c in g.cases)],
        serve_args=[*serve_args, "--dtype", dtype, "--max-model-len", str(g.max_model_len)],
        suites=suites,
        l1=LogprobConfig(sequences=seqs, probe_chars=g.probe_chars),
        profiles={"smoke": ProfileConfig(aa=0, concurrency=8)},
    )


def _l3(checks: list[Check], run_dir: Path, g: Group, case: Case) -> tuple[str | None, bool]:
    """The case's toy-arith Δ against native, and whether an expected drop reached p < L3_ALPHA."""
    from eval_harness.analyze import Kind, load_evaluation

    me = load_evaluation(run_dir).models[g.model]
    comp = next((c for c in me.comparisons if c.kind is Kind.AB and c.b == case.path), None)
    r = comp.l3.get("toy-arith") if comp else None
    if r is None:
        return None, not case.l3_drop
    text = f"{r.accuracy_a.estimate:.3f} → {r.accuracy_b.estimate:.3f} (p={r.mcnemar_p:.2g})"
    ok = not case.l3_drop or (r.delta < 0 and (r.mcnemar_p or 1.0) < L3_ALPHA)
    return text, ok


def judge_group(g: Group, run_dir: Path, checks: list[Check], dtype: str) -> list[CaseResult]:
    store = RunStore(run_dir)
    out = []
    for case in g.cases:
        mine = [c for c in checks if concerns(c, case.path, "native")]
        failed = sorted((c for c in mine if not c.passed), key=lambda c: LEVELS.index(c.level))
        arm = store.arm(g.model, case.path)
        meta = arm.read_meta() if arm.meta_file.exists() else None
        l3, l3_ok = _l3(checks, run_dir, g, case)
        out.append(
            CaseResult(
                g.name,
                g.model,
                case.id,
                case.what,
                case.expected(dtype),
                bool(failed),
                failed[0].level if failed else None,
                f"{failed[0].name}: {failed[0].detail}" if failed else None,
                l3,
                l3_ok,
                meta.seconds if meta else None,
                sum(1 for _ in arm.samples()),
                [c.name for c in failed],
            )
        )
    return out


async def _run_groups(
    groups: list[Group], out: Path, args: argparse.Namespace, serve_args: list[str]
) -> None:
    """Every group's run in one event loop, their managed servers capped together by one set of slots:
    on a GPU the groups' servers start side by side, on the CPU one at a time."""
    slots = asyncio.Semaphore(args.parallel_servers)
    runs = [
        run(
            RunOptions(
                config=group_config(g, args.dtype, serve_args),
                profile="smoke",
                out=out / f"selftest-{g.name}",
                source=resolve_source(args.data_dir),
                batch_size=16,
                models_dir=args.models_dir,
                server_slots=slots,
            )
        )
        for g in groups
    ]
    for result in await asyncio.gather(*runs, return_exceptions=True):
        # A path that does not verify is reported by the gate's "path verified" check, per case.
        if isinstance(result, BaseException) and not isinstance(result, PathNotVerified):
            raise result


def judge_groups(groups: list[Group], out: Path, dtype: str) -> list[CaseResult]:
    results = []
    for g in groups:
        run_dir = out / f"selftest-{g.name}"
        _, checks = judge(run_dir, Policy(), fresh=True)  # the built-in (nightly) policy
        results += judge_group(g, run_dir, checks, dtype)
    return results


def table(results: list[CaseResult]) -> str:
    lines = [
        "| model | implementation | expected to catch | result | caught at | first failing check | toy-arith "
        "accuracy (native → path) | arm s | requests |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.id}: {r.what} | {r.expected or 'nothing (control)'} | {r.outcome} | "
            f"{r.level or '–'} | {(r.first_failure or '–').replace('|', '/')} | {r.l3 or '–'} | "
            f"{r.arm_seconds if r.arm_seconds is not None else '–'} | {r.requests} |"
        )
    return "\n".join(lines)


def selected(only: list[str] | None, names: list[str] | None = None) -> list[Group]:
    unknown = sorted(set(names or []) - {g.name for g in GROUPS})
    if unknown:
        raise ValueError(f"--group {unknown}: known groups are {[g.name for g in GROUPS]}")
    groups = [replace(g, cases=tuple(c for c in g.cases if not only or c.id in only)) for g in GROUPS]
    return [g for g in groups if g.cases and (not names or g.name in names)]


def listing() -> str:
    lines = []
    for g in GROUPS:
        lines.append(f"{g.name} ({g.model}{' + ' + g.draft if g.draft else ''}):")
        lines += [f"  {c.id:<28} {c.level or 'control'}: {c.what}" for c in g.cases]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.list:
        print(listing())
        return 0
    serve_args = shlex.split(args.serve_args) if args.serve_args is not None else EAGER
    out = args.out.resolve() / f"selftest-{args.dtype}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    groups = selected(args.only, args.group)
    asyncio.run(_run_groups(groups, out, args, serve_args))
    results = judge_groups(groups, out, args.dtype)
    md = table(results)
    (out / "selftest.md").write_text(md + "\n")
    (out / "selftest.json").write_text(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=1))
    print(md)
    bad = [r for r in results if not r.ok]
    print(
        f"\nselftest ({args.dtype}): {len(results) - len(bad)}/{len(results)} as expected"
        + (f"; wrong: {', '.join(r.id for r in bad)}" if bad else "")
        + f"\nresults: {out}"
    )
    return 0 if not bad else 1
