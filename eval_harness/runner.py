"""`rope-eval run`: serve each path, send it the identical workload, store every sample.

Per model, the baseline path runs first: its generations (and, in A/A profiles, a second
pass on the same server) and its teacher-forced L1 scoring of its own sequences. Each other
path then gets the same generations and teacher-forces the *baseline's* sequences, so L1
compares both paths on identical token streams. Samples are appended as they arrive; a
rerun with `--resume` skips what is stored and continues.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from eval_harness import provenance
from eval_harness.config import ModelEntry, Profile, RunConfig
from eval_harness.engine.client import Client, Result
from eval_harness.engine.metrics import SpecDecodeCounters, scrape
from eval_harness.engine.server import ServerSpec, VllmServer
from eval_harness.model_source import resolve_model
from eval_harness.paths import PathSpec, parse_path
from eval_harness.proof import read_counts, total_counts
from eval_harness.store import ArmStore, Sample, read_json, write_json
from eval_harness.suites import DataSource, Item, ModelOutput, get_suite
from eval_harness.workload import Work, draft_probe_work, l1_work, load_items, probe_work, suite_work

log = logging.getLogger("rope_eval.run")
AA_SUFFIX = "~aa"


@dataclass
class RunOptions:
    config: RunConfig
    profile: Profile
    out: Path
    source: DataSource
    resume: bool = False
    endpoints: dict[str, list[str]] = field(default_factory=dict)  # path -> URLs (attach mode)
    batch_size: int = 32  # requests between metrics scrapes (per-batch acceptance deltas)
    models_dir: Path | None = None


@dataclass
class Endpoint:
    """Where an arm's requests go, and whether its path can be verified from call counts."""

    urls: list[str]
    counts_dir: Path | None
    server: VllmServer | None = None


def arm_dirname(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.~-]+", "-", label)


def _to_pairs(d: dict[int, float] | None) -> list[list[float]] | None:
    return None if d is None else [[k, v] for k, v in d.items()]


def to_sample(res: Result, work: Work, kind: str, batch: int | None) -> Sample:
    return Sample(
        key=res.key,
        kind=kind,
        suite=work.suite,
        item_id=work.item_id,
        sample_idx=work.sample_idx,
        seed=work.request.sampling.seed,
        prompt_hash=work.prompt_hash,
        text=res.text,
        reasoning=res.reasoning_content,
        token_ids=res.token_ids,
        prompt_token_ids=res.prompt_token_ids,
        finish_reason=res.finish_reason,
        batch=batch,
        top_logprobs=[_to_pairs(d) for d in res.top_logprobs] if res.top_logprobs else None,
        prompt_logprobs=[_to_pairs(d) for d in res.prompt_logprobs] if res.prompt_logprobs else None,
    )


