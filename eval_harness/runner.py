"""`rope-eval run`: serve each arm, send it the identical workload, store every sample.

Per model the arms run in this order:
1. the **reference** (RoPE in float64, or the model in fp32): its generations, then teacher-forced
   scoring of its own sequences. These sequences are the L1 workload of every other arm.
2. the **baseline** (the first configured path), then its **A/A** repeats (a fresh server each, the
   requests in a shuffled order, so the floor includes batch-composition noise), then every other path.
   Each sends the same generations and teacher-forces the reference's sequences.
Before the first server starts, everything that can be checked is (`preflight`). Samples are appended as
they arrive; `--resume` skips what is stored. Each server gets a fresh counts directory, and the arm's
proof of which RoPE implementation ran is recorded in its arm.json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval_harness import provenance
from eval_harness.config import ModelEntry, Profile, RunConfig
from eval_harness.engine.client import Client, Result
from eval_harness.engine.metrics import scrape
from eval_harness.engine.server import ServerSpec, VllmServer, parallel_sizes
from eval_harness.errors import PathNotVerified
from eval_harness.model_source import resolve_model
from eval_harness.paths import PathSpec, check_path, load_custom, parse_path
from eval_harness.proof import Verification, Worker, expected_workers, read_counts, verify, verify_instances
from eval_harness.records import AcceptanceBatch, ArmMeta, ModelMeta, Role, RunManifest, Sample, Score
from eval_harness.store import ArmStore, RunStore, fingerprint, normalized
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
    counts_dirs: dict[str, Path] = field(default_factory=dict)  # path -> counts dir of attached servers
    batch_size: int = 32  # requests between metrics scrapes (per-batch acceptance deltas)
    models_dir: Path | None = None
    parallel_servers: int = 1  # managed servers at once after the reference (a GPU holds several)
    # shared by runs in one event loop (the selftest's groups): caps their managed servers together
    server_slots: asyncio.Semaphore | None = None


@dataclass(frozen=True)
class ArmPlan:
    """One arm: which path it serves, in which role, with which extra vLLM arguments."""

    label: str
    path: str
    role: Role
    shuffle_seed: int | None = None
    extra_args: tuple[str, ...] = ()


def plan_arms(cfg: RunConfig, profile: Profile) -> list[ArmPlan]:
    """The arms of one model, in the order they run."""
    base = cfg.baseline
    if cfg.reference == "fp32":
        ref = ArmPlan("reference-fp32", base, Role.REFERENCE, extra_args=("--dtype", "float32"))
    else:
        ref = ArmPlan("reference", "reference", Role.REFERENCE)
    n_aa = cfg.profile(profile).aa
    aa = [
        ArmPlan(base + AA_SUFFIX + (str(i + 1) if n_aa > 1 else ""), base, Role.AA, shuffle_seed=i + 1)
        for i in range(n_aa)
    ]
    others = [ArmPlan(p, p, Role.CANDIDATE) for p in cfg.paths[1:]]
    return [ref, ArmPlan(base, base, Role.BASELINE), *aa, *others]


def shuffled(works: list[Work], seed: int | None) -> list[Work]:
    if seed is None:
        return works
    out = list(works)
    random.Random(seed).shuffle(out)
    return out


def to_sample(res: Result, work: Work, kind: str, batch: int | None, server: str | None) -> Sample:
    def pairs(d: dict[int, float] | None) -> list[list[float]] | None:
        return None if d is None else [[k, v] for k, v in d.items()]

    return Sample(
        key=res.key,
        kind=kind,
        suite=work.suite,
        item_id=work.item_id,
        sample_idx=work.sample_idx,
        seed=work.request.sampling.seed,
        temperature=work.request.sampling.temperature,
        prompt_hash=work.prompt_hash,
        text=res.text,
        reasoning=res.reasoning_content,
        token_ids=res.token_ids,
        prompt_token_ids=res.prompt_token_ids,
        finish_reason=res.finish_reason,
        batch=batch,
        server=server,
        top_logprobs=[pairs(d) for d in res.top_logprobs] if res.top_logprobs else None,
        prompt_logprobs=[pairs(d) for d in res.prompt_logprobs] if res.prompt_logprobs else None,
    )


# ----------------------------------------------------------------------------- one arm


@dataclass
class Endpoint:
    """Where an arm's requests go; `server` is set when the harness manages it."""

    urls: list[str]
    server: VllmServer | None = None
    counts_dir: Path | None = None  # attach mode: the operator's counts directory, if given


