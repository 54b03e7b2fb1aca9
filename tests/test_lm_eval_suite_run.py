"""An `lm-eval:` suite end to end through rope-eval: every arm runs a local lm-eval task YAML through
lm-eval itself against its own vLLM server, the per-document results pair across arms by document id,
and the gate reaches a verdict on them (issue: lm-eval tasks as suites)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eval_harness.analyze import Kind
from eval_harness.cli import EXIT_OK, main
from eval_harness.gate import Policy, judge
from eval_harness.store import RunStore

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[1]
SUITE = f"lm-eval:{REPO / 'suites' / 'lm_eval_tasks' / 'gsm8k_local.yaml'}"
EAGER = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "8"]
METRICS = ("exact_match,strict-match", "exact_match,flexible-extract")


def test_lm_eval_task_runs_on_every_arm_and_pairs_by_document(tmp_path: Path, data_dir: Path) -> None:
    cfg = {
        "name": "lmeval",
        "paths": ["native", "triton"],
        "serve_args": EAGER,
        "models": [{"name": "qwen3-toy", "path": "builtin:qwen3-toy"}],
        # zero-shot: five GSM8K examples do not fit the toy model's 2048-token window
        "suites": {SUITE: {"style": "completion", "num_fewshot": 0, "limit": {"smoke": 12}}},
        "l1": {"sequences": {"smoke": 4, "nightly": 4, "release": 4}},
        "profiles": {"smoke": {"aa": 0, "concurrency": 4}},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "--data-dir", str(data_dir)]) == EXIT_OK
    (run_dir,) = out.iterdir()
    store = RunStore(run_dir)
    for arm in ("reference", "native", "triton"):
        scores = store.arm("qwen3-toy", arm).scores().values()
        assert {s.suite for s in scores} == {f"{SUITE}/{m}" for m in METRICS}
        assert len({s.item_id for s in scores}) == 12  # one per document, both metrics each
        tasks = store.arm("qwen3-toy", arm).read_meta().tasks
        assert tasks[SUITE]["task"] == "gsm8k_local" and tasks[SUITE]["documents"] == 12
    ev, checks = judge(run_dir, Policy())
    ab = next(c for c in ev.models["qwen3-toy"].comparisons if c.kind is Kind.AB)
    for m in METRICS:
        r = ab.l3[f"{SUITE}/{m}"]
        assert r.n_problems == 12 and r.method == "mcnemar-exact"
    assert any(c.level == "L3" and SUITE in c.name for c in checks)
    assert ev.run.data_hashes["qwen3-toy"][SUITE].startswith("sha256:")
