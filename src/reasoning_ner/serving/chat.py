"""The OpenAI chat route's work (``POST /openai/v1/chat/completions``; the route itself is in server.py).

Every OpenAI parameter is honoured or refused with 400 naming it (:meth:`schemas.ChatCompletionRequest.refusal`;
docs/serving.md has the table per backend):

* **in process**: the messages become the project's ChatML prompt; ``n`` choices are ``n`` rows of the
  dynamic batch; ``response_format`` (json_object / json_schema) constrains the answer after the reasoning
  block with a grammar (:mod:`.constrained`); the thinking budget (``thinking_token_budget`` in the body,
  vLLM's name, or the ``X-Thinking-Token-Budget`` header; the deployment's ``max_reasoning_tokens`` caps
  both) forces ``</think>``; ``seed`` makes sampling reproducible; ``logprobs`` come from the model's
  scores. The reasoning is split off as vLLM's reasoning parser does (``reasoning_content``);
* **remote**: the body goes to the upstream verbatim (model name swapped both ways), with the refusals
  applied first and the budget header copied into the body.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from ..prompt import THINK_OPEN
from .backends import (
    Backend,
    BackendTimeout,
    GenRequest,
    GenResult,
    InvalidRequest,
    PromptTooLong,
    RemoteBackend,
    ServingError,
    render_chatml,
)
from .budget import effective_budget
from .schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChoiceLogprobs,
    CompletionTokensDetails,
    ServeSettings,
    Usage,
)

#: The per-request thinking budget as a header (the body's ``thinking_token_budget`` wins).
BUDGET_HEADER = "x-thinking-token-budget"


class ReasoningSplitter:
    """Streams text into (field, text) pieces: ``reasoning_content`` inside a leading think block,
    ``content`` after it (what vLLM's reasoning parser does)."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.mode = "start"
        self.buffer = ""
        self.saw_think = False
        self.reasoning_started = False
        self.content_started = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.buffer += text
        out: list[tuple[str, str]] = []
        while True:
            if self.mode == "start":
                head = self.buffer.lstrip()
                if head.startswith(self.OPEN):
                    self.buffer = head[len(self.OPEN):].lstrip("\n")
                    self.mode = "reasoning"
                    self.saw_think = True
                    continue
                if head and not self.OPEN.startswith(head):
                    self.mode = "content"
                    continue
                return out
            if self.mode == "reasoning":
                if not self.reasoning_started:
                    self.buffer = self.buffer.lstrip("\n")  # layout after <think>
                if self.CLOSE in self.buffer:
                    before, _, after = self.buffer.partition(self.CLOSE)
                    before = before.rstrip("\n")  # layout before </think>
                    if before:
                        out.append(("reasoning_content", before))
                    self.buffer = after
                    self.mode = "content"
                    continue
                # Hold back what could be the start of </think>, and trailing newlines (layout if </think> follows).
                keep = len(self.CLOSE) - 1
                emit = self.buffer[:-keep] if len(self.buffer) > keep else ""
                emit = emit.rstrip("\n")
                if emit:
                    self.reasoning_started = True
                    out.append(("reasoning_content", emit))
                    self.buffer = self.buffer[len(emit):]
                return out
            if self.saw_think and not self.content_started:
                self.buffer = self.buffer.lstrip("\n")  # the newline after </think> is layout, not content
            if self.buffer:
                self.content_started = True
                out.append(("content", self.buffer))
                self.buffer = ""
            return out

    def flush(self) -> list[tuple[str, str]]:
        out = []
        if self.mode == "reasoning":
            self.buffer = self.buffer.rstrip("\n") if self.reasoning_started else self.buffer.strip("\n")
        if self.buffer:
            out.append(("reasoning_content" if self.mode == "reasoning" else "content", self.buffer))
            self.buffer = ""
        return out


def split_reasoning_text(text: str) -> tuple[str | None, str]:
    splitter = ReasoningSplitter()
    pieces = splitter.feed(text) + splitter.flush()
    reasoning = "".join(t for f, t in pieces if f == "reasoning_content")
    content = "".join(t for f, t in pieces if f == "content")
    return (reasoning if splitter.saw_think else None), content


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def _error_event(exc: BaseException) -> bytes:
    """An error after the stream started: a ``data: {"error": ...}`` event (the openai client raises it)."""
    if isinstance(exc, ServingError):
        status, kind, message = exc.status, exc.type, exc.message
    elif isinstance(exc, TimeoutError):
        status, kind, message = 504, "timeout_error", "request_timeout_s exceeded while streaming"
    else:
        status, kind, message = 503, "backend_error", str(exc) or "stream ended early"
    return sse({"error": {"message": message, "type": kind, "param": None, "code": status}})


def thinking_budget(body: ChatCompletionRequest, headers: Mapping[str, str], cap: int | None) -> int | None:
    """The request's thinking budget (body, else header), capped by the deployment's."""
    value, raw = body.thinking_token_budget, headers.get(BUDGET_HEADER)
    if value is None and raw is not None:
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise InvalidRequest(f"{BUDGET_HEADER}: must be a non-negative integer, got {raw!r}", param=BUDGET_HEADER)
    return effective_budget(value, cap)


def _refuse(body: ChatCompletionRequest, in_process: bool, structured_output: bool = True) -> None:
    refused = body.refusal(in_process, structured_output)
    if refused is not None:
        raise InvalidRequest(f"{refused[0]}: {refused[1]}", param=refused[0])


# ------------------------------------------------------------------------------------ in process


def _reasoning_tokens(result: GenResult) -> int:
    if result.reasoning_tokens is not None:
        return result.reasoning_tokens
    return result.completion_tokens if result.text.lstrip().startswith(THINK_OPEN) else 0  # never closed: all reasoning


def _usage(results: list[GenResult]) -> Usage:
    completion = sum(r.completion_tokens for r in results)
    return Usage(prompt_tokens=results[0].prompt_tokens, completion_tokens=completion,
                 total_tokens=results[0].prompt_tokens + completion,
                 completion_tokens_details=CompletionTokensDetails(reasoning_tokens=sum(map(_reasoning_tokens, results))))


def _finish(result: GenResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


async def local_chat(backend: Backend, settings: ServeSettings, name: str, body: ChatCompletionRequest,
                     headers: Mapping[str, str]):
    """The chat completion (or its SSE stream) from the in-process backend."""
    from .constrained import response_format_grammar

    _refuse(body, in_process=True)
    max_tokens = min(body.max_completion_tokens or body.max_tokens or settings.max_new_tokens, settings.max_new_tokens)
    grammar = response_format_grammar(body.response_format)
    budget = thinking_budget(body, headers, settings.max_reasoning_tokens)
    base = GenRequest(
        render_chatml([{"role": m.role, "content": m.text()} for m in body.messages]), max_tokens,
        temperature=body.temperature or 0.0, top_p=body.top_p or 1.0, stop=body.stop_list(), grammar=grammar,
        think_budget=None if budget is None else min(budget, max_tokens),
        answer_reserve=min(settings.max_answer_tokens, max_tokens // 2) if grammar else 0,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
    )
    gens = [replace(base, seed=None if body.seed is None else body.seed + i) for i in range(body.n)]
    cid, created, timeout = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), settings.request_timeout_s
    if not body.stream:
        try:
            results = await asyncio.wait_for(asyncio.gather(*(backend.generate(g) for g in gens)), timeout)
        except PromptTooLong as exc:
            exc.param = "messages"
            raise
        except TimeoutError as exc:
            raise BackendTimeout(f"the request took longer than request_timeout_s={timeout:g} s") from exc
        choices = []
        for i, result in enumerate(results):
            reasoning, content = split_reasoning_text(result.text)
            message = AssistantMessage(content=None if not content and reasoning is not None else content,
                                       reasoning_content=reasoning)
            choices.append(ChatChoice(index=i, message=message, finish_reason=_finish(result),
                                      logprobs=None if result.logprobs is None else ChoiceLogprobs(content=result.logprobs)))
        return ChatCompletion(id=cid, created=created, model=name, choices=choices, usage=_usage(results))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    streams = [backend.stream(g) for g in gens]
    deadline = time.monotonic() + timeout
    firsts = []
    try:  # the first events: errors before any byte is sent still get a proper status
        for events in streams:
            firsts.append(await asyncio.wait_for(events.__anext__(), max(deadline - time.monotonic(), 0.001)))
    except BaseException as exc:
        for events in streams:
            await events.aclose()
        if isinstance(exc, PromptTooLong):
            exc.param = "messages"
        if isinstance(exc, TimeoutError):
            raise BackendTimeout(f"no token within request_timeout_s={timeout:g} s") from exc
        raise
    return StreamingResponse(_local_stream(streams, firsts, cid, created, name, include_usage, deadline),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _local_stream(streams: list[AsyncIterator[str | GenResult]], firsts: list[str | GenResult], cid: str,
                        created: int, name: str, include_usage: bool, deadline: float) -> AsyncIterator[bytes]:
    """chat.completion.chunk events of every choice as they come (one pump task per choice)."""
    def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                    "choices": [{"index": i, "delta": delta, "finish_reason": finish}]})

    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(i: int, events: AsyncIterator[str | GenResult], event: str | GenResult) -> None:
        try:
            while True:
                queue.put_nowait((i, event))
                if isinstance(event, GenResult):
                    return
                event = await events.__anext__()
        except Exception as exc:  # noqa: BLE001 - handed to the response
            queue.put_nowait((i, exc))
        finally:
            await events.aclose()

    tasks = [asyncio.ensure_future(pump(i, s, f)) for i, (s, f) in enumerate(zip(streams, firsts))]
    splitters = [ReasoningSplitter() for _ in streams]
    finals: list[GenResult] = []
    try:
        for i in range(len(streams)):
            yield chunk(i, {"role": "assistant", "content": ""})
        while len(finals) < len(streams):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            i, event = await asyncio.wait_for(queue.get(), remaining)
            if isinstance(event, Exception):
                raise event
            if isinstance(event, GenResult):
                finals.append(event)
                for field, text in splitters[i].flush():
                    yield chunk(i, {field: text})
                yield chunk(i, {}, _finish(event))
            else:
                for field, text in splitters[i].feed(event):
                    yield chunk(i, {field: text})
    except (TimeoutError, StopAsyncIteration, ServingError) as exc:
        yield _error_event(exc)
        yield b"data: [DONE]\n\n"
        return
    finally:
        for task in tasks:
            task.cancel()
    if include_usage:
        yield sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": name, "choices": [],
                   "usage": _usage(finals).model_dump()})
    yield b"data: [DONE]\n\n"