class ArmRunner:
    """Runs one arm's workloads against one endpoint, appending to its store."""

    def __init__(self, opts: RunOptions, model: ModelEntry, plan: ArmPlan, store: ArmStore, meta: ArmMeta):
        self.opts = opts
        self.model = model
        self.plan = plan
        self.store = store
        self.meta = meta
        self.done = store.open(meta, opts.resume)
        self.tasks: dict[str, dict[str, Any]] = {}  # lm-eval runs of this server start

    def _clients(self, endpoint: Endpoint) -> list[Client]:
        alive = endpoint.server.check_alive if endpoint.server else None
        conc = self.opts.config.profile(self.opts.profile).concurrency
        return [Client(u, self.model.name, concurrency=conc, alive=alive) for u in endpoint.urls]

    async def run_work(
        self, endpoint: Endpoint, works: list[Work], kind: str, desc: str, spec_decode: bool, size: int
    ) -> None:
        """Send the works not yet stored, batch by batch, recording acceptance deltas per batch."""
        works = shuffled(works, self.plan.shuffle_seed)
        todo = sum(w.request.key not in self.done for w in works)
        if not todo:
            return
        bar = tqdm(
            total=len(works),
            initial=len(works) - todo,
            desc=f"{self.model.name} {self.plan.label} {desc}",
            unit="req",
            dynamic_ncols=True,
        )
        by_key = {w.request.key: w for w in works}
        clients = self._clients(endpoint)
        try:
            for b in range(0, len(works), size):
                chunk = [w for w in works[b : b + size] if w.request.key not in self.done]
                if not chunk:
                    continue
                batch = b // size
                before = await self._scrape(endpoint) if spec_decode else None

                server = endpoint.server.spec.instance if endpoint.server else None

                def store(res: Result, batch: int = batch, server: str | None = server) -> None:
                    sample = to_sample(res, by_key[res.key], kind, batch, server)
                    self.store.append_sample(sample)
                    self.done[sample.key] = sample
                    bar.update()

                # Shard across replicas (DP endpoints of one path) round-robin; one is the usual case.
                shards = [[w.request for w in chunk[i :: len(clients)]] for i in range(len(clients))]
                await asyncio.gather(
                    *(
                        c.run(sh, store, desc=desc, progress=False)
                        for c, sh in zip(clients, shards, strict=True)
                    )
                )
                if before is not None:
                    delta = await self._scrape(endpoint) - before
                    self.store.append_acceptance(
                        AcceptanceBatch(suite=desc, batch=batch, requests=len(chunk), counters=delta)
                    )
        finally:
            bar.close()
            for c in clients:
                await c.__aexit__()

    @staticmethod
    async def _scrape(endpoint: Endpoint):
        counters = [await scrape(u) for u in endpoint.urls]
        total = counters[0]
        for c in counters[1:]:
            total = total + c
        return total

    def score(self, items: dict[str, list[Item]]) -> None:
        """Score stored generations that have no verdict yet (LCB through the sandbox pool)."""
        scored = self.store.scores()
        for name, suite_items in items.items():
            by_id = {it.id: it for it in suite_items}
            pending = [
                s for s in self.done.values() if s.kind == "gen" and s.suite == name and s.key not in scored
            ]
            if not pending:
                continue
            outputs = [ModelOutput(s.text, s.reasoning, s.finish_reason) for s in pending]
            verdicts = get_suite(name, self.opts.config.suites[name].options).score_many(
                [(by_id[s.item_id], o) for s, o in zip(pending, outputs, strict=True)]
            )
            self.store.append_scores(
                [
                    Score(
                        key=s.key,
                        suite=name,
                        item_id=s.item_id or s.key,
                        sample_idx=s.sample_idx,
                        correct=float(v.correct),
                        extracted=v.extracted,
                        reason=v.reason,
                        finish_reason=s.finish_reason,
                    )
                    for s, v in zip(pending, verdicts, strict=True)
                ]
            )

    async def run_lm_eval(self, endpoint: Endpoint, suite: str) -> dict[str, Any] | None:
        """One `lm-eval:` suite through lm-eval itself against this arm's server: a score per document and
        per metric the task reports, as suite `<suite>/<metric>`. Written at once when lm-eval finishes
        (it cannot resume mid-task), so a stored suite is complete. Returns the run's provenance."""
        if any(s.suite.startswith(suite + "/") for s in self.store.scores().values()):
            return None
        from eval_harness.suites.lm_eval_task import run_task, task_of_suite

        sc = self.opts.config.suites[suite]
        run = await asyncio.to_thread(
            run_task,
            task_of_suite(suite) or suite,
            endpoint.urls[0],
            self.model.name,
            limit=sc.limit.get(self.opts.profile),
            chat=sc.chat,
            gen_kwargs={"max_gen_toks": sc.sampling.max_tokens},
            num_fewshot=sc.num_fewshot,
            num_concurrent=self.opts.config.profile(self.opts.profile).concurrency,
            data_dir=self.opts.source.root,
        )
        self.store.append_scores(
            [
                Score(
                    key=f"{suite}/{metric}/{doc.doc_id}",
                    suite=f"{suite}/{metric}",
                    item_id=f"{run.task}/{doc.doc_id}",
                    correct=value,
                    extracted=doc.filtered.get(metric.partition(",")[2]),
                )
                for doc in run.docs
                for metric, value in doc.metrics.items()
            ]
        )
        return {
            "task": run.task,
            "task_hash": run.task_hash,
            "lm_eval": run.lm_eval_version,
            "documents": run.n_docs,
            "seconds": asdict(run.timing),
        }


