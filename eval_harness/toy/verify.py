"""Measure the committed toy models through real vLLM: greedy toy-arith accuracy and eagle3 acceptance.

    ROPE_EVAL_PATH=native python -m eval_harness.toy.verify --model qwen3-toy --draft qwen3-toy-eagle3
    TRITON_INTERPRET=1 ROPE_EVAL_PATH=triton python -m eval_harness.toy.verify --model glm4-toy

The RoPE path comes from the environment (the rope-eval vLLM plugin reads ROPE_EVAL_PATH in every process);
with ROPE_EVAL_COUNTS_DIR set, the plugin's per-path call counts are reported too, proving which path ran.
Prints one JSON object; this is how the figures in the README were taken.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval_harness.suites import ModelOutput, get_suite

SPEC_COUNTERS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
RECORD_FILE = "vllm_verification.jsonl"


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


def measure(
    model_dir: Path,
    draft_dir: Path | None,
    limit: int,
    max_tokens: int,
    k: int,
    style: str,
) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    suite = get_suite("toy-arith")
    items = suite.load(None, "test", limit)
    spec = None
    if draft_dir is not None:
        spec = {"method": "eagle3", "model": str(draft_dir), "num_speculative_tokens": k}
    llm = LLM(
        model=str(model_dir),
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        seed=0,
        speculative_config=spec,
        disable_log_stats=False,  # spec-decode counters need stats on
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    start = time.perf_counter()
    prompts = [suite.prompt(it, style) for it in items]
    if style.startswith("chat"):
        outs = llm.chat([p.messages for p in prompts], params, use_tqdm=False)  # type: ignore[arg-type]
    else:
        outs = llm.generate([p.text for p in prompts], params, use_tqdm=False)  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    verdicts = [
        suite.score(it, ModelOutput(o.outputs[0].text, finish_reason=o.outputs[0].finish_reason), style)
        for it, o in zip(items, outs, strict=True)
    ]
    by_group: dict[str, list[bool]] = {}
    for it, v in zip(items, verdicts, strict=True):
        for g in (it.meta["kind"], "preamble" if it.meta["preamble_sentences"] else "no-preamble"):
            by_group.setdefault(g, []).append(v.correct)
    result: dict[str, Any] = {
        "model": model_dir.name,
        "draft": draft_dir.name if draft_dir else None,
        "path": os.environ.get("ROPE_EVAL_PATH", "(unset: vLLM default)"),
        "style": style,
        "problems": len(items),
        "accuracy": round(sum(v.correct for v in verdicts) / len(verdicts), 4),
        "by_group": {g: round(sum(h) / len(h), 4) for g, h in sorted(by_group.items())},
        "generate_seconds": round(wall, 1),
        "texts_sha": _texts_hash([o.outputs[0].text for o in outs]),
    }
    if draft_dir is not None:
        result["spec_decode"] = _spec_decode_counts(llm.get_metrics())
    return result


def _texts_hash(texts: list[str]) -> str:
    """One hash of every output: equal hashes across paths mean identical greedy outputs."""
    import hashlib

    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    from eval_harness.toy import WEIGHTS_DIR

    parser = argparse.ArgumentParser(prog="python -m eval_harness.toy.verify", description=__doc__)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="directory of the toy models")
    parser.add_argument("--model", default="qwen3-toy")
    parser.add_argument("--draft", default=None, help="eagle3 draft to serve with the model")
    parser.add_argument("--limit", type=int, default=200, help="test problems (default 200)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--k", type=int, default=3, help="num_speculative_tokens (default 3)")
    parser.add_argument("--style", default="chat-0shot", choices=["chat-0shot", "completion-0shot"])
    parser.add_argument(
        "--record", action="store_true", help=f"add the result to WEIGHTS/{RECORD_FILE} and TRAINING.md"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("ROPE_EVAL_COUNTS_DIR", tempfile.mkdtemp(prefix="rope-eval-counts-"))
    draft = args.weights / args.draft if args.draft else None
    result = measure(args.weights / args.model, draft, args.limit, args.max_tokens, args.k, args.style)
    from eval_harness.proof import read_counts, total_counts

    time.sleep(1.5)  # the plugin's writer flushes on a timer
    result["rope_calls"] = total_counts(read_counts(Path(os.environ["ROPE_EVAL_COUNTS_DIR"])))
    print(json.dumps(result, sort_keys=True), flush=True)
    if args.record:
        record(args.weights, result)
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
