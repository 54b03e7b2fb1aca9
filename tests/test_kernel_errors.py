"""L0: bad input raises a ValueError naming the argument; without Triton the ops fall back to native."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from eval_harness.kernels import _triton_support
from eval_harness.kernels._triton_support import can_launch
from eval_harness.kernels.fused import split_qkv_rmsnorm_rope
from eval_harness.kernels.reference import cos_sin_cache, rope_native
from eval_harness.kernels.rope import rope_forward_triton, rotary_embedding

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True, scope="module")
def _interpreter_on_cpu():
    with pytest.MonkeyPatch.context() as mp:
        if DEVICE.type == "cpu":
            mp.setenv("TRITON_INTERPRET", "1")
        yield


def _rope_args(**override) -> dict:
    args = dict(
        positions=torch.arange(3, device=DEVICE),
        query=torch.randn(3, 4 * 64, device=DEVICE),
        key=torch.randn(3, 2 * 64, device=DEVICE),
        head_size=64,
        cos_sin_cache=cos_sin_cache(16, 32, device=DEVICE),
        is_neox=True,
    )
    return {**args, **override}


ROPE_ERRORS = {
    "key dtype": ("key", dict(key=torch.randn(3, 128, device=DEVICE, dtype=torch.float16))),
    "key tokens": ("key", dict(key=torch.randn(4, 128, device=DEVICE))),
    "key width": ("key", dict(key=torch.randn(3, 100, device=DEVICE))),
    "query width": ("query", dict(query=torch.randn(3, 250, device=DEVICE))),
    "query 3-D head": ("query", dict(query=torch.randn(3, 4, 32, device=DEVICE))),
    "query 1-D": ("query", dict(query=torch.randn(256, device=DEVICE))),
    "query int": ("query", dict(query=torch.ones(3, 256, dtype=torch.int32, device=DEVICE))),
    "rot > head": ("cos_sin_cache", dict(cos_sin_cache=torch.randn(16, 128, device=DEVICE))),
    "odd rot": ("cos_sin_cache", dict(cos_sin_cache=torch.randn(16, 31, device=DEVICE))),
    "cache 1-D": ("cos_sin_cache", dict(cos_sin_cache=torch.randn(16, device=DEVICE))),
    "positions short": ("positions", dict(positions=torch.arange(2, device=DEVICE))),
    "positions 2-D": ("positions", dict(positions=torch.arange(3, device=DEVICE)[None])),
    "positions float": ("positions", dict(positions=torch.zeros(3, device=DEVICE))),
    "head_size 0": ("head_size", dict(head_size=0)),
}


@pytest.mark.parametrize("case", ROPE_ERRORS)
def test_rotary_embedding_errors(case: str) -> None:
    name, override = ROPE_ERRORS[case]
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        rotary_embedding(**_rope_args(**override))


@pytest.mark.skipif(DEVICE.type != "cpu", reason="bounds are checked on CPU only (no device sync)")
@pytest.mark.parametrize("bad", [-1, 16, 131072])
def test_out_of_range_positions_on_cpu(bad: int) -> None:
    with pytest.raises(ValueError, match=r"^positions\b.*16 rows"):
        rotary_embedding(**_rope_args(positions=torch.tensor([0, bad, 1])))


def test_no_tokens_is_a_no_op() -> None:
    args = _rope_args(positions=torch.zeros(0, dtype=torch.long), query=torch.randn(0, 256), key=None)
    args = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    assert rotary_embedding(**args) is None


def test_rope_forward_triton_errors() -> None:
    q, k = torch.randn(3, 4, 64, device=DEVICE), torch.randn(3, 2, 64, device=DEVICE)
    cache = cos_sin_cache(16, 32, device=DEVICE)
    positions = torch.arange(3, device=DEVICE)
    with pytest.raises(ValueError, match=r"^rope_dim\b"):
        rope_forward_triton(q, k, cos_sin_cache=cache, positions=positions, rope_dim=64)
    with pytest.raises(ValueError, match=r"^q\b"):
        rope_forward_triton(q.flatten(1), k, cos_sin_cache=cache, positions=positions)
    with pytest.raises(ValueError, match=r"^cos_sin_cache\b"):
        rope_forward_triton(q, k, positions=positions)


def _fused_args(**override) -> dict:
    head = 64
    args = dict(
        qkv=torch.randn(3, 8 * head, device=DEVICE),
        q_weight=torch.ones(head, device=DEVICE),
        k_weight=torch.ones(head, device=DEVICE),
        q_size=4 * head,
        kv_size=2 * head,
        head_size=head,
        eps=1e-6,
        cos_sin_cache=cos_sin_cache(16, 32, device=DEVICE),
        positions=torch.arange(3, device=DEVICE),
        is_neox=True,
    )
    return {**args, **override}


FUSED_ERRORS = {
    "qkv width": ("qkv", dict(qkv=torch.randn(3, 500, device=DEVICE))),
    "qkv 3-D": ("qkv", dict(qkv=torch.randn(3, 8, 64, device=DEVICE))),
    "q_size": ("q_size", dict(q_size=250)),
    "kv_size": ("kv_size", dict(kv_size=0)),
    "q_weight": ("q_weight", dict(q_weight=torch.ones(32, device=DEVICE))),
    "k_weight dtype": ("k_weight", dict(k_weight=torch.ones(64, device=DEVICE, dtype=torch.bfloat16))),
    "k_bias": ("k_bias", dict(k_bias=torch.ones(65, device=DEVICE))),
    "rot > head": ("cos_sin_cache", dict(cos_sin_cache=torch.randn(16, 66, device=DEVICE))),
    "positions": ("positions", dict(positions=torch.arange(4, device=DEVICE))),
}


@pytest.mark.parametrize("case", FUSED_ERRORS)
def test_fused_errors(case: str) -> None:
    name, override = FUSED_ERRORS[case]
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        split_qkv_rmsnorm_rope(**_fused_args(**override))


@pytest.mark.parametrize(
    ("device", "has_triton", "interpret", "has_driver", "expected"),
    [
        ("cuda", True, False, True, True),
        ("cuda", True, False, False, False),
        ("cpu", True, False, True, False),
        ("cpu", True, True, False, True),
        ("cuda", True, True, True, True),
        ("cpu", False, True, False, False),
        ("cuda", False, False, True, False),
    ],
)
def test_launch_decision(
    device: str, has_triton: bool, interpret: bool, has_driver: bool, expected: bool
) -> None:
    assert can_launch(device, has_triton=has_triton, interpret=interpret, has_driver=has_driver) is expected


def _on_cpu(args: dict) -> dict:
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def test_fallback_in_process_warns_once(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """CPU tensors without the interpreter: native math, one warning for any number of calls."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(_triton_support, "_warned", False)
    args = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in _rope_args().items()}
    want_q, want_k = rope_native(**args)
    with caplog.at_level(logging.WARNING, logger=_triton_support.__name__):
        rotary_embedding(**args)
        rotary_embedding(**args)
        split_qkv_rmsnorm_rope(
            **{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in _fused_args().items()}
        )
    twice_q, twice_k = rope_native(args["positions"], want_q, want_k, 64, args["cos_sin_cache"], True)
    assert torch.equal(args["query"], twice_q) and torch.equal(args["key"], twice_k)
    assert len([r for r in caplog.records if "native torch implementation" in r.message]) == 1