# ----------------------------------------------------------------------------- one model


def _fingerprint_parts(opts: RunOptions, model: ModelEntry, plan: ArmPlan, hashes: dict[str, str]) -> dict:
    cfg = opts.config
    return normalized(
        {
            "model": model.model_dump(),
            "path": plan.path,
            "role": plan.role.value,
            "shuffle_seed": plan.shuffle_seed,
            "serve_args": [*cfg.serve_args, *plan.extra_args],
            "suites": {k: v.model_dump() for k, v in cfg.suites.items() if k in hashes},
            "l1": cfg.l1.model_dump(),
            "data": hashes,
            "profile": opts.profile,
            "seed": cfg.seed,
            "versions": provenance.versions(),
        }
    )


def model_serve_args(
    cfg: RunConfig, model: ModelEntry, draft_path: str | None, extra_args: tuple[str, ...] = ()
) -> list[str]:
    """The vLLM arguments of one model's arm, besides --model/--host/--port: the config's serve args, the
    name the harness requests, and the eagle3 draft. Managed and attached servers both use these."""
    args = [*cfg.serve_args, *model.serve_args, *extra_args, "--served-model-name", model.name]
    if model.draft is not None and draft_path is not None:
        spec = {
            "method": model.draft.method,
            "model": draft_path,
            "num_speculative_tokens": model.draft.num_speculative_tokens,
        }
        args += ["--speculative-config", json.dumps(spec)]
    return args


def server_spec(
    opts: RunOptions,
    model: ModelEntry,
    path: PathSpec,
    model_path: str,
    draft_path: str | None,
    store: ArmStore,
    extra_args: tuple[str, ...] = (),
) -> ServerSpec:
    from eval_harness.setup_platform import detect_platform

    return ServerSpec(
        model=model_path,
        path=path,
        log_file=store.server_log,
        counts_dir=store.counts_dir,
        serve_args=model_serve_args(opts.config, model, draft_path, extra_args),
        startup_timeout=opts.config.startup_timeout,
        cpu=detect_platform() == "cpu",
    )


def _previous_tasks(store: ArmStore) -> dict[str, dict[str, Any]]:
    """lm-eval provenance recorded by an earlier start of a resumed arm."""
    return store.read_meta().tasks if store.meta_file.exists() else {}


def attach_key(plan: ArmPlan, endpoints: dict[str, list[str]]) -> str | None:
    """The `--endpoint` entry an arm attaches to: its label (`reference`, `native~aa`) or its path. The
    reference never borrows its path's endpoint: an fp32 oracle runs the baseline's path in another dtype."""
    if plan.label in endpoints:
        return plan.label
    if plan.role is not Role.REFERENCE and plan.path in endpoints:
        return plan.path
    return None


def _verify_attached(
    path: str, counts_dir: Path | None, workers: frozenset[Worker], draft: bool
) -> Verification:
    return verify(path, read_counts(counts_dir) if counts_dir is not None else None, workers, draft)


