"""Live servers on 127.0.0.1 for the serving tests: the app ``rner serve`` builds under uvicorn in a
thread (real sockets, real HTTP parsing), and an OpenAI-compatible upstream stand-in whose answers a
test chooses: :class:`Upstream` (good, or deliberately not the JSON object the protocol promises), or a
subclass of :class:`StubUpstream` with answers of its own (test_serving_http.py's vLLM stand-in)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import uvicorn
from aiohttp import web

from reasoning_ner.config import TinyModelConfig

SMALL = TinyModelConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=512)
NAME = "reasoning-ner"


def wait_ready(proc: Any, base: str, log_path: Any, timeout_s: float = 180.0) -> None:
    """Poll ``base``/v2/health/ready until 200; fail with the server's log if it exits or times out."""
    import httpx
    import pytest

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server did not become ready in {timeout_s:.0f} s")
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port for the duration; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


class StubUpstream:
    """An OpenAI-compatible stand-in on 127.0.0.1 (``/v1/models``, ``/v1/chat/completions``,
    ``/v1/completions``), served by aiohttp in a thread while :meth:`running`: a real HTTP peer for the
    remote backend. Subclasses choose the answers (:meth:`chat`, :meth:`completions`)."""

    #: The one model ``/v1/models`` lists (the remote backend's readiness probe only wants a 2xx).
    MODEL_CARD: dict[str, Any] = {"id": "m", "object": "model"}

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def completions(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self.MODEL_CARD]})

    @contextmanager
    def running(self) -> Iterator[Self]:
        started = threading.Event()
        state: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.chat)
            app.router.add_post("/v1/completions", self.completions)
            app.router.add_get("/v1/models", self.models)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            state["stop"], state["loop"] = asyncio.Event(), loop
            started.set()
            loop.run_until_complete(state["stop"].wait())
            loop.run_until_complete(runner.cleanup())
            loop.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            state["loop"].call_soon_threadsafe(state["stop"].set)
            thread.join(10)


class Upstream(StubUpstream):
    """``mode`` picks the answer: ``ok`` (an empty NER answer), ``list`` (a JSON list), ``html`` (an HTML
    page with 200), ``no_choices`` (an object without choices)."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"

    def _answer(self, chat: bool, stream: bool = False) -> web.StreamResponse:
        if self.mode == "list":
            return web.json_response([{"choices": []}])
        if self.mode == "html":
            return web.Response(text="<html><body>502 Bad Gateway (nginx)</body></html>", content_type="text/html")
        if self.mode == "no_choices":
            return web.json_response({"object": "chat.completion"})
        answer = json.dumps({"entities": {}})
        choice = ({"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"} if chat
                  else {"index": 0, "text": answer, "finish_reason": "stop"})
        return web.json_response({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("stream") and self.mode == "list":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: [1, 2]\n\ndata: [DONE]\n\n")
            return resp
        return self._answer(chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return self._answer(chat=False)
