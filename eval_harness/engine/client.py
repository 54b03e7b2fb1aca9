"""Async client for vLLM's OpenAI endpoints: one persistent connection pool, bounded
concurrency, retries with backoff, and the vLLM extensions the diffs need (token ids,
per-step top-k logprobs, teacher-forced `prompt_logprobs`).

aiohttp rather than httpx: httpcore's pool scans every connection on each request start and
close, so at concurrency 64 the client saturated a core and reached 6% of the achievable
throughput (benchmarks/client-throughput-2026-11-22.md); aiohttp holds ~95% there."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from tqdm.auto import tqdm

from eval_harness.errors import EndpointError


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    logprobs: int | None = None  # per generated step, top-k
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """One generation: chat messages XOR a completion prompt (text or token ids)."""

    key: str  # stable id, used for resume and pairing across paths
    sampling: Sampling
    messages: list[dict] | None = None
    prompt: str | list[int] | None = None
    prompt_logprobs: int | None = None
    # keep only the last N prompt tokens (vLLM extension): probes of growing length stay in bounds
    truncate_prompt_tokens: int | None = None


@dataclass
class Result:
    key: str
    text: str
    token_ids: list[int]
    finish_reason: str | None
    reasoning_content: str | None = None
    prompt_token_ids: list[int] | None = None
    # per generated step: {token_id: logprob} of the top-k (plus the sampled token)
    top_logprobs: list[dict[int, float]] | None = None
    # per prompt position (first is None): {token_id: logprob}, incl. the actual token
    prompt_logprobs: list[dict[int, float] | None] | None = None


def _body(model: str, req: Request) -> dict[str, Any]:
    s = req.sampling
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "return_token_ids": True,
        "skip_special_tokens": True,
    }
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if req.prompt_logprobs is not None:
        body["prompt_logprobs"] = req.prompt_logprobs
    if req.truncate_prompt_tokens is not None:
        body["truncate_prompt_tokens"] = req.truncate_prompt_tokens
    if req.messages is not None:
        body["messages"] = req.messages
        if s.logprobs:
            body.update(logprobs=True, top_logprobs=s.logprobs, return_tokens_as_token_ids=True)
    else:
        body["prompt"] = req.prompt
        if s.logprobs:
            body.update(logprobs=s.logprobs, return_tokens_as_token_ids=True)
    return body


def _token_id(text: str) -> int:
    return int(text.removeprefix("token_id:"))


def _parse_top(choice: dict) -> list[dict[int, float]] | None:
    lp = choice.get("logprobs")
    if not lp:
        return None
    if "content" in lp:  # chat format
        return [{_token_id(t["token"]): t["logprob"] for t in step["top_logprobs"]} for step in lp["content"]]
    return [{_token_id(k): v for k, v in (step or {}).items()} for step in lp["top_logprobs"]]


def _parse_prompt_logprobs(raw: list | None) -> list[dict[int, float] | None] | None:
    if raw is None:
        return None
    return [None if pos is None else {int(k): v["logprob"] for k, v in pos.items()} for pos in raw]


def parse_result(key: str, data: dict) -> Result:
    choice = data["choices"][0]
    msg = choice.get("message")
    text = msg.get("content") or "" if msg else choice.get("text", "")
    reasoning = (msg.get("reasoning_content") or msg.get("reasoning")) if msg else None
    prompt_lp = choice.get("prompt_logprobs", data.get("prompt_logprobs"))
    return Result(
        key=key,
        text=text,
        token_ids=choice.get("token_ids") or [],
        finish_reason=choice.get("finish_reason"),
        reasoning_content=reasoning,
        prompt_token_ids=choice.get("prompt_token_ids") or data.get("prompt_token_ids"),
        top_logprobs=_parse_top(choice),
        prompt_logprobs=_parse_prompt_logprobs(prompt_lp),
    )


class Client:
    """Talks to one endpoint. Use as `async with Client(...) as c:`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        concurrency: int = 8,
        timeout: float = 600.0,
        retries: int = 4,
        alive: Callable[[], None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.retries = retries
        self.alive = alive  # raises if a managed server died: no point retrying a corpse
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use: a session binds to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def generate(self, req: Request) -> Result:
        route = "/v1/chat/completions" if req.messages is not None else "/v1/completions"
        body = _body(self.model, req)
        for attempt in range(self.retries + 1):
            try:
                async with self._http().post(self.base_url + route, json=body) as resp:
                    if resp.status < 400:
                        return parse_result(req.key, await resp.json(content_type=None))
                    text = await resp.text()
                if resp.status < 500:
                    raise EndpointError(f"{route} rejected request {req.key}: {resp.status} {text[:500]}")
                reason = f"HTTP {resp.status}: {text[:200]}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self.alive is not None:
                self.alive()
            if attempt < self.retries:
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random()))
        raise EndpointError(f"{self.base_url}{route} failed {self.retries + 1} times for {req.key}: {reason}")

    async def run(
        self,
        requests: Sequence[Request],
        on_result: Callable[[Result], Awaitable[None] | None],
        desc: str = "requests",
        progress: bool = True,
    ) -> None:
        """Send all requests with bounded concurrency; `on_result` sees each as it completes."""
        sem = asyncio.Semaphore(self.concurrency)
        bar = tqdm(
            total=len(requests), desc=desc, unit="req", dynamic_ncols=True, leave=False, disable=not progress
        )

        async def one(req: Request) -> None:
            async with sem:
                res = await self.generate(req)
            out = on_result(res)
            if asyncio.iscoroutine(out):
                await out
            bar.update()

        try:
            tasks = [asyncio.create_task(one(r)) for r in requests]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            bar.close()
