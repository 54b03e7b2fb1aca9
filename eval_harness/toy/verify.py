"""Measure the committed toy models through real vLLM: greedy toy-arith accuracy and eagle3 acceptance.

    ROPE_EVAL_PATH=native python -m eval_harness.toy.verify --model qwen3-toy --draft qwen3-toy-eagle3
    TRITON_INTERPRET=1 ROPE_EVAL_PATH=triton python -m eval_harness.toy.verify --model glm4-toy
    ROPE_EVAL_PATH=custom:eval_harness.selftest.bugs:key_off_by_one python -m eval_harness.toy.verify \\
        --model qwen3-toy --limit 300 --out benchmarks/toy-vllm.jsonl

The RoPE path comes from the environment (the rope-eval vLLM plugin reads ROPE_EVAL_PATH in every process);
the plugin's per-path call counts are reported too, proving which path ran. Prints one JSON summary;
`--out` appends the full record (every problem's verdict and output, and with a draft its per-request
acceptance) for `python -m eval_harness.toy.compare`. The checkpoints are checked against SHA256SUMS.json
first: a figure must belong to the committed bytes.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval_harness.suites import Item, ModelOutput, get_suite

SPEC_COUNTERS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
RECORD_FILE = "vllm_verification.jsonl"
MAX_MODEL_LEN = 1024


def _spec_decode_counts(metrics: list[Any]) -> dict[str, Any]:
    """Spec-decode counters from `LLM.get_metrics()`, summed over engines; per-position as a list."""
    totals: dict[str, float] = {}
    per_pos: list[float] = []
    for m in metrics:
        name = m.name.removeprefix("vllm:").removeprefix("vllm_")
        for key in SPEC_COUNTERS:
            if name == f"spec_decode_{key}":
                totals[key] = totals.get(key, 0) + float(m.value)
        if name == "spec_decode_num_accepted_tokens_per_pos":
            values = [float(v) for v in m.values]
            per_pos = [a + b for a, b in zip(per_pos, values, strict=False)] if per_pos else values
    drafts = totals.get("num_drafts", 0.0)
    return {
        **totals,
        "mean_acceptance_length": 1 + totals.get("num_accepted_tokens", 0.0) / drafts if drafts else None,
        "acceptance_per_position": [round(v / drafts, 4) for v in per_pos] if drafts else [],
    }


@dataclass(frozen=True)
class Setup:
    model_dir: Path
    draft_dir: Path | None
    limit: int
    max_tokens: int
    k: int
    style: str


def _engine(setup: Setup) -> Any:
    from vllm import LLM

    spec = None
    extra: dict[str, Any] = {}
    if setup.draft_dir is not None:
        spec = {"method": "eagle3", "model": str(setup.draft_dir), "num_speculative_tokens": setup.k}
        # Each finished request carries its own acceptance histogram: the CI on Δ acceptance length
        # resamples requests, and the sum over requests must equal the engine's counters.
        extra["per_request_spec_decode_metrics"] = "summary"
    return LLM(
        model=str(setup.model_dir),
        dtype="float32",
        enforce_eager=True,
        max_model_len=MAX_MODEL_LEN,
        seed=0,
        speculative_config=spec,
        disable_log_stats=False,  # spec-decode counters need stats on
        **extra,
    )


def _request_acceptance(output: Any) -> dict[str, Any] | None:
    """One request's verify steps and accepted draft tokens (vLLM's per-request metrics), or None."""
    metrics = getattr(output, "spec_decode_metrics", None)
    if metrics is None:
        return None
    d = metrics.to_dict()
    return {
        "steps": d["num_spec_steps"],
        "accepted": d["num_accepted_draft_tokens"],
        "draft_tokens": d["num_draft_tokens"],
        "histogram": d["acceptance_histogram"],
    }


def _problem_rows(items: list[Item], outs: list[Any], style: str) -> list[dict[str, Any]]:
    suite = get_suite("toy-arith")
    rows = []
    for it, o in zip(items, outs, strict=True):
        c = o.outputs[0]
        v = suite.score(it, ModelOutput(c.text, finish_reason=c.finish_reason), style)
        row = {
            "id": it.id,
            "correct": bool(v.correct),
            "extracted": v.extracted,
            "finish_reason": c.finish_reason,
            "num_tokens": len(c.token_ids),
            "text": c.text,
            "kind": it.meta["kind"],
            "preamble": bool(it.meta["preamble_sentences"]),
        }
        spec = _request_acceptance(c)
        if spec is not None:
            row["spec"] = spec
        rows.append(row)
    return rows


def _by_group(rows: list[dict[str, Any]]) -> dict[str, float]:
    groups: dict[str, list[bool]] = {}
    for r in rows:
        for g in (r["kind"], "preamble" if r["preamble"] else "no-preamble"):
            groups.setdefault(g, []).append(r["correct"])
    return {g: round(sum(h) / len(h), 4) for g, h in sorted(groups.items())}


def measure(setup: Setup) -> dict[str, Any]:
    """Serve the model with the environment's RoPE path, generate greedily, score; the full record."""
    from vllm import SamplingParams

    suite = get_suite("toy-arith")
    items = suite.load(None, "test", setup.limit)
    llm = _engine(setup)
    params = SamplingParams(temperature=0.0, max_tokens=setup.max_tokens)
    prompts = [suite.prompt(it, setup.style) for it in items]
    start = time.perf_counter()
    if setup.style.startswith("chat"):
        outs = llm.chat([p.messages for p in prompts], params, use_tqdm=False)  # type: ignore[arg-type]
    else:
        outs = llm.generate([p.text for p in prompts], params, use_tqdm=False)  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    rows = _problem_rows(items, outs, setup.style)
    result: dict[str, Any] = {
        "model": setup.model_dir.name,
        "draft": setup.draft_dir.name if setup.draft_dir else None,
        "path": os.environ.get("ROPE_EVAL_PATH", "(unset: vLLM default)"),
        "style": setup.style,
        "problems": len(items),
        "max_tokens": setup.max_tokens,
        "accuracy": round(sum(r["correct"] for r in rows) / len(rows), 4),
        "by_group": _by_group(rows),
        "generate_seconds": round(wall, 1),
        "texts_sha": _texts_hash([r["text"] for r in rows]),
        "rows": rows,
    }
    if setup.draft_dir is not None:
        result["k"] = setup.k
        result["spec_decode"] = _spec_decode_counts(llm.get_metrics())
    return result