# ------------------------------------------------------------------------------------ remote


async def proxy_chat(backend: RemoteBackend, settings: ServeSettings, name: str, raw: dict[str, Any],
                     body: ChatCompletionRequest, headers: Mapping[str, str]):
    """Forward the chat request verbatim to the remote server (model name swapped both ways); refusals first,
    the thinking budget (header or deployment cap) as vLLM's ``thinking_token_budget``."""
    _refuse(body, in_process=False, structured_output=backend.supports_structured_output)
    raw = dict(raw)
    raw["model"] = backend.model
    budget = thinking_budget(body, headers, settings.max_reasoning_tokens)
    if budget is not None:
        raw["thinking_token_budget"] = budget
    if not body.stream:
        data = await backend.proxy_json("/chat/completions", raw)
        data["model"] = name
        return JSONResponse(data)
    chunks = backend.proxy_stream("/chat/completions", raw)
    try:  # errors before the first byte keep their HTTP status
        first: dict[str, Any] | None = await chunks.__anext__()
    except StopAsyncIteration:
        first = None

    async def relay() -> AsyncIterator[bytes]:
        try:
            item = first
            while item is not None:
                item["model"] = name
                yield sse(item)
                try:
                    item = await chunks.__anext__()
                except StopAsyncIteration:
                    item = None
        except ServingError as exc:
            yield _error_event(exc)
        finally:
            await chunks.aclose()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
