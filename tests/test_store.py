"""The run store: records round-trip, a torn last line is dropped and redone, a changed setting refuses
a resume, a batch split by an interruption adds up, and each server start's counts stay its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_harness.errors import StoreError
from eval_harness.proof import ProcessCounts, Status, verify_instances
from eval_harness.records import AcceptanceBatch, ArmMeta, Role, Sample, SpecDecodeCounters
from eval_harness.store import RunStore


def _meta(fp: str = "a", **parts) -> ArmMeta:
    return ArmMeta(label="triton", path="triton", role=Role.CANDIDATE, fingerprint=fp, parts=parts)


def _sample(i: int) -> Sample:
    return Sample(key=f"k{i}", kind="gen", prompt_hash="h", token_ids=[i], server="s1")


def test_samples_round_trip_and_a_torn_tail_is_dropped(tmp_path: Path) -> None:
    arm = RunStore(tmp_path).arm("m", "custom:pkg.mod:fn")
    assert arm.dir.name == "custom-pkg.mod-fn"
    arm.open(_meta(), resume=False)
    for i in range(3):
        arm.append_sample(_sample(i))
    with arm.samples_file.open("ab") as f:
        f.write(b'{"key": "k3", "kind": "gen", "prompt')  # a crash mid-write
    assert [s.key for s in arm.samples()] == ["k0", "k1", "k2"]
    assert arm.samples_file.read_bytes().endswith(b"\n")  # truncated: the next append starts clean
    arm.append_sample(_sample(3))
    assert [s.token_ids for s in arm.samples()] == [[0], [1], [2], [3]]


def test_corrupt_and_duplicate_records_are_errors(tmp_path: Path) -> None:
    arm = RunStore(tmp_path).arm("m", "triton")
    arm.open(_meta(), resume=False)
    arm.append_sample(_sample(0))
    arm.append_sample(_sample(0))
    with pytest.raises(StoreError, match="duplicate record k0"):
        list(arm.samples())
    arm.samples_file.write_text('{"not": "a sample"}\n{"key": "k1"}\n')
    with pytest.raises(StoreError, match="corrupt record"):
        list(arm.samples())


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_old_dirs(tmp_path: Path) -> None:
    arm = RunStore(tmp_path).arm("m", "triton")
    arm.open(_meta("a", seed=1), resume=False)
    with pytest.raises(StoreError, match="already holds results"):
        arm.open(_meta("a", seed=1), resume=False)
    with pytest.raises(StoreError, match=r"settings changed \(seed\)"):
        arm.open(_meta("b", seed=2), resume=True)
    assert arm.open(_meta("a", seed=1), resume=True) == {}


def test_acceptance_parts_of_one_batch_add_up(tmp_path: Path) -> None:
    arm = RunStore(tmp_path).arm("m", "triton")
    arm.open(_meta(), resume=False)
    c = SpecDecodeCounters(drafts=10, draft_tokens=30, accepted=12, accepted_per_pos=(8, 4))
    for batch, part in ((0, c), (1, c), (1, c)):  # batch 1 was interrupted and finished on resume
        arm.append_acceptance(AcceptanceBatch(suite="s", batch=batch, requests=2, counters=part))
    merged = arm.acceptance()
    assert [b.batch for b in merged] == [0, 1]
    assert merged[1].requests == 4 and merged[1].counters.accepted_per_pos == (16, 8)


def test_missing_or_corrupt_manifest(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    with pytest.raises(StoreError, match="is this a rope-eval run directory"):
        store.read_manifest()
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(StoreError, match="corrupt"):
        store.read_manifest()


def _counts(directory: Path, path: str, n: int) -> None:
    rec = ProcessCounts(pid=1, host="h", path=path, counts={path: n} if n else {}, instance=directory.name)
    (directory / "counts-h-1.json").write_text(json.dumps(rec.to_json()))


def test_each_server_start_keeps_its_own_counts(tmp_path: Path) -> None:
    arm = RunStore(tmp_path).arm("m", "triton")
    first, second, idle = arm.new_counts_dir("s1"), arm.new_counts_dir("s2"), arm.new_counts_dir("s3")
    _counts(first, "triton", 5)
    _counts(second, "triton", 7)
    by = arm.counts()
    assert set(by) == {"s1", "s2", "s3"} and by["s3"] == []
    ok = verify_instances("triton", by, {"s1", "s2"})  # s3 was stopped before it served anything
    assert ok.status is Status.VERIFIED and ok.counts == {"triton": 12} and "2 server starts" in ok.detail
    assert verify_instances("triton", by, {"s1", "s3"}).status is Status.FAILED  # s3 served, counted nothing
    assert verify_instances("triton", by, {"s4"}).status is Status.FAILED  # no counts at all
    assert verify_instances("triton", by, set()).status is Status.FAILED
    _counts(idle, "native", 3)
    bad = verify_instances("triton", arm.counts(), {"s1", "s3"})
    assert bad.status is Status.FAILED and "s3" in bad.detail
    assert arm.new_counts_dir("s1").is_dir() and not any(arm.new_counts_dir("s1").iterdir())


def test_a_stale_count_file_of_another_start_is_ignored(tmp_path: Path) -> None:
    arm = RunStore(tmp_path).arm("m", "triton")
    d = arm.new_counts_dir("s1")
    _counts(d, "triton", 5)
    stale = ProcessCounts(pid=2, host="h", path="native", counts={"native": 9}, instance="old")
    (d / "counts-h-2.json").write_text(json.dumps(stale.to_json()))
    v = verify_instances("triton", arm.counts(), {"s1"})
    assert v.status is Status.VERIFIED and v.counts == {"triton": 5}
    assert v.ignored and "instance old" in v.ignored[0]
