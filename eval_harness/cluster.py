"""Print the `vllm serve` command that `rope-eval run` would start for one path, for attach mode.

In attach mode (`rope-eval run CONFIG --endpoint PATH=URL`) the operator starts the servers, on any
node and with any launcher; rendering their command from the same config keeps attached arms
identical to managed ones: the config's serve args, `--served-model-name` (the name the harness
requests), the eagle3 `--speculative-config`, and the plugin's environment. Arguments after `--`
are appended, e.g. multi-node data-parallel flags:

    python -m eval_harness.cluster configs/qwen3-235b-a22b.yaml --path triton \\
        --counts-dir /mnt/cluster/counts/triton --port 8001 -- --data-parallel-start-rank 0
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from eval_harness.config import ModelEntry, RunConfig, load_config
from eval_harness.engine.server import without_args
from eval_harness.paths import ENV_COUNTS_DIR, ENV_PATH
from eval_harness.runner import model_serve_args

LOCAL_ONLY = ("--model", "--host", "--port")  # set per launch below


def serve_command(
    cfg: RunConfig,
    model: ModelEntry,
    path: str,
    counts_dir: str,
    host: str = "0.0.0.0",
    port: int = 8000,
    extra: tuple[str, ...] = (),
) -> str:
    """One shell line: the plugin's environment, then `vllm serve` with the managed-mode arguments."""
    if model.path.startswith("builtin:"):
        raise ValueError(f"model {model.name}: builtin models are built and served by `rope-eval run` itself")
    draft = model.draft.path if model.draft else None
    args = without_args(model_serve_args(cfg, model, draft), LOCAL_ONLY)
    env = f"{ENV_PATH}={shlex.quote(path)} {ENV_COUNTS_DIR}={shlex.quote(counts_dir)}"
    cmd = ["vllm", "serve", model.path, *args, "--host", host, "--port", str(port), *extra]
    return f"{env} {shlex.join(cmd)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--path", required=True, help="RoPE path this server runs (one of the config's paths)")
    ap.add_argument("--model", help="model name in the config (default: its only model)")
    ap.add_argument("--counts-dir", required=True, help="ROPE_EVAL_COUNTS_DIR: a fresh directory per launch")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8000)
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # appended to the vllm serve args
    args = ap.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    cfg = load_config(args.config)
    if args.path not in cfg.paths:
        ap.error(f"--path {args.path!r} is not one of the config's paths {cfg.paths}")
    models = [m for m in cfg.models if args.model in (None, m.name)]
    if len(models) != 1:
        ap.error(f"--model must name one of {[m.name for m in cfg.models]}")
    print(serve_command(cfg, models[0], args.path, args.counts_dir, args.host, args.port, tuple(extra)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
