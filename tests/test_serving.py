"""Serving through real vLLM (CPU) with the RoPE path switched, and proof of which path ran."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from eval_harness.engine.client import Client, Request, Result, Sampling
from eval_harness.engine.metrics import scrape
from eval_harness.engine.server import ServerError, ServerSpec, VllmServer
from eval_harness.paths import parse_path
from eval_harness.proof import (
    SETTLE_SECONDS,
    Verification,
    expected_workers,
    read_counts,
    total_counts,
    verify,
)

pytestmark = pytest.mark.vllm
MODELS = ["qwen3-tiny", "glm4-tiny", "glm45-tiny"]
PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then",
    "Rotary position embeddings encode where each token sits",
    "def solve(n: int) -> int:\n    total = 0\n",
    "The train leaves at 7:45 in the morning and arrives at 11:20. " * 12,  # ~200 tokens of positions
]
# fp32 end to end. The Triton kernel computes cos*x - sin*y in one fp32 expression while the
# native path rounds each product to fp32 first; through 2 layers that moves logprobs by ~1e-6.
# 1e-4 is rounding with a wide margin, far below the ~1e-1 a RoPE bug moves them.
LOGPROB_ATOL = 1e-4


def generate(url: str, model: str, requests: list[Request]) -> list[Result]:
    async def go() -> list[Result]:
        async with Client(url, model, concurrency=4) as c:
            return list(await asyncio.gather(*(c.generate(r) for r in requests)))

    return asyncio.run(go())


def greedy(prompts: list[str], max_tokens: int = 24) -> list[Request]:
    return [
        Request(f"p{i}", Sampling(max_tokens=max_tokens, logprobs=5), prompt=p) for i, p in enumerate(prompts)
    ]


def counts_of(server: VllmServer) -> dict[str, int]:
    time.sleep(SETTLE_SECONDS)  # let every process's writer flush, and show it idle
    return total_counts(read_counts(server.spec.counts_dir, instance=server.spec.instance))


def proof_of(server: VllmServer, path: str, draft: bool = False) -> Verification:
    """The arm's verdict as the harness reaches it: this start's files, one worker (TP=PP=DP=1)."""
    time.sleep(SETTLE_SECONDS)
    records = read_counts(server.spec.counts_dir, instance=server.spec.instance)
    return verify(path, records, expected_workers(), draft=draft)


@pytest.mark.parametrize("model", MODELS)
def test_native_and_triton_agree_and_counts_prove_the_path(serve, model: str) -> None:
    native, triton = serve(model, "native"), serve(model, "triton")
    res_n, res_t = generate(native.url, model, greedy(PROMPTS)), generate(triton.url, model, greedy(PROMPTS))
    for a, b in zip(res_n, res_t, strict=True):
        assert a.token_ids == b.token_ids, f"{model}: greedy outputs differ between native and triton"
        for step_a, step_b in zip(a.top_logprobs, b.top_logprobs, strict=True):
            for tok in step_a.keys() & step_b.keys():
                assert abs(step_a[tok] - step_b[tok]) < LOGPROB_ATOL
    # teacher-forced: the same token stream scored under both paths
    ids = res_n[3].prompt_token_ids + res_n[3].token_ids
    tf = [Request("tf", Sampling(max_tokens=1), prompt=ids, prompt_logprobs=5)]
    (tf_n,), (tf_t,) = generate(native.url, model, tf), generate(triton.url, model, tf)
    for pa, pb in zip(tf_n.prompt_logprobs[1:], tf_t.prompt_logprobs[1:], strict=True):
        for tok in pa.keys() & pb.keys():
            assert abs(pa[tok] - pb[tok]) < LOGPROB_ATOL
    for server, path in ((native, "native"), (triton, "triton")):
        v = proof_of(server, path)
        assert v.verified, f"{model} {path}: {v.problems}"
        assert set(v.counts) == {path}


@pytest.mark.parametrize("model", ["qwen3-tiny", "glm4-tiny"])
def test_reference_path_serves_and_agrees_in_fp32(serve, model: str) -> None:
    """The float64 yardstick runs inside the served model (its counts prove it) and, in fp32, lands within
    rounding of native: it differs only in where the RoPE rounds."""
    native, ref = serve(model, "native"), serve(model, "reference")
    res_n, res_r = generate(native.url, model, greedy(PROMPTS)), generate(ref.url, model, greedy(PROMPTS))
    for a, b in zip(res_n, res_r, strict=True):
        assert a.token_ids == b.token_ids, f"{model}: greedy outputs differ between native and reference"
        for step_a, step_b in zip(a.top_logprobs, b.top_logprobs, strict=True):
            for tok in step_a.keys() & step_b.keys():
                assert abs(step_a[tok] - step_b[tok]) < LOGPROB_ATOL
    counts = counts_of(ref)
    assert set(counts) == {"reference"} and counts["reference"] > 0, f"{model} reference: counts {counts}"


def test_zeroed_rotation_changes_outputs(serve) -> None:
    """A custom path that skips the rotation must change the model: the op is on the data path."""
    native = serve("qwen3-tiny", "native")
    broken = serve("qwen3-tiny", "custom:eval_harness.selftest.bugs:no_rotation")
    res_n = generate(native.url, "qwen3-tiny", greedy(PROMPTS))
    res_b = generate(broken.url, "qwen3-tiny", greedy(PROMPTS))
    assert any(a.token_ids != b.token_ids for a, b in zip(res_n, res_b, strict=True))
    assert set(counts_of(broken)) == {"custom:eval_harness.selftest.bugs:no_rotation"}


def test_eagle3_draft_serves_with_triton_and_reports_spec_decode(serve, models_dir: Path) -> None:
    from eval_harness.config import RunConfig
    from eval_harness.workload import draft_probe_work

    server = serve("qwen3-tiny", "triton", draft=True)
    cfg = RunConfig(name="t", models=[{"name": "qwen3-tiny", "path": "x"}], paths=["native", "triton"])
    works = draft_probe_work(str(models_dir / "qwen3-tiny-eagle3"), cfg)[:6]
    before = asyncio.run(scrape(server.url))
    generate(server.url, "qwen3-tiny", [w.request for w in works])
    delta = asyncio.run(scrape(server.url)) - before
    assert delta.drafts > 0 and delta.draft_tokens == 3 * delta.drafts
    assert delta.accepted / delta.draft_tokens > 0.5, "the fitted draft should be accepted on its prompts"
    assert len(delta.accepted_per_pos) == 3
    v = proof_of(server, "triton", draft=True)
    assert v.verified, v.problems
    (worker,) = v.workers
    assert worker.roles == ("target", "draft") and set(worker.counts) == {"triton"}


def test_compiled_mode_counts_every_call(serve) -> None:
    """torch.compile traces the model; counters must still rise on every served request."""
    args = ["--dtype", "float32", "--max-model-len", "1024", "--max-num-seqs", "4"]
    server = serve("qwen3-tiny", "triton", args=args)
    first = counts_of(server).get("triton", 0)
    generate(server.url, "qwen3-tiny", greedy(PROMPTS[:1], max_tokens=8))
    second = counts_of(server)["triton"]
    generate(server.url, "qwen3-tiny", greedy(PROMPTS[:1], max_tokens=8))
    third = counts_of(server)["triton"]
    # 2 layers x (1 prefill + 7 decode steps) per request, at least
    assert second - first >= 16 and third - second >= 16


MIXED = "gemma3-mixed-rope"


@pytest.fixture(scope="session")
def mixed_rope_model(models_dir: Path) -> str:
    """A tiny Gemma3 whose two layer types take different RoPE settings (Gemma3 reads `rope_parameters`
    per layer type): the sliding layer plain RoPE, which the plugin switches, the full-attention layer
    Phi-3's LongRoPE, whose class (Phi3LongRoPEScaledRotaryEmbedding, its own forward) it does not.
    Random weights; the tokenizer is qwen3-tiny's."""
    import shutil

    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from eval_harness.models.specs import INTERMEDIATE, VOCAB

    out = models_dir / MIXED
    if out.exists():
        return MIXED
    ids = json.loads((models_dir / "qwen3-tiny" / "config.json").read_text())
    head = 32
    config = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head,
        max_position_embeddings=2048,
        sliding_window=256,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            "full_attention": {
                "rope_type": "longrope",
                "rope_theta": 1e6,
                "short_factor": [1.0] * (head // 2),
                "long_factor": [1.0] * (head // 2),
                "factor": 1.0,
                "original_max_position_embeddings": 2048,
            },
        },
        eos_token_id=ids["eos_token_id"],
        pad_token_id=ids["pad_token_id"],
        bos_token_id=None,
        architectures=["Gemma3ForCausalLM"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Gemma3ForCausalLM(config).save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(models_dir / "qwen3-tiny" / name, out / name)
    return MIXED


def test_a_layer_with_an_unswitched_rope_class_fails_verification(serve, mixed_rope_model: str) -> None:
    """Counts alone would pass this arm: the switched layer's calls show the path. The coverage recorded after
    the model load names the layer the plugin does not reach, and that layer's calls count apart."""
    server = serve(mixed_rope_model, "native")
    generate(server.url, mixed_rope_model, greedy(PROMPTS[:2], max_tokens=4))
    v = proof_of(server, "native")
    assert v.failed
    site = "model.layers.1.self_attn.rotary_emb (Phi3LongRoPEScaledRotaryEmbedding)"
    assert any(f"1 of 2 RoPE layers are not switched: {site}" in p for p in v.problems), v.problems
    assert v.counts["native"] > 0
    assert v.counts["unswitched:Phi3LongRoPEScaledRotaryEmbedding"] == v.counts["native"]


# ---- bad input: a clear message and no orphan process ----------------------------------------


def _spec(tmp_path: Path, models_dir: Path, path: str = "native", **kw) -> ServerSpec:
    args = kw.pop("args", ["--enforce-eager", "--dtype", "float32"])
    return ServerSpec(
        model=kw.pop("model", str(models_dir / "qwen3-tiny")),
        path=parse_path(path),
        log_file=tmp_path / "server.log",
        counts_dir=tmp_path / "counts",
        serve_args=[*args, "--served-model-name", "qwen3-tiny"],
        **kw,
    )


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_missing_model_directory(tmp_path: Path, models_dir: Path) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        VllmServer(_spec(tmp_path, models_dir, model=str(tmp_path / "nope"))).start()


def test_port_in_use(tmp_path: Path, models_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        spec = _spec(tmp_path, models_dir, args=["--port", str(port)])
        with pytest.raises(ServerError, match="already in use"):
            VllmServer(spec).start()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROPE_EVAL_PATH": "bogus"}, "unknown RoPE path 'bogus'"),
        ({"ROPE_EVAL_PATH": "custom:no_such_module_xyz:fn"}, "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_server_dies_during_startup(tmp_path: Path, models_dir: Path, env: dict, message: str) -> None:
    server = VllmServer(_spec(tmp_path, models_dir, env=env, startup_timeout=300))
    with pytest.raises(ServerError, match="exited with code") as info:
        server.start()
    assert message in str(info.value), "the error must carry the log lines that explain it"
    assert server.proc is None


def test_server_dying_mid_run_is_reported_and_leaves_no_orphan(tmp_path: Path, models_dir: Path) -> None:
    server = VllmServer(_spec(tmp_path, models_dir))
    server.start()
    pgid = server.proc.pid
    try:
        generate(server.url, "qwen3-tiny", greedy(PROMPTS[:1], max_tokens=4))
        os.kill(pgid, signal.SIGKILL)  # the API server dies; its engine process is orphaned

        async def go() -> None:
            async with Client(server.url, "qwen3-tiny", retries=2, alive=server.check_alive) as c:
                await c.generate(greedy(PROMPTS[:1])[0])

        with pytest.raises(ServerError, match="exited with code"):
            asyncio.run(go())
    finally:
        server.stop()
    assert _group_gone(pgid), "engine/worker processes survived the server"
