"""A small OpenAI-compatible completions server for loopback client benchmarks.

Every `/v1/completions` request waits a fixed emulated engine latency and returns a valid
completions response (`choices[i].text`, `token_ids`, `finish_reason`, `usage`). The server
records when each request arrived and finished and which TCP connection carried it, so a
benchmark driver can read time-to-first-request, the request-phase wall time and whether the
client reused its connections (`GET /stats`, `POST /reset`).

Run: `python benchmarks/stub_server.py --port 0 --latency-ms 50`; the first stdout line is
`PORT <n>` once the socket listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

REPLY_WORDS = ["She", "makes", "9", "*", "2", "=", "18", "dollars", ".", "####", "18"]


@dataclass
class Recorder:
    """Arrival/finish timestamps (wall clock, `time.time()`) and connections of completions requests."""

    arrivals: list[float] = field(default_factory=list)
    finishes: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)  # arrival -> response ready, per request
    peers: set[str] = field(default_factory=set)
    other_paths: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    cpu_at_reset: float = field(default_factory=time.process_time)

    def reset(self) -> None:
        self.arrivals.clear()
        self.finishes.clear()
        self.service_s.clear()
        self.peers.clear()
        self.other_paths.clear()
        self.max_in_flight = self.in_flight
        self.cpu_at_reset = time.process_time()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": len(self.arrivals),
            "completed": len(self.finishes),
            "first_arrival": min(self.arrivals, default=None),
            "last_arrival": max(self.arrivals, default=None),
            "last_finish": max(self.finishes, default=None),
            "mean_service_s": statistics.fmean(self.service_s) if self.service_s else None,
            "connections": len(self.peers),
            "max_in_flight": self.max_in_flight,
            "other_paths": dict(self.other_paths),
            "server_cpu_s": time.process_time() - self.cpu_at_reset,
        }


def _prompts(body: dict[str, Any]) -> list[Any]:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        return prompt  # a batch of prompts (strings or token-id lists)
    return [prompt]


def _choice(index: int, prompt: Any, max_tokens: int) -> dict[str, Any]:
    words = REPLY_WORDS[: max(1, max_tokens)]
    n_prompt = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
    return {
        "index": index,
        "text": " " + " ".join(words),
        "token_ids": [1000 + i for i in range(len(words))],
        "logprobs": None,
        "finish_reason": "length" if max_tokens < len(REPLY_WORDS) else "stop",
        "stop_reason": None,
        "prompt_token_ids": None,
        "_prompt_words": n_prompt,
    }


def completion_response(body: dict[str, Any]) -> dict[str, Any]:
    max_tokens = int(body.get("max_tokens") or 16)
    choices = [_choice(i, p, max_tokens) for i, p in enumerate(_prompts(body))]
    prompt_tokens = sum(c.pop("_prompt_words") for c in choices)
    completion_tokens = sum(len(c["token_ids"]) for c in choices)
    return {
        "id": f"cmpl-stub-{time.monotonic_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _peer(request: web.Request) -> str:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport else None
    return f"{peer[0]}:{peer[1]}" if peer else f"transport-{id(transport)}"


def make_app(latency_s: float, model: str) -> web.Application:
    rec = Recorder()

    async def completions(request: web.Request) -> web.Response:
        arrived = time.time()
        rec.arrivals.append(arrived)
        rec.peers.add(_peer(request))
        rec.in_flight += 1
        rec.max_in_flight = max(rec.max_in_flight, rec.in_flight)
        try:
            body = await request.json()
            await asyncio.sleep(latency_s)
            payload = json.dumps(completion_response(body))
        finally:
            rec.in_flight -= 1
        finished = time.time()
        rec.finishes.append(finished)
        rec.service_s.append(finished - arrived)
        return web.Response(text=payload, content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        rec.other_paths[request.path] = rec.other_paths.get(request.path, 0) + 1
        data = {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "stub"}]}
        return web.json_response(data)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(rec.stats())

    async def reset(request: web.Request) -> web.Response:
        rec.reset()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.post("/v1/completions", completions),
            web.get("/v1/models", models),
            web.get("/health", health),
            web.get("/stats", stats),
            web.post("/reset", reset),
        ]
    )
    return app


async def serve(host: str, port: int, latency_s: float, model: str) -> None:
    runner = web.AppRunner(make_app(latency_s, model), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop keeps the stub's own CPU cost low, leaving the shared cores to the client under test."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="emulated engine latency per request")
    ap.add_argument("--model", default="stub")
    args = ap.parse_args()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args.host, args.port, args.latency_ms / 1000.0, args.model))


if __name__ == "__main__":
    main()