class ModelRun:
    """All arms of one model."""

    def __init__(self, opts: RunOptions, model: ModelEntry, items: dict[str, list[Item]], hashes: dict):
        self.opts = opts
        self.model = model
        self.items, self.hashes = items, hashes
        cfg = opts.config
        self.gen: list[Work] = [w for n, its in items.items() for w in suite_work(cfg, n, its)]
        if not self.gen:
            self.gen = probe_work(cfg, model, opts.profile)
        self.run_store = RunStore(opts.out)
        self.model_path = ""
        self.draft_path: str | None = None

    def _suite_groups(self) -> dict[str, list[Work]]:
        groups: dict[str, list[Work]] = {}
        for w in self.gen:
            groups.setdefault(w.suite, []).append(w)
        return groups

    def _endpoint(self, plan: ArmPlan, store: ArmStore) -> Endpoint:
        key = attach_key(plan, self.opts.endpoints)
        if key is not None:
            return Endpoint(list(self.opts.endpoints[key]), None, self.opts.counts_dirs.get(key))
        spec = server_spec(
            self.opts,
            self.model,
            parse_path(plan.path),
            self.model_path,
            self.draft_path,
            store,
            plan.extra_args,
        )
        spec.counts_dir = store.new_counts_dir(spec.instance)
        return Endpoint([], VllmServer(spec))

    def _works(self, arm: ArmRunner, reference: dict[str, Sample] | None, probe: list[Work]) -> list[Work]:
        seqs = list((reference if reference is not None else arm.done).values())
        return [*self.gen, *probe, *l1_work(self.opts.config, self.opts.profile, seqs)]

    def _finished(self, arm: ArmRunner, reference: dict[str, Sample] | None, probe: list[Work]) -> bool:
        """A resumed arm whose every request is stored and whose proof is recorded needs no server."""
        if not self.opts.resume or arm.store.read_meta().verification is None:
            return False
        scored = {s.suite.rpartition("/")[0] for s in arm.store.scores().values()}
        if not set(self.opts.config.lm_eval_suites(self.model)) <= scored:
            return False
        return all(w.request.key in arm.done for w in self._works(arm, reference, probe))

    async def run_arm(
        self, plan: ArmPlan, reference: dict[str, Sample] | None, probe: list[Work]
    ) -> ArmRunner:
        """Serve (or attach to) one arm, run its workloads, and record which RoPE implementation ran."""
        store = self.run_store.arm(self.model.name, plan.label)
        parts = _fingerprint_parts(self.opts, self.model, plan, self.hashes)
        meta = ArmMeta(
            label=plan.label,
            path=plan.path,
            role=plan.role,
            fingerprint=fingerprint(parts),
            parts=parts,
            shuffle_seed=plan.shuffle_seed,
        )
        arm = ArmRunner(self.opts, self.model, plan, store, meta)
        if self._finished(arm, reference, probe):
            log.info("%s %s: complete, not served again", self.model.name, plan.label)
            return arm
        endpoint = self._endpoint(plan, store)
        t0 = time.monotonic()
        try:
            if endpoint.server is not None:
                await asyncio.to_thread(endpoint.server.start)
                endpoint.urls = [endpoint.server.url]
            await self._workloads(arm, endpoint, reference, probe)
        finally:  # also on an interrupt during start-up: no server outlives the run
            if endpoint.server is not None:
                await asyncio.to_thread(endpoint.server.stop)
        workers = expected_workers(*parallel_sizes(model_serve_args(self.opts.config, self.model, None)))
        draft = self.model.draft is not None
        if endpoint.server is not None:
            served = {s.server for s in arm.done.values() if s.server is not None}
            verification = verify_instances(plan.path, store.counts(), served, workers, draft)
        else:
            verification = _verify_attached(plan.path, endpoint.counts_dir, workers, draft)
        seconds = round(time.monotonic() - t0, 1)
        tasks = {**_previous_tasks(store), **arm.tasks}
        update = {"urls": endpoint.urls, "seconds": seconds, "verification": verification, "tasks": tasks}
        store.write_meta(meta.model_copy(update=update))
        return arm

    async def _workloads(
        self, arm: ArmRunner, endpoint: Endpoint, reference: dict[str, Sample] | None, probe: list[Work]
    ) -> None:
        spec = self.model.draft is not None
        for suite, works in self._suite_groups().items():
            await arm.run_work(endpoint, works, "gen", suite, spec, self.opts.batch_size)
        if probe:  # small batches: per-batch acceptance deltas give the CI
            await arm.run_work(endpoint, probe, "gen", probe[0].suite, True, 4)
        await asyncio.to_thread(arm.score, self.items)
        for suite in self.opts.config.lm_eval_suites(self.model):
            if (record := await arm.run_lm_eval(endpoint, suite)) is not None:
                arm.tasks[suite] = record
        seqs = list((reference if reference is not None else arm.done).values())
        l1 = l1_work(self.opts.config, self.opts.profile, seqs)
        await arm.run_work(endpoint, l1, "l1", "L1", False, self.opts.batch_size)

    async def run(self) -> ModelMeta:
        cfg = self.opts.config
        self.model_path = resolve_model(self.model.path, self.opts.models_dir)
        self.draft_path = (
            resolve_model(self.model.draft.path, self.opts.models_dir) if self.model.draft else None
        )
        probe = draft_probe_work(self.draft_path, cfg)
        plans = plan_arms(cfg, self.opts.profile)
        # Attached endpoints are separate servers and run side by side; managed ones take a slot (one by
        # default: they share this machine; a GPU holds several small ones).
        slots = self.opts.server_slots or asyncio.Semaphore(max(1, self.opts.parallel_servers))

        async def one(plan: ArmPlan, reference: dict[str, Sample] | None) -> ArmRunner:
            if attach_key(plan, self.opts.endpoints) is not None:
                return await self.run_arm(plan, reference, probe)
            async with slots:
                return await self.run_arm(plan, reference, probe)

        ref = await one(plans[0], None)  # every other arm teacher-forces the reference's sequences
        await asyncio.gather(*(one(p, ref.done) for p in plans[1:]))
        return ModelMeta(
            model_path=self.model_path,
            draft_path=self.draft_path,
            data_hashes=self.hashes,
            arms=[p.label for p in plans],
        )