def _texts_hash(texts: list[str]) -> str:
    """One hash of every output: equal hashes across paths mean identical greedy outputs."""
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.machine()


def _environment() -> dict[str, Any]:
    import torch
    import vllm

    return {
        "date": datetime.date.today().isoformat(),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "device": f"CPU: {_cpu_name()}, {os.cpu_count()} cores visible",
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
    }


def main(argv: list[str] | None = None) -> int:
    from eval_harness.toy import WEIGHTS_DIR, checksums

    parser = argparse.ArgumentParser(
        prog="python -m eval_harness.toy.verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="directory of the toy models")
    parser.add_argument("--model", default="qwen3-toy")
    parser.add_argument("--draft", default=None, help="eagle3 draft to serve with the model")
    parser.add_argument("--limit", type=int, default=200, help="test problems (default 200)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--k", type=int, default=3, help="num_speculative_tokens (default 3)")
    parser.add_argument("--style", default="chat-0shot", choices=["chat-0shot", "completion-0shot"])
    parser.add_argument("--out", type=Path, help="append the full record (per-problem rows) to this JSONL")
    parser.add_argument(
        "--record", action="store_true", help=f"add the summary to WEIGHTS/{RECORD_FILE} and TRAINING.md"
    )
    args = parser.parse_args(argv)
    for name in (args.model, args.draft):
        if name:
            checksums.verify(args.weights, name)
    os.environ.setdefault("ROPE_EVAL_COUNTS_DIR", tempfile.mkdtemp(prefix="rope-eval-counts-"))
    draft = args.weights / args.draft if args.draft else None
    setup = Setup(args.weights / args.model, draft, args.limit, args.max_tokens, args.k, args.style)
    result = measure(setup)
    from eval_harness.proof import read_counts, total_counts

    time.sleep(1.5)  # the plugin's writer flushes on a timer
    result["rope_calls"] = total_counts(read_counts(Path(os.environ["ROPE_EVAL_COUNTS_DIR"])))
    summary = {k: v for k, v in result.items() if k != "rows"}
    print(json.dumps(summary, sort_keys=True), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps({**result, "env": _environment()}, sort_keys=True) + "\n")
    if args.record:
        record(args.weights, summary)
    return 0


def record(weights: Path, result: dict[str, Any]) -> None:
    """Keep one result per (model, draft, path, style, problems), then regenerate TRAINING.md."""
    from eval_harness.toy.train import write_training_md

    path = weights / RECORD_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    rows = [r for r in rows if _record_key(r) != _record_key(result)] + [result]
    rows.sort(key=_record_key)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    write_training_md(weights)


def _record_key(r: dict[str, Any]) -> tuple[str, ...]:
    return (r["model"], r["draft"] or "", r["path"], r["style"], str(r["problems"]))


if __name__ == "__main__":
    sys.exit(main())
