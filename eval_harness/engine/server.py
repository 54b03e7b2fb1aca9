"""Start a vLLM OpenAI server for one RoPE path, wait until it is healthy, and always stop it.

The server runs in its own process group (vLLM spawns engine-core and worker processes), so
stopping kills the whole group: no orphan survives an error, Ctrl-C or a dead start-up.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from eval_harness.errors import ServerError
from eval_harness.paths import ENV_COUNTS_DIR, ENV_INSTANCE, ENV_PATH, PathSpec

LOG_TAIL_LINES = 40
ROOT_CAUSE_LINES = 8
# "ValueError: ...", "AssertionError: Error in memory profiling...", "RuntimeError: ..."
ERROR_LINE = re.compile(r"\b\w*(Error|Exception)\b: ")


@dataclass
class ServerSpec:
    model: str
    path: PathSpec
    log_file: Path
    counts_dir: Path  # where the plugin in every vLLM process writes its call counts
    serve_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 900.0
    cpu: bool = True  # CPU engine: Triton only through its interpreter
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # this server start, in count files


def serve_arg(args: list[str], flag: str) -> str | None:
    """The value of `--flag V` or `--flag=V` in a vLLM argument list (last one wins, as in argparse).
    The one place the harness reads vLLM's command line."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def parallel_sizes(args: list[str]) -> tuple[int, int, int]:
    """(tensor, pipeline, data) parallel sizes a vLLM command line asks for: one worker per combination."""

    def size(*flags: str) -> int:
        values = [v for f in flags if (v := serve_arg(args, f)) is not None]
        return int(values[-1]) if values else 1

    return (
        size("--tensor-parallel-size", "-tp"),
        size("--pipeline-parallel-size", "-pp"),
        size("--data-parallel-size", "-dp"),
    )


def without_args(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """`args` minus every `--flag V` / `--flag=V` of `flags`."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif not a.startswith(tuple(f + "=" for f in flags)):
            out.append(a)
    return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def server_env(spec: ServerSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            ENV_PATH: spec.path.name,
            ENV_COUNTS_DIR: str(spec.counts_dir.resolve()),  # the server's cwd is elsewhere
            ENV_INSTANCE: spec.instance,
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
        }
    )
    if spec.cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if spec.path.kind in ("triton", "custom", "fused"):
            env["TRITON_INTERPRET"] = "1"  # the only way Triton runs without a GPU
    env.update(spec.env)
    return env


def _port_from_args(args: list[str]) -> int | None:
    port = serve_arg(args, "--port")
    return int(port) if port is not None else None


def build_command(spec: ServerSpec, port: int) -> list[str]:
    # `python -m` rather than `vllm serve`: the vllm-cpu distribution has no `vllm` dist-info,
    # which the `vllm serve` entry point looks up.
    args = [a for a in spec.serve_args]
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        spec.model,
        "--host",
        "127.0.0.1",
        "--disable-uvicorn-access-log",
    ]
    if _port_from_args(args) is None:
        cmd += ["--port", str(port)]
    return cmd + args


class VllmServer:
    """Context manager around one server process group."""

    def __init__(self, spec: ServerSpec):
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self.port = _port_from_args(spec.serve_args) or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # start() runs in a worker thread while an interrupt may call stop() from another: the lock and
        # the flag make sure a server stopped mid-start never outlives the harness
        self._lock = threading.Lock()
        self._stopped = False

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        model = self.spec.model
        if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
            raise ServerError(f"model directory {model!r} does not exist")
        if port_in_use(self.port):
            raise ServerError(f"port {self.port} is already in use on 127.0.0.1; free it or drop --port")
        self.spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.spec.counts_dir.mkdir(parents=True, exist_ok=True)
        with self._lock, self.spec.log_file.open("ab") as log:
            if self._stopped:
                raise ServerError(f"server for path {self.spec.path.name} was stopped before it started")
            # cwd is the log's directory: the repo root on sys.path would expose `kernels/` as a top-level
            # module, which transformers mistakes for Hugging Face's kernel hub.
            self.proc = subprocess.Popen(
                build_command(self.spec, self.port),
                env=server_env(self.spec),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.spec.log_file.parent,
                start_new_session=True,
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout
        while time.monotonic() < deadline:
            if self._stopped:
                raise ServerError(f"server for path {self.spec.path.name} was stopped during start-up")
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise ServerError(
            f"server for path {self.spec.path.name} not healthy after "
            f"{self.spec.startup_timeout:.0f}s\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is not None:
            raise ServerError(
                f"server for path {self.spec.path.name} exited with code "
                f"{proc.returncode}; last log lines:\n{self.log_tail()}"
            )

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """The root cause (the log's exception lines) and then its last lines: vLLM's engine core
        dies first and the API server's traceback that follows it hides the reason."""
        try:
            with self.spec.log_file.open(errors="replace") as f:
                lines = list(f)
        except OSError:
            return "(no server log)"
        causes = [ln for ln in lines if ERROR_LINE.search(ln)][-ROOT_CAUSE_LINES:]
        head = ["root cause lines:\n", *causes, "last lines:\n"] if causes else []
        return "".join(head + lines[-n:])

    def stop(self, grace: float = 20.0) -> None:
        with self._lock:
            self._stopped = True
            proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers: workers that ignored SIGTERM
        proc.wait()
        _wait_group_gone(proc.pid)


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Until every process of the group is reaped: killed children of a dead parent linger as
    zombies until init collects them, and a caller may start the next server on their heels."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
