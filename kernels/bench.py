"""RoPE benchmarks: native eager, native under torch.compile, our Triton kernel, peers, and the copy
floor, at the Qwen3-8B and GLM4-9B decode and prefill shapes (bf16); then the fused attention prologue
(split + q/k RMSNorm + RoPE, the `fused` path's kernel) against the same work as separate kernels.

    python -m eval_harness.kernels.bench [--json PATH] [--quick] [--only NAME,...]

On CUDA every implementation is first checked against the float64 reference, then timed with
`triton.testing.do_bench` (median, L2 flushed before each call), and decode shapes also under
CUDA-graph replay (`do_bench_cudagraph`), as vLLM replays decode. `host us` is the CPU time to
issue one call: once it nears the time of do_bench's L2 flush (about 60 us on an H200), the do_bench
figure measures the host rather than the GPU, so read small kernels in the graph column.

Without CUDA, `--quick` runs tiny shapes through the Triton interpreter: a smoke test of this script
and of the kernels' correctness, whose timings say nothing about kernel speed; without `--quick` it
exits with status 2.

The copy floor is a device copy moving the bytes RoPE must move: the rotary part of every q and k
head read and written, plus the gathered cos/sin rows read. Peers run when importable: FlashInfer's
`apply_rope_with_cos_sin_cache_inplace` (vLLM's API; fp32 cache, as vLLM passes it) and Liger's
`LigerRopeFunction` (neox and full rotary only; it takes cos/sin already gathered and duplicated to
the head width, so that gather is timed with it: leaving it out would not be a fair comparison).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .fused import rms_norm_heads, rms_norm_native, split_qkv_rmsnorm_rope, split_qkv_rmsnorm_rope_native
from .reference import cos_sin_cache, rope_native, rotary_embedding_f64
from .rope import rotary_embedding


@dataclass(frozen=True)
class Shape:
    name: str
    tokens: int
    q_heads: int
    kv_heads: int
    head_size: int
    rot_dim: int
    is_neox: bool
    max_position: int = 40960

    @property
    def decode(self) -> bool:
        return self.tokens <= 256


def _qwen3(tokens: int, kind: str) -> Shape:
    return Shape(f"qwen3-8b {kind} {tokens}", tokens, 32, 8, 128, 128, True)


SHAPES = [
    _qwen3(1, "decode"),
    _qwen3(64, "decode"),
    _qwen3(256, "decode"),
    _qwen3(4096, "prefill"),
    _qwen3(16384, "prefill"),
    Shape("glm4-9b prefill 4096 rot64 gptj", 4096, 32, 2, 128, 64, False, 32768),
]
QUICK_SHAPES = [
    Shape("tiny neox", 4, 4, 2, 128, 128, True, 1024),
    Shape("tiny gptj rot64", 4, 4, 1, 128, 64, False, 1024),
]


@dataclass
class Result:
    shape: str
    impl: str
    us: float
    us_cudagraph: float | None
    host_us: float | None  # CPU time to issue one call (CUDA only)
    rel_err: float | None  # ||out - ref|| / ||ref|| against the float64 reference, before timing
    section: str = "rope"  # "rope" or "fused" (the fused attention prologue)


class Case:
    """Inputs of one shape: q and k as column slices of a fused qkv tensor, as vLLM produces them."""

    def __init__(self, shape: Shape, device: torch.device) -> None:
        gen = torch.Generator(device="cpu").manual_seed(0)
        s = shape
        self.shape = s
        self.q_size, self.kv_size = s.q_heads * s.head_size, s.kv_heads * s.head_size
        width = self.q_size + 2 * self.kv_size
        self.qkv = torch.randn(s.tokens, width, generator=gen).to(device, torch.bfloat16)
        # Each timed call rotates qkv again; bf16 cos/sin are not exactly unit, so values drift
        # over thousands of calls: every implementation starts from these values.
        self.qkv_start = self.qkv.clone()
        self.positions = torch.randint(0, s.max_position, (s.tokens,), generator=gen).to(device)
        # vLLM's forward_cuda casts its cache to the query dtype; FlashInfer gets it in fp32.
        self.cache_f32 = cos_sin_cache(s.max_position, s.rot_dim, 1e6, torch.float32, device)
        self.cache = self.cache_f32.to(torch.bfloat16)
        self.q_weight = (1 + 0.1 * torch.randn(s.head_size, generator=gen)).to(device, torch.bfloat16)
        self.k_weight = (1 + 0.1 * torch.randn(s.head_size, generator=gen)).to(device, torch.bfloat16)
        elt = self.qkv.element_size()
        rot_bytes = s.tokens * (s.q_heads + s.kv_heads) * s.rot_dim * elt
        cache_bytes = s.tokens * s.rot_dim * self.cache.element_size()
        # A copy reads and writes its size: half of what RoPE moves.
        self.copy_src = torch.empty((rot_bytes + cache_bytes // 2) // 2, dtype=torch.bfloat16, device=device)
        self.copy_dst = torch.empty_like(self.copy_src)

    def qk(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)[:2]

    def rope_args(self) -> tuple:
        q, k = self.qk()
        return self.positions, q, k, self.shape.head_size, self.cache, self.shape.is_neox


def _impls(case: Case, device: torch.device) -> dict[str, tuple[Callable[[], object], bool]]:
    """name -> (call, whether the float64 RoPE reference applies to its q/k result)."""
    impls: dict[str, tuple[Callable[[], object], bool]] = {
        "copy floor": (lambda: case.copy_dst.copy_(case.copy_src), False),
        "native eager": (lambda: rope_native(*case.rope_args()), True),
        "triton (ours)": (lambda: rotary_embedding(*case.rope_args()), True),
    }
    if device.type == "cuda":
        compiled = torch.compile(rope_native, fullgraph=True, dynamic=False)
        impls["native compiled"] = (lambda: compiled(*case.rope_args()), True)
    impls.update(_peers(case))
    return impls


def _peers(case: Case) -> dict[str, tuple[Callable[[], object], bool]]:
    s = case.shape
    peers: dict[str, tuple[Callable[[], object], bool]] = {}
    try:
        from flashinfer.rope import apply_rope_with_cos_sin_cache_inplace
    except ImportError:
        pass
    else:

        def flashinfer_call() -> None:
            q, k = case.qk()
            apply_rope_with_cos_sin_cache_inplace(
                positions=case.positions,
                query=q,
                key=k,
                head_size=s.head_size,
                cos_sin_cache=case.cache_f32,
                is_neox=s.is_neox,
            )

        peers["flashinfer"] = (flashinfer_call, True)
    try:
        from liger_kernel.ops.rope import LigerRopeFunction
    except ImportError:
        return peers
    if s.is_neox and s.rot_dim == s.head_size:

        def liger_call() -> tuple[torch.Tensor, torch.Tensor]:
            q, k = case.qk()
            cos, sin = case.cache.index_select(0, case.positions).chunk(2, dim=-1)
            cos, sin = torch.cat((cos, cos), -1)[None], torch.cat((sin, sin), -1)[None]
            # Liger wants [batch, heads, seq, head_size]: one sequence of all tokens.
            q4 = q.view(1, s.tokens, s.q_heads, s.head_size).transpose(1, 2)
            k4 = k.view(1, s.tokens, s.kv_heads, s.head_size).transpose(1, 2)
            return LigerRopeFunction.apply(q4, k4, cos, sin)

        peers["liger"] = (liger_call, False)
    return peers


def _rel_err(case: Case, call: Callable[[], object]) -> float:
    """Run `call` once on the start values; error of q and k (in place or returned) against float64."""
    case.qkv.copy_(case.qkv_start)
    ref_q, ref_k = rotary_embedding_f64(*case.rope_args())
    out = call()
    q, k = out if isinstance(out, tuple) else case.qk()
    got = torch.cat([q.reshape(q.shape[0], -1).double(), k.reshape(k.shape[0], -1).double()], dim=1)
    ref = torch.cat([ref_q, ref_k], dim=1)
    return float((got - ref).norm() / ref.norm())


def _time_cuda(call: Callable[[], object], graph: bool) -> tuple[float, float | None, float]:
    """(do_bench median, CUDA-graph replay median or None, host time per call) in microseconds."""
    import triton.testing

    us = triton.testing.do_bench(call, return_mode="median") * 1e3
    graph_us = triton.testing.do_bench_cudagraph(call, return_mode="median") * 1e3 if graph else None
    return us, graph_us, _host_us(call)


def _host_us(call: Callable[[], object], calls: int = 50) -> float:
    # Issue-only time: 50 calls stay well inside the launch queue, so the loop never waits on the GPU.
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    return host


def _time_cpu(call: Callable[[], object], reps: int = 5) -> float:
    call()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def _first_call_ok(name: str, call: Callable[[], object], notes: list[str]) -> bool:
    # Peers are optional: one that fails to build here (FlashInfer JIT-compiles) is noted, not fatal.
    try:
        call()
    except Exception as exc:
        notes.append(f"{name} skipped: {type(exc).__name__}: {exc}"[:300])
        return False
    return True


PEERS = ("flashinfer", "liger", "vllm fused_qk_norm_rope", "unfused: vllm rmsnorm + rope (ours)")


def run(
    shapes: list[Shape], device: torch.device, notes: list[str], only: set[str] | None, section: str = "rope"
) -> list[Result]:
    impls_of, rel_err_of = (_impls, _rel_err) if section == "rope" else (_fused_impls, _fused_rel_err)
    results = []
    for shape in shapes:
        case = Case(shape, device)
        for name, (call, check) in impls_of(case, device).items():
            if only is not None and name not in only and name != "copy floor":
                continue
            if name in PEERS and not _first_call_ok(name, call, notes):
                continue
            rel_err = rel_err_of(case, call) if check else None
            case.qkv.copy_(case.qkv_start)
            if device.type == "cuda":
                us, graph_us, host_us = _time_cuda(call, shape.decode)
            else:
                us, graph_us, host_us = _time_cpu(call), None, None
            results.append(Result(shape.name, name, us, graph_us, host_us, rel_err, section))
    return results


# ---- the fused attention prologue --------------------------------------------------------------------

EPS = 1e-6  # Qwen3's rms_norm_eps
FUSED = "fused qknorm+rope (ours)"
UNFUSED = ("unfused: vllm rmsnorm + rope (ours)", "unfused: compiled rmsnorm + rope (ours)")
NormFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def _vllm_rms_norm() -> NormFn | None:
    """vLLM's CUDA RMSNorm kernel, called as its RMSNorm layer calls it on CUDA; None without vLLM's _C."""
    try:
        import vllm._custom_ops  # noqa: F401  (loads torch.ops._C)

        op = torch.ops._C.rms_norm
    except (ImportError, AttributeError, RuntimeError):
        return None

    def norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        op(out, x, weight, eps)
        return out

    return norm


@functools.cache
def _compiled_rms_norm() -> NormFn:
    return torch.compile(rms_norm_native, dynamic=True, fullgraph=True)


def _unfused(case: Case, norm: NormFn) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Split (views), RMSNorm of the q heads, RMSNorm of the k heads, then our RoPE in place on the results:
    the three launches of an unfused Qwen3 attention prologue."""
    s = case.shape

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        q, k = case.qk()
        qn = norm(q.view(s.tokens, s.q_heads, s.head_size), case.q_weight, EPS).view(s.tokens, -1)
        kn = norm(k.view(s.tokens, s.kv_heads, s.head_size), case.k_weight, EPS).view(s.tokens, -1)
        rotary_embedding(case.positions, qn, kn, s.head_size, case.cache, s.is_neox)
        return qn, kn

    return call