# ----------------------------------------------------------------------------- preflight, the run


@dataclass(frozen=True)
class Prepared:
    """What preflight established: each model's items and data hashes."""

    items: dict[str, dict[str, list[Item]]]
    hashes: dict[str, dict[str, str]]


def preflight(opts: RunOptions) -> Prepared:
    """Every check that can be made before a server starts: a bad `custom:` target, a missing model or
    missing data fails in seconds, not after the first arm has been served in full."""
    cfg = opts.config
    if len(cfg.paths) < 2 and cfg.profile(opts.profile).aa == 0:
        raise ValueError(f"nothing to compare: only the baseline {cfg.baseline} and no A/A arms (--aa N)")
    for p in cfg.paths:
        if check_path(p).kind == "custom-fused":
            load_custom(parse_path(p))  # the fused signature differs; importing it is what can be checked
    for m in cfg.models:
        resolve_model(m.path, opts.models_dir)
        if m.draft is not None:
            resolve_model(m.draft.path, opts.models_dir)
    items, hashes = {}, {}
    for m in cfg.models:
        items[m.name], hashes[m.name] = load_items(cfg, m, opts.profile, opts.source)
    return Prepared(items, hashes)


def _manifest(opts: RunOptions, store: RunStore) -> RunManifest:
    old = store.read_manifest() if opts.resume and store.exists() else None
    cfg = opts.config
    return RunManifest(
        name=cfg.name,
        profile=opts.profile,
        baseline=cfg.baseline,
        reference=plan_arms(cfg, opts.profile)[0].label,
        paths=cfg.paths,
        config=cfg.model_dump(mode="json"),
        data_source=str(opts.source),
        provenance=provenance.collect(),
        started=old.started if old else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        models=old.models if old else {},
    )


async def run(opts: RunOptions, on_model: Callable[[str], None] | None = None) -> Path:
    prepared = preflight(opts)
    store = RunStore(opts.out)
    manifest = _manifest(opts, store)
    store.write_manifest(manifest)
    for model in opts.config.models:
        if on_model:
            on_model(model.name)
        mr = ModelRun(opts, model, prepared.items[model.name], prepared.hashes[model.name])
        manifest.models[model.name] = await mr.run()
        store.write_manifest(manifest)
    manifest.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    store.write_manifest(manifest)
    failed = [
        f"{name}/{label}: {meta.verification.detail}"
        for name, mm in manifest.models.items()
        for label in mm.arms
        if (meta := store.arm(name, label).read_meta()).verification is not None and meta.verification.failed
    ]
    if failed:
        raise PathNotVerified("path-call counts do not show the requested path:\n  " + "\n  ".join(failed))
    return opts.out


def with_paths(cfg: RunConfig, keep: list[str]) -> RunConfig:
    """The config with only the baseline and `keep` among its paths (`run --path`)."""
    return cfg.model_copy(update={"paths": [p for p in cfg.paths if p == cfg.baseline or p in keep]})
