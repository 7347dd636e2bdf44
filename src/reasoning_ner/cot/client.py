"""Async client for any OpenAI-compatible chat-completions endpoint (vLLM, KServe, hosted APIs).

Bounded concurrency (one connection pool sized to it), a per-request timeout, and retries with
exponential backoff and full jitter on timeouts, connection errors, 429 and 5xx, honouring
``Retry-After``. Token usage and latency are recorded per call. aiohttp is used rather than
httpx: at 32 concurrent requests its per-request overhead is several times lower, which is what
keeps the synthesizer near the latency bound (see bench/cot_throughput.py).

Reasoning models return their chain inline (``<think>...</think>`` in ``content``) or in a
separate ``reasoning_content`` (or ``reasoning``) field; both are accepted.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..parsing import split_reasoning

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """The endpoint failed for good (non-retryable status, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


@dataclass
class ChatResult:
    content: str  # the answer part (think block removed)
    reasoning: str  # from reasoning_content / reasoning, or the inline think block
    raw: str  # the content as returned
    model: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    usage: dict[str, Any] = field(default_factory=dict)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    return rng.uniform(0.0, min(cap, base * (2**attempt)))


def parse_chat_response(body: dict[str, Any]) -> ChatResult:
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError) as exc:
        raise EndpointError(f"response has no choices[0].message: {str(body)[:200]}") from exc
    raw = message.get("content") or ""
    separate = message.get("reasoning_content") or message.get("reasoning") or ""
    inline, answer = split_reasoning(raw)
    usage = body.get("usage") or {}
    return ChatResult(
        content=answer.strip(),
        reasoning=(separate or inline).strip(),
        raw=raw,
        model=str(body.get("model", "")),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        usage=usage,
    )


class ChatClient:
    """``async with ChatClient(...) as c: await c.chat(messages)``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 32,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        seed: int | None = None,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self.retries = 0  # total retries, for stats

    @classmethod
    def from_env(cls, base_url: str, model: str, api_key_env: str, **kw: Any) -> ChatClient:
        """API keys come from the environment only, never from a file in the repo."""
        return cls(base_url, model, api_key=os.environ.get(api_key_env) or None, **kw)

    async def __aenter__(self) -> ChatClient:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        connector = aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            json_serialize=json.dumps,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def chat(
        self, messages: list[dict[str, str]], temperature: float = 0.6, max_tokens: int = 4096, **extra: Any
    ) -> ChatResult:
        if self._session is None:
            raise RuntimeError("use `async with ChatClient(...)` before calling chat()")
        payload = {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens, **extra}
        started = time.perf_counter()
        last_error = ""
        status: int | None = None
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            try:
                async with self._session.post(self.url, json=payload) as resp:
                    status = resp.status
                    if status == 200:
                        body = await resp.json(content_type=None)
                        result = parse_chat_response(body)
                        result.latency_s = time.perf_counter() - started
                        result.attempts = attempt + 1
                        return result
                    text = (await resp.text())[:300]
                    last_error = f"HTTP {status}: {text}"
                    if status not in RETRYABLE_STATUS:
                        raise EndpointError(last_error, status, attempt + 1)
                    wait = retry_after_seconds(resp.headers.get("Retry-After"))
            except asyncio.TimeoutError:
                last_error, status = f"timeout after {self.timeout_s}s", None
            except aiohttp.ClientError as exc:  # connection refused/reset, payload errors
                last_error, status = f"{type(exc).__name__}: {exc}", None
            except json.JSONDecodeError as exc:
                last_error = f"invalid JSON body: {exc.msg}"
            if attempt == self.max_retries:
                break
            self.retries += 1
            delay = wait if wait is not None else backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s, self._rng)
            await asyncio.sleep(min(delay, self.backoff_cap_s))
        raise EndpointError(f"{self.url}: gave up after {self.max_retries + 1} attempts ({last_error})", status, self.max_retries + 1)