class ArmRunner:
    """Runs one arm's workloads against one endpoint, appending to its store."""

    def __init__(
        self, opts: RunOptions, model: ModelEntry, label: str, endpoint: Endpoint, fingerprint_parts: dict
    ):
        self.opts = opts
        self.model = model
        self.label = label
        self.endpoint = endpoint
        self.dir = opts.out / model.name / arm_dirname(label)
        self.store = ArmStore(self.dir, fingerprint_parts)
        self.done = self.store.open(opts.resume)
        self.acceptance_file = self.dir / "acceptance.jsonl"

    def _clients(self) -> list[Client]:
        alive = self.endpoint.server.check_alive if self.endpoint.server else None
        conc = self.opts.config.profile(self.opts.profile).concurrency
        return [Client(u, self.model.name, concurrency=conc, alive=alive) for u in self.endpoint.urls]

    @staticmethod
    async def _send(clients: list[Client], works: list[Work], store, desc: str) -> None:
        """Shard across replicas (DP endpoints of one path) round-robin; one replica is the usual case."""
        shards = [[w.request for w in works[i :: len(clients)]] for i in range(len(clients))]
        await asyncio.gather(
            *(
                c.run(sh, store, desc=desc, progress=False)
                for c, sh in zip(clients, shards, strict=True)
                if sh
            )
        )

    async def run_work(
        self, works: list[Work], kind: str, desc: str, spec_decode: bool, batch_size: int | None = None
    ) -> None:
        """Send the works not yet stored, batch by batch, recording acceptance deltas per batch."""
        size = batch_size or self.opts.batch_size
        todo_total = sum(w.request.key not in self.done for w in works)
        if not todo_total:
            return
        bar = tqdm(
            total=len(works),
            initial=len(works) - todo_total,
            desc=f"{self.model.name} {self.label} {desc}",
            unit="req",
            dynamic_ncols=True,
        )
        by_key = {w.request.key: w for w in works}
        clients = self._clients()
        try:
            for b in range(0, len(works), size):
                chunk = [w for w in works[b : b + size] if w.request.key not in self.done]
                if not chunk:
                    continue
                before = await self._scrape() if spec_decode else None
                batch_no = b // size

                def store(res: Result, batch_no: int = batch_no) -> None:
                    sample = to_sample(res, by_key[res.key], kind, batch_no)
                    self.store.append(sample)
                    self.done[sample.key] = sample
                    bar.update()

                await self._send(clients, chunk, store, desc)
                if before is not None:
                    after = await self._scrape()
                    self._record_acceptance(desc, batch_no, after - before, len(chunk))
        finally:
            bar.close()
            for c in clients:
                await c.__aexit__()

    async def _scrape(self) -> SpecDecodeCounters:
        counters = [await scrape(None, u) for u in self.endpoint.urls]
        total = counters[0]
        for c in counters[1:]:
            total = SpecDecodeCounters(
                total.drafts + c.drafts,
                total.draft_tokens + c.draft_tokens,
                total.accepted + c.accepted,
                tuple(a + b for a, b in zip(total.accepted_per_pos, c.accepted_per_pos, strict=False)),
            )
        return total

    def _record_acceptance(self, suite: str, batch: int, delta: SpecDecodeCounters, n: int) -> None:
        rec = {
            "suite": suite,
            "batch": batch,
            "requests": n,
            "drafts": delta.drafts,
            "draft_tokens": delta.draft_tokens,
            "accepted": delta.accepted,
            "accepted_per_pos": list(delta.accepted_per_pos),
        }
        with self.acceptance_file.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def score(self, items: dict[str, list[Item]]) -> None:
        """Score stored generations that have no verdict yet (LCB through the sandbox pool)."""
        scores_file = self.dir / "scores.jsonl"
        scored = set()
        if scores_file.exists():
            scored = {
                json.loads(line)["key"] for line in scores_file.read_text().splitlines() if line.strip()
            }
        for name, suite_items in items.items():
            by_id = {it.id: it for it in suite_items}
            pending = [
                s for s in self.done.values() if s.kind == "gen" and s.suite == name and s.key not in scored
            ]
            if not pending:
                continue
            suite = get_suite(name)
            outputs = [ModelOutput(s.text, s.reasoning, s.finish_reason) for s in pending]
            verdicts = suite.score_many(
                [(by_id[s.item_id], o) for s, o in zip(pending, outputs, strict=True)]
            )
            with scores_file.open("a") as f:
                for s, v in zip(pending, verdicts, strict=True):
                    f.write(
                        json.dumps(
                            {
                                "key": s.key,
                                "suite": name,
                                "item_id": s.item_id,
                                "sample_idx": s.sample_idx,
                                "correct": v.correct,
                                "extracted": v.extracted,
                                "reason": v.reason,
                                "finish_reason": s.finish_reason,
                            }
                        )
                        + "\n"
                    )


def _fingerprint(opts: RunOptions, model: ModelEntry, path: str, hashes: dict[str, str]) -> dict:
    cfg = opts.config
    return {
        "model": model.model_dump(),
        "path": path,
        "serve_args": cfg.serve_args,
        "suites": {k: v.model_dump() for k, v in cfg.suites.items() if k in hashes},
        "l1": cfg.l1.model_dump(),
        "data": hashes,
        "profile": opts.profile,
        "seed": cfg.seed,
        "versions": provenance.versions(),
    }


def server_spec(
    opts: RunOptions, model: ModelEntry, path: PathSpec, model_path: str, draft_path: str | None
) -> ServerSpec:
    args = [*opts.config.serve_args, *model.serve_args, "--served-model-name", model.name]
    if model.draft is not None and draft_path is not None:
        args += [
            "--speculative-config",
            json.dumps(
                {
                    "method": model.draft.method,
                    "model": draft_path,
                    "num_speculative_tokens": model.draft.num_speculative_tokens,
                }
            ),
        ]
    from eval_harness.setup_platform import detect_platform

    return ServerSpec(
        model=model_path,
        path=path,
        run_dir=opts.out / model.name,
        label=arm_dirname(path.name),
        serve_args=args,
        startup_timeout=opts.config.startup_timeout,
        cpu=detect_platform() == "cpu",
    )


