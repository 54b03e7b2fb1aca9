"""Shared fixtures: the benchmark data, the tiny models, and real vLLM servers (session-scoped,
so each (model, path, args) is started once per test run and always stopped)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The local copy of the benchmark data beside the repo (CI has it there); $ROPE_EVAL_DATA wins.
DATA = Path(os.environ.get("ROPE_EVAL_DATA") or REPO.parent / "shared" / "data")
EAGER = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "16"]
# A CPU vLLM server holds 2-3 GB of RAM (1 GB of it KV cache); on a 24 GB machine keep only the
# most recently used few alive and stop the rest (they restart if a later test asks again).
MAX_LIVE_SERVERS = 3


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA}; set ROPE_EVAL_DATA")
    return DATA


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All tiny models, built once (about 15 s)."""
    from eval_harness.models import build_all

    root = tmp_path_factory.mktemp("models")
    build_all(root)
    return root


ServeFn = Callable[..., "object"]


def _model_dir(models_dir: Path, name: str) -> str:
    """A built tiny model, or a committed trained toy model."""
    from eval_harness.models.specs import TOY_SPECS

    if name in TOY_SPECS:
        from eval_harness.model_source import resolve_model

        return resolve_model(f"builtin:{name}")
    return str(models_dir / name)


@pytest.fixture(scope="session")
def serve(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeFn]:
    """`serve(model, path, args=EAGER, draft=False)` -> a healthy VllmServer, reused across tests."""
    import json

    from eval_harness.engine.server import ServerSpec, VllmServer
    from eval_harness.paths import parse_path

    servers: dict[tuple, VllmServer] = {}

    def start(model: str, path: str, args: list[str] | None = None, draft: bool = False) -> VllmServer:
        args = list(EAGER if args is None else args)
        key = (model, path, tuple(args), draft)
        if key in servers:
            servers[key] = servers.pop(key)  # most recently used goes last
        else:
            while len(servers) >= MAX_LIVE_SERVERS:
                servers.pop(next(iter(servers))).stop()
            if draft:
                spec_cfg = {
                    "method": "eagle3",
                    "model": str(models_dir / f"{model}-eagle3"),
                    "num_speculative_tokens": 3,
                }
                args += ["--speculative-config", json.dumps(spec_cfg)]
            run_dir = tmp_path_factory.mktemp(f"srv-{model}-{path.replace(':', '_')}")
            spec = ServerSpec(
                model=_model_dir(models_dir, model),
                path=parse_path(path),
                log_file=run_dir / "server.log",
                counts_dir=run_dir / "counts",
                serve_args=[*args, "--served-model-name", model],
            )
            server = VllmServer(spec)
            server.start()
            servers[key] = server
        return servers[key]

    yield start
    for server in servers.values():
        server.stop()