def _vllm_fused(case: Case) -> Callable[[], tuple[torch.Tensor, torch.Tensor]] | None:
    """vLLM's CUDA `fused_qk_norm_rope` (its qk-norm+RoPE fusion pass's kernel), in place on qkv."""
    s = case.shape
    if s.rot_dim != s.head_size or s.head_size not in (64, 128, 256):
        return None
    try:
        from vllm._custom_ops import fused_qk_norm_rope
    except ImportError:
        return None

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        fused_qk_norm_rope(
            case.qkv, s.q_heads, s.kv_heads, s.kv_heads, s.head_size, EPS,
            case.q_weight, case.k_weight, case.cache, s.is_neox, case.positions,
        )  # fmt: skip
        return case.qk()

    return call


def fused_floor_elements(shape: Shape) -> int:
    """bf16 elements a copy must move to match the prologue's bytes: q and k heads read whole (the norm
    needs every element) and written, plus the gathered cos/sin rows read; a copy reads and writes."""
    qk = shape.tokens * (shape.q_heads + shape.kv_heads) * shape.head_size
    return (2 * qk + shape.tokens * shape.rot_dim) // 2


def _fused_impls(case: Case, device: torch.device) -> dict[str, tuple[Callable[[], object], bool]]:
    s = case.shape
    kw = dict(
        q_size=case.q_size,
        kv_size=case.kv_size,
        head_size=s.head_size,
        eps=EPS,
        cos_sin_cache=case.cache,
        positions=case.positions,
        is_neox=s.is_neox,
    )
    src = torch.empty(fused_floor_elements(s), dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    impls: dict[str, tuple[Callable[[], object], bool]] = {
        "copy floor": (lambda: dst.copy_(src), False),
        FUSED: (lambda: split_qkv_rmsnorm_rope(case.qkv, case.q_weight, case.k_weight, **kw), True),
    }
    vllm_norm = _vllm_rms_norm() if device.type == "cuda" else None
    if vllm_norm is not None:
        impls[UNFUSED[0]] = (_unfused(case, vllm_norm), True)
    # Compiled on CUDA, as Inductor makes one kernel of it; eager through the CPU smoke run. Dynamic, as vLLM
    # compiles its model: q and k heads of every shape would otherwise exceed Dynamo's recompile limit (8)
    # and the later shapes would silently time eager torch.
    norm = _compiled_rms_norm() if device.type == "cuda" else rms_norm_native
    impls[UNFUSED[1]] = (_unfused(case, norm), True)
    peer = _vllm_fused(case) if device.type == "cuda" else None
    if peer is not None:
        impls["vllm fused_qk_norm_rope"] = (peer, True)
    return impls


def _fused_rel_err(case: Case, call: Callable[[], object]) -> float:
    """Run `call` once on the start values; error of its q and k against float64 RoPE of the unfused
    path's normalised q and k (the reference is taken first: vLLM's op rewrites qkv in place)."""
    s = case.shape
    case.qkv.copy_(case.qkv_start)
    q, k = case.qk()
    z_q = rms_norm_heads(q, case.q_weight, None, s.head_size, EPS)
    z_k = rms_norm_heads(k, case.k_weight, None, s.head_size, EPS)
    ref_q, ref_k = rotary_embedding_f64(case.positions, z_q, z_k, s.head_size, case.cache, s.is_neox)
    out = call()
    got = torch.cat([out[0].reshape(s.tokens, -1).double(), out[1].reshape(s.tokens, -1).double()], dim=1)
    ref = torch.cat([ref_q, ref_k], dim=1)
    return float((got - ref).norm() / ref.norm())


def fused_speedups(results: list[Result]) -> dict[str, float]:
    """Per shape, the fastest unfused baseline's time over the fused kernel's (above 1: fused is faster)."""
    out = {}
    for shape in dict.fromkeys(r.shape for r in results if r.section == "fused"):
        rows = {r.impl: r.us for r in results if r.section == "fused" and r.shape == shape}
        unfused = [rows[name] for name in UNFUSED if name in rows]
        if FUSED in rows and unfused:
            out[shape] = min(unfused) / rows[FUSED]
    return out


def _fused_check(device: torch.device) -> float:
    """Fused op against its unfused native path: max |diff| over max |native|, across q, k and v."""
    case = Case(QUICK_SHAPES[0] if device.type == "cpu" else SHAPES[1], device)
    kw = dict(
        q_size=case.q_size,
        kv_size=case.kv_size,
        head_size=case.shape.head_size,
        eps=1e-6,
        cos_sin_cache=case.cache,
        positions=case.positions,
        is_neox=True,
    )
    got = split_qkv_rmsnorm_rope(case.qkv, case.q_weight, case.k_weight, **kw)
    ref = split_qkv_rmsnorm_rope_native(case.qkv, case.q_weight, case.k_weight, **kw)
    return max(
        float((g.float() - r.float()).abs().max() / r.float().abs().max())
        for g, r in zip(got, ref, strict=True)
    )


def _table(results: list[Result], header: str) -> str:
    """One section's rows; `x floor` is against that section's copy floor for the shape."""
    cols = f"{'shape':34} {'impl':40} {'us':>9} {'graph us':>9} {'host us':>9} {'x floor':>8} {'rel err':>9}"
    lines = [header, cols]
    floors = {r.shape: r.us for r in results if r.impl == "copy floor"}

    def cell(value: float | None, fmt: str) -> str:
        return f"{'-':>9}" if value is None else format(value, fmt)

    for r in results:
        lines.append(
            f"{r.shape:34} {r.impl:40} {r.us:9.2f} {cell(r.us_cudagraph, '9.2f')} {cell(r.host_us, '9.1f')} "
            f"{r.us / floors[r.shape]:8.2f} {cell(r.rel_err, '9.1e')}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (on CPU: through the interpreter)")
    parser.add_argument("--only", help="comma-separated implementation names to time (the copy floor always)")
    args = parser.parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        shapes = QUICK_SHAPES if args.quick else SHAPES
        device_name = torch.cuda.get_device_name()
    elif args.quick:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read at the kernels' first launch
        device, shapes, device_name = torch.device("cpu"), QUICK_SHAPES, "cpu (Triton interpreter)"
    else:
        print(
            "bench: no CUDA device; kernel timings need one. Use --quick for a CPU smoke run.",
            file=sys.stderr,
        )
        return 2
    import triton

    meta = {
        "device": device_name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dtype": "bfloat16",
        "timing": "do_bench median, L2 flushed"
        if device.type == "cuda"
        else "perf_counter median (interpreter)",
    }
    notes: list[str] = []
    only = None if args.only is None else {name.strip() for name in args.only.split(",")}
    results = run(shapes, device, notes, only)
    fused = run(shapes, device, notes, only, section="fused")
    meta["fused_max_rel_diff_vs_native"] = _fused_check(device)
    header = "  ".join(f"{k}={v}" for k, v in meta.items())
    print(_table(results, header))
    print()
    print(_table(fused, "fused attention prologue: split + q/k RMSNorm + RoPE"))
    speedups = fused_speedups(fused)
    for shape, ratio in speedups.items():
        print(f"{shape}: unfused / fused = {ratio:.2f}x")
    results += fused
    for note in notes:
        print("note:", note)
    if args.json:
        with open(args.json, "w") as f:
            record = {
                **meta,
                "notes": notes,
                "fused_speedup": speedups,
                "results": [asdict(r) for r in results],
            }
            json.dump(record, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