class ModelRun:
    """All arms of one model: baseline (+ A/A), then every other path."""

    def __init__(self, opts: RunOptions, model: ModelEntry):
        self.opts = opts
        self.model = model
        self.items, self.hashes = load_items(opts.config, model, opts.profile, opts.source)
        cfg = opts.config
        self.gen: list[Work] = [w for n, its in self.items.items() for w in suite_work(cfg, n, its)]
        if not self.gen:
            self.gen = probe_work(cfg, model, opts.profile)
        self.arms: dict[str, dict] = {}

    def _suite_groups(self) -> dict[str, list[Work]]:
        groups: dict[str, list[Work]] = {}
        for w in self.gen:
            groups.setdefault(w.suite, []).append(w)
        return groups

    async def _run_arm(
        self,
        label: str,
        path: str,
        endpoint: Endpoint,
        baseline: dict[str, Sample] | None,
        draft_probe: list[Work],
    ) -> ArmRunner:
        arm = ArmRunner(
            self.opts, self.model, label, endpoint, _fingerprint(self.opts, self.model, label, self.hashes)
        )
        spec = self.model.draft is not None
        for suite, works in self._suite_groups().items():
            await arm.run_work(works, "gen", suite, spec_decode=spec)
        if draft_probe:  # small batches: per-batch acceptance deltas give the CI
            await arm.run_work(draft_probe, "gen", draft_probe[0].suite, spec_decode=True, batch_size=4)
        await asyncio.to_thread(arm.score, self.items)
        seqs = list((baseline if baseline is not None else arm.done).values())
        await arm.run_work(l1_work(self.opts.config, self.opts.profile, seqs), "l1", "L1", spec_decode=False)
        self.arms[label] = {
            "path": path,
            "urls": endpoint.urls,
            "dir": str(arm.dir.relative_to(self.opts.out)),
        }
        return arm

    def _endpoint(self, path: str, model_path: str, draft_path: str | None) -> Endpoint:
        if path in self.opts.endpoints:
            return Endpoint(self.opts.endpoints[path], None)
        spec = server_spec(self.opts, self.model, parse_path(path), model_path, draft_path)
        return Endpoint([], spec.counts_dir, VllmServer(spec))

    async def run(self) -> dict:
        cfg = self.opts.config
        model_path = resolve_model(self.model.path, self.opts.models_dir)
        draft_path = resolve_model(self.model.draft.path, self.opts.models_dir) if self.model.draft else None
        probe = draft_probe_work(draft_path, cfg)
        base_arm = await self._run_path(cfg.baseline, model_path, draft_path, probe, None)
        others = [p for p in cfg.paths if p != cfg.baseline]
        if all(p in self.opts.endpoints for p in others):
            # Attached endpoints are separate servers: run the paths side by side.
            await asyncio.gather(
                *(self._run_path(p, model_path, draft_path, probe, base_arm) for p in others)
            )
        else:
            # Managed servers share this machine: one at a time.
            for p in others:
                await self._run_path(p, model_path, draft_path, probe, base_arm)
        return {
            "model_path": model_path,
            "draft_path": draft_path,
            "data_hashes": self.hashes,
            "arms": self.arms,
        }

    async def _run_path(
        self,
        path: str,
        model_path: str,
        draft_path: str | None,
        probe: list[Work],
        base_arm: ArmRunner | None,
    ) -> ArmRunner:
        """Serve (or attach to) one path and run its arms; the baseline also runs its A/A repeat."""
        endpoint = self._endpoint(path, model_path, draft_path)
        t0 = time.monotonic()
        if endpoint.server is not None:
            await asyncio.to_thread(endpoint.server.start)
            endpoint.urls = [endpoint.server.url]
        try:
            baseline = base_arm.done if base_arm else None
            arm = await self._run_arm(path, path, endpoint, baseline, probe)
            if base_arm is None and self.opts.config.profile(self.opts.profile).aa:
                await self._run_arm(path + AA_SUFFIX, path, endpoint, arm.done, probe)
        finally:
            if endpoint.server is not None:
                await asyncio.to_thread(endpoint.server.stop)
        self._record_counts(path, endpoint, time.monotonic() - t0)
        return arm

    def _record_counts(self, path: str, endpoint: Endpoint, seconds: float) -> None:
        counts = total_counts(read_counts(endpoint.counts_dir)) if endpoint.counts_dir else None
        for arm in self.arms.values():
            if arm["path"] == path:
                arm["seconds"] = round(seconds, 1)
                arm["counts"] = counts
                arm["verified"] = verify_counts(path, counts)


def verify_counts(path: str, counts: dict[str, int] | None) -> str:
    """`verified` only when the requested implementation ran, and nothing else did."""
    if counts is None:
        return "unverified: attach mode, no call counts"
    if counts.get(path, 0) <= 0:
        return f"FAILED: requested path {path} never ran (counts {counts})"
    others = {k: v for k, v in counts.items() if k != path and v}
    if others:
        return f"FAILED: other implementations ran too ({others})"
    return "verified"


class PathNotVerified(RuntimeError):
    pass


async def run(opts: RunOptions) -> Path:
    opts.out.mkdir(parents=True, exist_ok=True)
    manifest_file = opts.out / "manifest.json"
    manifest = read_json(manifest_file) if opts.resume and manifest_file.exists() else {}
    manifest.update(
        {
            "name": opts.config.name,
            "profile": opts.profile,
            "baseline": opts.config.baseline,
            "paths": opts.config.paths,
            "config": opts.config.model_dump(mode="json"),
            "data_source": str(opts.source),
            "provenance": provenance.collect(),
            "started": manifest.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        }
    )
    manifest.setdefault("models", {})
    write_json(manifest_file, manifest)
    for model in opts.config.models:
        manifest["models"][model.name] = await ModelRun(opts, model).run()
        write_json(manifest_file, manifest)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(manifest_file, manifest)
    failed = [
        f"{m}/{label}: {a['verified']}"
        for m, mr in manifest["models"].items()
        for label, a in mr["arms"].items()
        if a["verified"].startswith("FAILED")
    ]
    if failed:
        raise PathNotVerified("path-call counts do not show the requested path:\n  " + "\n  ".join(failed))
    return opts.out
