"""`rope-eval`: did switching the RoPE path change the model?

Exit codes: 0 ok, 1 gate failed, 2 usage or config error (3 for a run that broke: a server
that would not start or died, a path that did not verify).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_RUN = 0, 1, 2, 3
DATA_HELP = "benchmark data directory (default: $ROPE_EVAL_DATA, else the Hugging Face Hub via `datasets`)"


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="run config YAML (see configs/)")
    p.add_argument(
        "--profile",
        choices=["smoke", "nightly", "release"],
        default="smoke",
        help="budget profile: problem counts, A/A repeat (default smoke)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs"), help="parent of the run directory (default runs/)"
    )
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR")
    p.add_argument("--data-dir", type=Path, help=DATA_HELP)
    p.add_argument("--models-dir", type=Path, help="where builtin: tiny models are built (default ~/.cache)")
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="PATH=URL",
        help="attach to a running server for PATH instead of starting one (repeat a PATH to "
        "shard across DP replicas); such paths are unverified unless counts are available",
    )
    p.add_argument(
        "--counts-dir",
        action="append",
        default=[],
        metavar="PATH=DIR",
        help="attach mode: the ROPE_EVAL_COUNTS_DIR the server for PATH writes to (a shared filesystem); "
        "with it an attached arm is verified like a managed one",
    )
    p.add_argument(
        "--parallel-servers",
        type=int,
        default=1,
        metavar="N",
        help="managed servers at once after the reference (a GPU holds several small ones; default 1)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="requests between metrics scrapes (default 32)")
    p.add_argument(
        "--aa",
        type=int,
        metavar="N",
        help="A/A arms (the baseline again, fresh server, shuffled order) instead of the profile's count",
    )
    p.add_argument("--model", action="append", metavar="NAME", help="run only these models of the config")
    p.add_argument(
        "--path", action="append", metavar="PATH", help="run only these paths (baseline always runs)"
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="rope-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="serve every path and store paired samples",
        description="Serve each configured RoPE path through vLLM (or attach with --endpoint), "
        "send each the identical workload, and store every sample.",
    )
    _add_run_args(p)

    p = sub.add_parser("eval", help="run + diff + report + gate in one go (what `make eval` calls)")
    _add_run_args(p)
    p.add_argument("--policy", type=Path, help="gate policy YAML (default: built-in tolerances)")

    p = sub.add_parser("diff", help="compare paths in a run directory (writes diff.json)")
    p.add_argument("run_dir", type=Path)

    p = sub.add_parser("report", help="Markdown, JSON and HTML sign-off report for a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--policy", type=Path, help="gate policy used for the verdict line")

    p = sub.add_parser("gate", help="exit 0 if the run passes the policy, 1 if not; JUnit XML for CI")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--policy", type=Path, help="policy YAML (see policies/)")
    p.add_argument("--junit", type=Path, help="write JUnit XML here (default RUN_DIR/gate-junit.xml)")
    p.add_argument("--only", metavar="PATH", help="gate only this path against the baseline")

    p = sub.add_parser("plan", help="requests, tokens and minimum detectable effect per suite")
    p.add_argument("config", type=Path)
    p.add_argument("--profile", choices=["smoke", "nightly", "release"], default="nightly")
    p.add_argument("--effect", type=float, default=0.01, help="target Δ accuracy for sizing k (default 0.01)")
    p.add_argument("--data-dir", type=Path, help=DATA_HELP)

    p = sub.add_parser("models", help="build the tiny test models")
    msub = p.add_subparsers(dest="models_cmd", required=True, metavar="ACTION")
    b = msub.add_parser("build", help="build tiny Qwen3 / GLM-4 / GLM-4.5 models and an eagle3 draft")
    b.add_argument("dir", type=Path)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--model", action="append", help="only these models (repeatable)")

    p = sub.add_parser("selftest", help="plant known RoPE bugs and show which level catches each")
    p.add_argument("--out", type=Path, default=Path("runs"), help="parent of the selftest run directory")
    p.add_argument("--data-dir", type=Path, help=DATA_HELP)
    p.add_argument("--models-dir", type=Path, help="where builtin: tiny models are built")
    p.add_argument("--only", action="append", help="run only these case ids (repeatable)")
    p.add_argument(
        "--group", action="append", metavar="NAME", help="run only these groups (repeatable; see --list)"
    )
    p.add_argument("--list", action="store_true", help="print the groups and their cases, and exit")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="serving dtype (default float32; bfloat16 is how GPUs and NPUs serve)",
    )
    p.add_argument(
        "--serve-args",
        default=None,
        metavar="ARGS",
        help="vLLM arguments for every server, replacing the CPU default (eager, 16 sequences); e.g. on a "
        'GPU: "--gpu-memory-utilization 0.05 --attention-backend TRITON_ATTN"',
    )
    p.add_argument(
        "--parallel-servers", type=int, default=1, metavar="N", help="servers at once after the reference"
    )
    return ap


def _endpoints(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        path, sep, url = v.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ValueError(f"--endpoint {v!r}: expected PATH=http://host:port")
        out.setdefault(path, []).append(url)
    return out


def _counts_dirs(values: list[str], endpoints: dict[str, list[str]]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        path, sep, directory = v.partition("=")
        if not sep or not directory:
            raise ValueError(f"--counts-dir {v!r}: expected PATH=DIR")
        if path not in endpoints:
            raise ValueError(f"--counts-dir {v!r}: no --endpoint attaches {path!r}")
        if not Path(directory).is_dir():
            raise ValueError(f"--counts-dir {v!r}: {directory} is not a readable directory")
        out[path] = Path(directory)
    if len(set(out.values())) != len(out):
        raise ValueError("--counts-dir: two paths share one counts directory; each server needs its own")
    return out


def _narrowed(cfg, args: argparse.Namespace):
    """The config as `--model`, `--path` and `--aa` narrow it."""
    from eval_harness.runner import with_paths

    if args.model:
        missing = sorted(set(args.model) - {m.name for m in cfg.models})
        if missing:
            raise ValueError(f"--model {missing}: not in the config's models")
        cfg = cfg.model_copy(update={"models": [m for m in cfg.models if m.name in args.model]})
    if args.path:
        missing = sorted(set(args.path) - set(cfg.paths))
        if missing:
            raise ValueError(f"--path {missing}: not in the config's paths {cfg.paths}")
        cfg = with_paths(cfg, args.path)
    if args.aa is not None:
        if args.aa < 0:
            raise ValueError("--aa must be 0 or more")
        profile = cfg.profile(args.profile).model_copy(update={"aa": args.aa})
        cfg = cfg.model_copy(update={"profiles": {**cfg.profiles, args.profile: profile}})
    return cfg


def _run_options(args: argparse.Namespace):
    from eval_harness.config import load_config
    from eval_harness.runner import RunOptions, plan_arms
    from eval_harness.store import RunStore
    from eval_harness.suites import resolve_source

    cfg = _narrowed(load_config(args.config), args)
    endpoints = _endpoints(args.endpoint)
    known = {*cfg.paths, *(a.label for a in plan_arms(cfg, args.profile))}
    unknown = set(endpoints) - known
    if unknown:
        raise ValueError(
            f"--endpoint names {sorted(unknown)}, neither a path nor an arm of this run ({sorted(known)})"
        )
    if args.parallel_servers < 1:
        raise ValueError("--parallel-servers must be at least 1")
    if args.resume:
        out = args.resume.resolve()
        if not RunStore(out).exists():
            raise ValueError(f"--resume {out}: no manifest.json there; not a rope-eval run directory")
    else:
        models = "-".join(args.model) + "-" if args.model else ""
        out = args.out.resolve() / f"{cfg.name}-{models}{args.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    return RunOptions(
        config=cfg,
        profile=args.profile,
        out=out,
        source=resolve_source(args.data_dir),
        resume=args.resume is not None,
        endpoints=endpoints,
        counts_dirs=_counts_dirs(args.counts_dir, endpoints),
        batch_size=args.batch_size,
        models_dir=args.models_dir,
        parallel_servers=args.parallel_servers,
    )


def _sigterm_as_interrupt() -> None:
    # CI runners stop jobs with SIGTERM: unwind like Ctrl-C so every server is stopped.
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cmd_run(args: argparse.Namespace) -> Path:
    from eval_harness.runner import run

    opts = _run_options(args)
    print(f"run directory: {opts.out}", file=sys.stderr)
    return asyncio.run(run(opts))


def cmd_report(run_dir: Path, policy_path: Path | None) -> bool:
    from eval_harness.gate import judge, load_policy, passed
    from eval_harness.report import render

    policy = load_policy(policy_path)
    evaluation, checks = judge(run_dir, policy)
    paths = render(evaluation, checks, policy, run_dir)
    print(paths["md"].read_text())
    print(f"HTML report: {paths['html'].resolve()}", file=sys.stderr)
    return passed(checks)


def cmd_gate(args: argparse.Namespace) -> int:
    from eval_harness.gate import judge, junit_xml, load_policy, only_path, passed
    from eval_harness.store import RunStore, write_text_atomic

    evaluation, checks = judge(args.run_dir, load_policy(args.policy))
    if args.only:
        checks = only_path(checks, evaluation, args.only)
    if args.junit:
        write_text_atomic(args.junit, junit_xml(checks))
    else:
        RunStore(args.run_dir).write_document("gate-junit.xml", junit_xml(checks))
    for c in checks:
        print(f"{'PASS' if c.passed else 'FAIL'}  {c.model} · {c.subject} · {c.name}: {c.detail}")
    ok = passed(checks)
    print(f"gate: {'PASS' if ok else 'FAIL'} ({sum(c.passed for c in checks)}/{len(checks)} checks)")
    return EXIT_OK if ok else EXIT_GATE


def cmd_plan(args: argparse.Namespace) -> int:
    from eval_harness.config import load_config
    from eval_harness.plan import plan, render
    from eval_harness.suites import resolve_source

    cfg = load_config(args.config)
    print(
        render(
            plan(cfg, args.profile, resolve_source(args.data_dir), args.effect),
            cfg,
            args.profile,
            args.effect,
        )
    )
    return EXIT_OK


def dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "run":
        cmd_run(args)
        return EXIT_OK
    if args.cmd == "eval":
        run_dir = cmd_run(args)
        return EXIT_OK if cmd_report(run_dir, args.policy) else EXIT_GATE
    if args.cmd == "diff":
        from eval_harness.analyze import evaluate_run

        evaluate_run(args.run_dir)
        print(f"wrote {args.run_dir / 'diff.json'}")
        return EXIT_OK
    if args.cmd == "report":
        return EXIT_OK if cmd_report(args.run_dir, args.policy) else EXIT_GATE
    if args.cmd == "gate":
        return cmd_gate(args)
    if args.cmd == "plan":
        return cmd_plan(args)
    if args.cmd == "models":
        from eval_harness.models.builder import main as build_main

        argv = [str(args.dir), "--seed", str(args.seed)] + [
            a for m in args.model or [] for a in ("--model", m)
        ]
        return build_main(argv)
    if args.cmd == "selftest":
        from eval_harness.selftest import main as selftest_main

        return selftest_main(args)
    raise AssertionError(args.cmd)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress bars
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _sigterm_as_interrupt()
    from eval_harness.errors import RUN_ERRORS, USAGE_ERRORS

    try:
        return dispatch(args)
    except USAGE_ERRORS as exc:
        print(f"rope-eval: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RUN_ERRORS as exc:
        print(f"rope-eval: run failed: {exc}", file=sys.stderr)
        return EXIT_RUN
    except KeyboardInterrupt:
        print("rope-eval: interrupted; servers stopped. Continue with --resume RUN_DIR.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