def test_fallback_in_fresh_process(tmp_path) -> None:
    """The real thing: a process with no TRITON_INTERPRET and CPU tensors, warning on stderr once."""
    script = textwrap.dedent(
        """
        import torch
        from eval_harness.kernels.fused import split_qkv_rmsnorm_rope, split_qkv_rmsnorm_rope_native
        from eval_harness.kernels.reference import cos_sin_cache, rope_native
        from eval_harness.kernels.rope import rotary_embedding

        q, k = torch.randn(3, 4 * 64), torch.randn(3, 2 * 64)
        cache, pos = cos_sin_cache(16, 32), torch.tensor([0, 5, 15])
        want_q, want_k = rope_native(pos, q, k, 64, cache, False)
        rotary_embedding(pos, q, k, 64, cache, False)
        assert torch.equal(q, want_q) and torch.equal(k, want_k)
        rotary_embedding(pos, q, k, 64, cache, False)
        qkv, w = torch.randn(3, 8 * 64), torch.ones(64)
        kw = dict(q_size=256, kv_size=128, head_size=64, eps=1e-6, cos_sin_cache=cache, positions=pos)
        got = split_qkv_rmsnorm_rope(qkv, w, w, is_neox=True, **kw)
        want = split_qkv_rmsnorm_rope_native(qkv, w, w, is_neox=True, **kw)
        assert all(torch.equal(g, x) for g, x in zip(got, want))
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert done.stderr.count("using the native torch implementation instead") == 1, done.stderr
