"""`eval_harness.proof` on count files written by hand: what the harness accepts as proof of the path, and
every way an arm must fail. The files carry exactly what the plugin writes (tests/test_proof_plugin.py and
tests/test_offline_llm.py check that against real processes)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from eval_harness.proof import (
    FORMAT,
    CountsError,
    ModelCoverage,
    ProcessCounts,
    Status,
    Worker,
    expected_workers,
    read_counts,
    verify,
    verify_instances,
)

QWEN = ModelCoverage("target", "Qwen3ForCausalLM", 2, {"RopeEvalRotaryEmbedding": 2})
DRAFT = ModelCoverage("draft", "Eagle3LlamaForCausalLM", 1, {"RopeEvalRotaryEmbedding": 1})


def rec(counts: dict[str, int], pid: int = 100, **kw) -> ProcessCounts:
    base = dict(
        pid=pid,
        host="h",
        path="triton",
        counts=counts,
        updated=1.0,
        instance="i1",
        worker=Worker(),
        world_rank=0,
        models=[QWEN],
        idle=True,
        format=FORMAT,
    )
    return ProcessCounts(**{**base, **kw})


def write(directory: Path, *records: ProcessCounts) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for r in records:
        (directory / f"counts-{r.host}-{r.pid}.json").write_text(json.dumps(r.to_json()))
    return directory


def test_a_clean_arm_verifies_and_reports_per_worker() -> None:
    v = verify("triton", [rec({"triton": 40})], expected_workers())
    assert v.status is Status.VERIFIED, v.problems
    assert v.counts == {"triton": 40}
    assert [(w.worker, w.counts, w.roles) for w in v.workers] == [(Worker(), {"triton": 40}, ("target",))]


def test_a_fallback_fails_even_with_the_path_counted() -> None:
    v = verify("triton", [rec({"triton": 20, "triton(fallback:native)": 20})])
    assert v.failed
    assert "fell back: triton(fallback:native)" in v.detail


def test_only_fallbacks_fail_as_never_ran() -> None:
    v = verify("triton", [rec({"triton(fallback:native)": 40})])
    assert v.failed and "never ran" in v.problems[0]
    assert any("fell back" in p for p in v.problems)


def test_calls_of_an_unswitched_rope_class_fail() -> None:
    v = verify(
        "native", [rec({"native": 20, "unswitched:Phi3LongRoPEScaledRotaryEmbedding": 10}, path="native")]
    )
    assert v.failed
    assert "Phi3LongRoPEScaledRotaryEmbedding, which the plugin does not switch" in v.detail


def test_a_model_with_an_unswitched_layer_fails_even_before_it_runs() -> None:
    partial = ModelCoverage(
        "target",
        "Gemma3ForCausalLM",
        2,
        {"RopeEvalRotaryEmbedding": 1, "Phi3LongRoPEScaledRotaryEmbedding": 1},
        {"model.layers.1.self_attn.rotary_emb": "Phi3LongRoPEScaledRotaryEmbedding"},
    )
    v = verify("triton", [rec({"triton": 10}, models=[partial])])
    assert v.failed
    assert "1 of 2 RoPE layers are not switched: model.layers.1.self_attn.rotary_emb" in v.detail


def test_a_model_with_no_rope_module_fails() -> None:
    v = verify("triton", [rec({"triton": 10}, models=[ModelCoverage("target", "GPT2LMHeadModel", 0)])])
    assert v.failed and "holds no RoPE module" in v.detail


def test_counts_without_a_seen_model_load_fail() -> None:
    v = verify("triton", [rec({"triton": 10}, models=[])])
    assert v.failed and "no model load was seen" in v.detail


def test_calls_not_a_multiple_of_the_rope_layers_fail_when_idle_only() -> None:
    odd = rec({"triton": 41})
    assert "not a multiple of the model's 2 RoPE layers" in verify("triton", [odd]).detail
    # mid-forward snapshot: the check would be unfair, so it is not made
    assert verify("triton", [replace(odd, idle=False)]).verified
    # target and draft in one process: their forwards interleave, the sum says nothing
    assert verify("triton", [replace(odd, models=[QWEN, DRAFT])]).verified


def test_a_process_configured_for_another_path_fails() -> None:
    v = verify(
        "triton", [rec({"triton": 40}), rec({"native": 40}, pid=101, path="native", worker=Worker(tp=1))]
    )
    assert v.failed
    assert any("ROPE_EVAL_PATH=native, not triton" in p for p in v.problems)


def test_old_format_files_are_judged_on_counts_only() -> None:
    v = verify("triton", [rec({"triton": 3}, models=[], worker=None, format=1)])
    assert v.verified


# ---- per rank (tensor / pipeline / data parallel)


def tp2(*, rank1: dict[str, int], path1: str = "triton") -> list[ProcessCounts]:
    return [
        rec({"triton": 40}, pid=1, worker=Worker(tp=0)),
        rec(rank1, pid=2, worker=Worker(tp=1), path=path1),
    ]


def test_every_expected_rank_verifies() -> None:
    v = verify("triton", tp2(rank1={"triton": 40}), expected_workers(tp=2))
    assert v.verified, v.problems
    assert sorted(w.worker for w in v.workers) == [Worker(tp=0), Worker(tp=1)]


def test_one_rank_running_another_path_fails_the_arm() -> None:
    v = verify("triton", tp2(rank1={"native": 40}, path1="native"), expected_workers(tp=2))
    assert v.failed
    assert "tp1/pp0/dp0: no calls of triton" in v.problems
    assert any(p.startswith("tp1/pp0/dp0 (h:2): 40 calls of native") for p in v.problems)


def test_a_silent_rank_fails_the_arm() -> None:
    v = verify("triton", tp2(rank1={"triton": 40})[:1], expected_workers(tp=2))
    assert v.failed and "tp1/pp0/dp0: no count file" in v.problems


def test_a_rank_outside_the_layout_fails() -> None:
    v = verify("triton", tp2(rank1={"triton": 40}), expected_workers(tp=1))
    assert v.failed and "outside the expected layout" in v.detail


def test_two_processes_claiming_one_rank_fail() -> None:
    v = verify("triton", [rec({"triton": 40}, pid=1), rec({"triton": 40}, pid=2)], expected_workers())
    assert v.failed and "reported by 2 processes" in v.detail


def test_unknown_identity_fails_when_ranks_are_expected() -> None:
    v = verify("triton", [rec({"triton": 40}, worker=None)], expected_workers())
    assert v.failed and "no worker identity" in v.detail


def test_draft_expectation() -> None:
    both = [rec({"triton": 41}, models=[QWEN, DRAFT])]
    assert verify("triton", both, expected_workers(), draft=True).verified
    assert "draft model was loaded" in verify("triton", both, expected_workers(), draft=False).detail
    assert (
        "no draft model loaded"
        in verify("triton", [rec({"triton": 40})], expected_workers(), draft=True).detail
    )


def test_expected_workers_layouts() -> None:
    assert len(expected_workers(tp=4, pp=2, dp=2)) == 16
    assert expected_workers(tp=2, dp=8, dp_ranks=[4, 5]) == {Worker(t, 0, d) for t in (0, 1) for d in (4, 5)}
    with pytest.raises(ValueError, match="outside a data-parallel size"):
        expected_workers(dp=2, dp_ranks=[2])
    with pytest.raises(ValueError, match="tp size must be >= 1"):
        expected_workers(tp=0)


# ---- reading a counts directory


def test_stale_files_of_another_instance_are_ignored_and_reported(tmp_path: Path) -> None:
    d = write(
        tmp_path / "c", rec({"native": 99}, pid=1, instance="old", path="native"), rec({"triton": 40}, pid=2)
    )
    read = read_counts(d, instance="i1")
    assert [r.pid for r in read] == [2]
    assert [(i.file, i.reason) for i in read.ignored] == [("counts-h-1.json", "instance old, not i1")]
    v = verify("triton", read)
    assert v.verified and v.ignored == ("counts-h-1.json: instance old, not i1",)


def test_a_directory_shared_by_two_instances_is_an_error_without_the_instance(tmp_path: Path) -> None:
    d = write(
        tmp_path / "c", rec({"triton": 1}, pid=1, instance="a"), rec({"triton": 1}, pid=2, instance="b")
    )
    with pytest.raises(CountsError, match=r"holds files of 2 server instances \(a, b\)"):
        read_counts(d)


def test_files_without_an_instance_are_stale_when_one_is_expected(tmp_path: Path) -> None:
    d = write(tmp_path / "c", rec({"triton": 1}, instance=None))
    assert len(read_counts(d)) == 1
    assert read_counts(d, instance="i1").ignored[0].reason == "instance (none), not i1"


def test_bad_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CountsError, match="does not exist"):
        read_counts(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CountsError, match="is not a directory"):
        read_counts(tmp_path / "file")
    d = tmp_path / "c"
    d.mkdir()
    (d / "counts-h-1.json").write_text("{not json")
    with pytest.raises(CountsError, match="corrupt path-count file"):
        read_counts(d)


def test_an_empty_directory_reads_as_no_records_and_fails_verification(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    read = read_counts(tmp_path / "c")
    assert len(read) == 0
    assert verify("triton", read).failed
    assert verify("triton", None).status is Status.UNVERIFIED


def test_verify_instances_keeps_the_first_failure_and_the_workers() -> None:
    ok, bad = [rec({"triton": 40})], [rec({"triton(fallback:native)": 40})]
    v = verify_instances("triton", {"a": ok, "b": bad}, {"a", "b"})
    assert v.failed and v.detail.startswith("server start b:")
    assert verify_instances("triton", {"a": ok, "b": ok}, {"a", "b"}, expected_workers()).verified
    assert verify_instances("triton", {"a": ok, "b": bad}, {"a"}).verified  # b served nothing
    assert "left no call counts" in verify_instances("triton", {"a": ok}, {"a", "c"}).detail


def test_a_fused_path_accepts_its_plain_rope_layers_but_not_its_fallback() -> None:
    fused = rec({"fused": 40, "fused/rope:native": 9}, path="fused", models=[QWEN, DRAFT])
    assert verify("fused", [fused], expected_workers(), draft=True).verified
    fell = rec({"fused(fallback:native)": 40}, path="fused")
    assert "fell back: fused(fallback:native)" in " ".join(verify("fused", [fell]).problems)
