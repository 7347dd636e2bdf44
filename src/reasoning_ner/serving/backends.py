"""Generation backends behind one interface, the service's errors and its Prometheus metrics.

* :class:`TransformersBackend`: the model in this process (CPU by default), with **dynamic
  batching**: concurrent requests wait in a queue; a batcher task takes up to ``max_batch_size``
  of them (waiting at most ``max_batch_wait_ms`` for company once the first one arrived), runs ONE
  batched ``generate`` for them in a worker thread (the event loop stays free), and routes each
  row's result back to its request's future (or its stream). Each row keeps its own token limit,
  stop strings and cancellation through a per-row stopping criterion, so requests with different
  budgets share a batch. Loading and the stop tokens come from :class:`inference.TransformersEngine`.
* :class:`RemoteBackend`: an OpenAI-compatible server (vLLM inside KServe's Hugging Face runtime on
  GPU clusters) over aiohttp. Chat requests may come back with the reasoning split off by vLLM's
  reasoning parser (``reasoning_content``, or ``reasoning`` on newer vLLM); raw-prompt continuation
  uses ``/completions``; JSON-schema constrained answers use ``response_format`` (or vLLM's
  ``structured_outputs`` / older ``guided_json``).

Both implement :meth:`Backend.generate` (one completion of a raw ChatML prompt),
:meth:`Backend.stream` (the same, as text deltas, then the result) and
:meth:`Backend.generate_chat` (a chat turn, where the remote backend can constrain the answer).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from ..prompt import IM_END, THINK_CLOSE, chatml

# ------------------------------------------------------------------------------------ metrics
# On prometheus_client's default registry, which kserve's /metrics route exposes next to its own.

HTTP_REQUESTS = Counter("rner_http_requests_total", "HTTP requests by route template and status.", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "rner_http_request_seconds", "HTTP request latency by route template.", ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PREDICT_CALLS = Counter("rner_predict_calls_total", "Requests that passed validation and reached a predict handler.", ["protocol"])
INSTANCES = Counter("rner_instances_total", "Sentences processed.", ["protocol"])
PARSE_FAILURES = Counter("rner_parse_failures_total", "Sentences whose model answer could not be parsed.")
REPAIRS = Counter("rner_answer_repairs_total", "Answers repaired (labels dropped, truncated JSON closed).", ["kind"])
UNGROUNDED = Counter("rner_ungrounded_spans_total", "Predicted spans that do not occur in the input.")
TOKENS = Counter("rner_tokens_total", "Tokens processed by the backend.", ["kind"])
REASONING_TOKENS = Histogram("rner_reasoning_tokens", "Thinking tokens per sentence (where known).",
                             buckets=(0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192))
REASONING_CAPPED = Counter("rner_reasoning_capped_total", "Sentences whose reasoning budget ran out (</think> forced).")
BATCH_SIZE = Histogram("rner_batch_size", "Sequences per batched generate call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_SECONDS = Histogram("rner_batch_generate_seconds", "Wall time of one batched generate call.",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
QUEUE_DEPTH = Gauge("rner_queue_depth", "Sequences waiting for the in-process model.")
BACKEND_ERRORS = Counter("rner_backend_errors_total", "Backend failures by kind.", ["backend", "kind"])


# ------------------------------------------------------------------------------------ errors


class ServingError(Exception):
    """An error with an HTTP status, an error type and (when a field is at fault) its name."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, param: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status


class InvalidRequest(ServingError):
    status, type = 422, "invalid_request_error"


class ModelNotFoundError(ServingError):
    status, type = 404, "not_found_error"


class Overloaded(ServingError):
    status, type = 503, "overloaded_error"


class BackendUnavailable(ServingError):
    status, type = 503, "backend_error"


class BackendTimeout(ServingError):
    status, type = 504, "timeout_error"


class PromptTooLong(InvalidRequest):
    """The prompt plus the generation would not fit the model's context."""


# ------------------------------------------------------------------------------------ interface


@dataclass
class GenRequest:
    prompt: str  # raw ChatML text; generation continues right after it
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # extra stop strings; excluded from the text like OpenAI's `stop`
    json_schema: dict[str, Any] | None = None  # constrain the whole completion (remote only)


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" (end of turn or a stop string) or "length"
    stop_reason: str | None = None  # the stop string that ended it; None = end of turn or length
    reasoning: str | None = None  # thinking text returned separately (vLLM reasoning parser)
    reasoning_tokens: int | None = None  # tokens up to and including </think>, where known


class Backend:
    """The interface. ``load`` is synchronous (model load time); the rest are coroutines."""

    kind = "base"
    supports_structured_output = False
    proxies_openai = False  # True: the OpenAI routes are forwarded verbatim (remote backend)

    def load(self) -> None:  # pragma: no cover - trivial
        pass

    async def ready(self) -> bool:
        return True

    async def generate(self, req: GenRequest) -> GenResult:
        raise NotImplementedError

    async def stream(self, req: GenRequest) -> AsyncIterator[str | GenResult]:
        """Text deltas, then one final :class:`GenResult`. Default: one delta from generate()."""
        result = await self.generate(req)
        if result.text:
            yield result.text
        yield result

    async def generate_chat(self, messages: list[dict[str, str]], max_new_tokens: int,
                            json_schema: dict[str, Any] | None = None, temperature: float = 0.0) -> GenResult:
        """One assistant turn for ``messages``. Default: ChatML of the messages through generate()."""
        return await self.generate(GenRequest(render_chatml(messages), max_new_tokens, temperature))

    async def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


def render_chatml(messages: Sequence[dict[str, str]]) -> str:
    """Qwen ChatML of the messages plus the generation prompt (the project's template, no default system
    prompt); one user message gives exactly :func:`reasoning_ner.prompt.chatml`."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return chatml(messages[0]["content"])
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + "<|im_start|>assistant\n"


# ------------------------------------------------------------------------------------ in-process


@dataclass
class _Item:
    req: GenRequest
    ids: list[int]
    future: asyncio.Future | None = None
    deltas: asyncio.Queue | None = None  # streaming: ("delta", str) / ("done", GenResult) / ("error", exc)
    loop: asyncio.AbstractEventLoop | None = None
    cancelled: bool = False
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class _LoopQueue:
    pending: collections.deque
    wakeup: asyncio.Event
    task: asyncio.Task


class _RowState:
    """Per-row bookkeeping of one batched generate call (worker thread only)."""

    def __init__(self, item: _Item, stop_ids: dict[int, str], stop_texts: tuple[str, ...]):
        self.item = item
        self.max_new = item.req.max_new_tokens
        self.stop_ids = stop_ids
        self.stop_texts = stop_texts
        self.done = False
        # streaming
        self.tokens: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""
        self.emitted = 0
        self.stream_done = False


class TransformersBackend(Backend):
    """In-process generation with dynamic batching (see the module docstring)."""

    kind = "transformers"

    def __init__(self, model_dir: str, *, max_batch_size: int = 32, max_batch_wait_ms: float = 5.0, max_queue: int = 1024,
                 device: str | None = None, dtype: str = "auto", engine: Any = None, torch_threads: int | None = None):
        self.model_dir = model_dir
        self.torch_threads = torch_threads
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_batch_wait_ms / 1000.0
        self.max_queue = max_queue
        self.device, self.dtype = device, dtype
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rner-generate")
        # One queue + batcher task per event loop (a server has one; tests open several).
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = weakref.WeakKeyDictionary()
        self._single_token: dict[str, int | None] = {}
        self.tokenizer = None
        self.batches = 0  # generate calls made (for tests and the bench)

    # -- loading ------------------------------------------------------------------------------

    def load(self) -> None:
        if self.tokenizer is not None:
            return  # already loaded (a backend may serve several apps, e.g. in tests)
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        if self.engine is None:
            from ..inference import TransformersEngine

            self.engine = TransformersEngine(self.model_dir, batch_size=self.max_batch_size, device=self.device, dtype=self.dtype)
        self.model, self.tokenizer = self.engine.model, self.engine.tokenizer
        self.base_stop_ids = set(self.engine.stop_ids)
        self.pad_id = self.tokenizer.pad_token_id
        self.think_close_id = self._token_id(THINK_CLOSE)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_context = int(limit) if limit else None

    def _token_id(self, text: str) -> int | None:
        """The id when ``text`` is exactly one token, else None."""
        if text not in self._single_token:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._single_token[text] = ids[0] if len(ids) == 1 else None
        return self._single_token[text]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_dir": self.model_dir, "max_batch_size": self.max_batch_size,
                "max_batch_wait_ms": self.max_wait_s * 1000, "device": str(getattr(self.model, "device", self.device))}

    # -- queue --------------------------------------------------------------------------------

    def _queue(self) -> _LoopQueue:
        loop = asyncio.get_running_loop()
        q = self._queues.get(loop)
        if q is None or q.task.done():
            pending: collections.deque[_Item] = collections.deque()
            wakeup = asyncio.Event()
            task = loop.create_task(self._batcher(pending, wakeup), name="rner-batcher")
            q = self._queues[loop] = _LoopQueue(pending, wakeup, task)
        return q

    def _submit(self, req: GenRequest, streaming: bool) -> _Item:
        if self.tokenizer is None:
            raise BackendUnavailable("the model is not loaded")
        q = self._queue()
        if len(q.pending) >= self.max_queue:
            BACKEND_ERRORS.labels(self.kind, "overloaded").inc()
            raise Overloaded(f"the model queue is full ({self.max_queue} sequences waiting); retry later")
        ids = self.tokenizer(req.prompt, add_special_tokens=False)["input_ids"]
        if self.max_context is not None and len(ids) + req.max_new_tokens > self.max_context:
            raise PromptTooLong(
                f"the prompt is {len(ids)} tokens; with {req.max_new_tokens} new tokens it exceeds the model's "
                f"context of {self.max_context} tokens", param="text")
        loop = asyncio.get_running_loop()
        item = _Item(req, ids, loop=loop)
        if streaming:
            item.deltas = asyncio.Queue()
        else:
            item.future = loop.create_future()
        q.pending.append(item)
        QUEUE_DEPTH.set(len(q.pending))
        q.wakeup.set()
        return item

    async def generate(self, req: GenRequest) -> GenResult:
        item = self._submit(req, streaming=False)
        assert item.future is not None
        try:
            return await item.future
        except asyncio.CancelledError:
            item.cancelled = True  # the batcher skips it, or its row stops at the next step
            raise

    async def stream(self, req: GenRequest) -> AsyncIterator[str | GenResult]:
        item = self._submit(req, streaming=True)
        assert item.deltas is not None
        sent = ""
        try:
            while True:
                kind, value = await item.deltas.get()
                if kind == "delta":
                    sent += value
                    yield value
                elif kind == "done":
                    # Text held back while it could still have become a stop string.
                    if value.text.startswith(sent) and len(value.text) > len(sent):
                        yield value.text[len(sent):]
                    yield value
                    return
                else:
                    raise value
        finally:
            item.cancelled = True

    async def _batcher(self, pending: collections.deque[_Item], wakeup: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not pending:
                wakeup.clear()
                await wakeup.wait()
                continue
            deadline = loop.time() + self.max_wait_s
            while len(pending) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)  # an Event: safe to time out
                except TimeoutError:
                    break
            batch: list[_Item] = []
            while pending and len(batch) < self.max_batch_size:
                item = pending.popleft()
                if not item.cancelled:
                    batch.append(item)
            QUEUE_DEPTH.set(len(pending))
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, batch)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
                BACKEND_ERRORS.labels(self.kind, type(exc).__name__).inc()
                error = BackendUnavailable(f"generation failed: {type(exc).__name__}: {exc}")
                for item in batch:
                    self._deliver(item, error=error)
                continue
            for item, result in zip(batch, results):
                self._deliver(item, result=result)

    @staticmethod
    def _deliver(item: _Item, result: GenResult | None = None, error: Exception | None = None) -> None:
        if item.future is not None:
            if not item.future.done():
                if error is not None:
                    item.future.set_exception(error)
                else:
                    item.future.set_result(result)
        elif item.deltas is not None:
            item.deltas.put_nowait(("error", error) if error is not None else ("done", result))

    # -- generation (worker thread) -------------------------------------------------------------

    def _run_batch(self, batch: list[_Item]) -> list[GenResult]:
        """Group the batch by sampling settings (greedy rows together) and generate each group once."""
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(batch):
            r = item.req
            key = (False, 0.0, 1.0) if r.temperature <= 0 else (True, r.temperature, r.top_p)
            groups.setdefault(key, []).append(i)
        results: list[GenResult | None] = [None] * len(batch)
        for key, idx in groups.items():
            for i, res in zip(idx, self._generate_group([batch[i] for i in idx], key)):
                results[i] = res
        return [r for r in results if r is not None]

    def _generate_group(self, items: list[_Item], key: tuple) -> list[GenResult]:
        import torch
        from transformers import StoppingCriteriaList

        do_sample, temperature, top_p = key
        rows = []
        for item in items:
            stop_ids: dict[int, str] = {}
            stop_texts: list[str] = []
            for s in item.req.stop:
                tid = self._token_id(s)
                if tid is not None:
                    stop_ids[tid] = s
                else:
                    stop_texts.append(s)
            rows.append(_RowState(item, stop_ids, tuple(stop_texts)))
        width = max(len(it.ids) for it in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        for r, item in enumerate(items):
            n = len(item.ids)
            input_ids[r, width - n:] = torch.tensor(item.ids, dtype=torch.long)
            attention[r, width - n:] = 1
        streaming = any(it.deltas is not None for it in items)
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids.to(self.model.device), attention_mask=attention.to(self.model.device),
            max_new_tokens=max(row.max_new for row in rows), eos_token_id=sorted(self.base_stop_ids),
            pad_token_id=self.pad_id, stopping_criteria=StoppingCriteriaList([_RowCriteria(self, rows, width)]),
            do_sample=do_sample,
        )
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if streaming:
            kwargs["streamer"] = _RowStreamer(self, rows)
        BATCH_SIZE.observe(len(items))
        self.batches += 1
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**kwargs)
        BATCH_SECONDS.observe(time.perf_counter() - t0)
        new_tokens = out[:, width:].tolist()
        results = [self._finish_row(row, new_tokens[r]) for r, row in enumerate(rows)]
        TOKENS.labels("prompt").inc(sum(len(it.ids) for it in items))
        TOKENS.labels("completion").inc(sum(res.completion_tokens for res in results))
        return results

    def _finish_row(self, row: _RowState, tokens: list[int]) -> GenResult:
        kept: list[int] = []
        finish, stop_reason, counted_stop = "length", None, 0
        for t in tokens[: row.max_new]:
            if t in self.base_stop_ids:
                finish, counted_stop = "stop", 1
                break
            if t in row.stop_ids:
                finish, stop_reason, counted_stop = "stop", row.stop_ids[t], 1
                break
            kept.append(t)
        text = self.tokenizer.decode(kept, skip_special_tokens=False)
        if row.stop_texts:
            hits = [(text.find(s), s) for s in row.stop_texts if s in text]
            if hits:
                pos, s = min(hits)
                text, finish, stop_reason = text[:pos], "stop", s
        reasoning_tokens = None
        if self.think_close_id is not None and self.think_close_id in kept:
            reasoning_tokens = kept.index(self.think_close_id) + 1
        elif stop_reason == THINK_CLOSE:
            reasoning_tokens = len(kept) + 1
        return GenResult(text=text, prompt_tokens=len(row.item.ids), completion_tokens=len(kept) + counted_stop,
                         finish_reason=finish, stop_reason=stop_reason, reasoning_tokens=reasoning_tokens)

    async def close(self) -> None:
        for q in list(self._queues.values()):
            if not q.task.done():
                q.task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class _RowCriteria:
    """Per-row stop: the row's own token limit, its stop tokens/strings, or its request went away."""

    def __init__(self, backend: TransformersBackend, rows: list[_RowState], width: int):
        self.backend, self.rows, self.width = backend, rows, width

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids.shape[1] - self.width
        last = input_ids[:, -1].tolist()
        done = []
        for r, row in enumerate(self.rows):
            if not row.done:
                t = last[r]
                if (generated >= row.max_new or t in self.backend.base_stop_ids or t in row.stop_ids
                        or row.item.cancelled):
                    row.done = True
                elif row.stop_texts:
                    tail = self.backend.tokenizer.decode(input_ids[r, max(self.width, input_ids.shape[1] - 16):].tolist(),
                                                         skip_special_tokens=False)
                    row.done = any(s in tail for s in row.stop_texts)
            done.append(row.done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _RowStreamer:
    """transformers streamer for a whole batch: routes each streaming row's new text to its request."""

    def __init__(self, backend: TransformersBackend, rows: list[_RowState]):
        self.backend, self.rows = backend, rows
        self.first = True
        self.holdback = {id(r): max((len(s) for s in r.stop_texts), default=1) - 1 for r in rows}

    def put(self, value) -> None:
        if self.first:  # the prompt
            self.first = False
            return
        tokens = value.reshape(-1).tolist()
        tok = self.backend.tokenizer
        for r, row in enumerate(self.rows):
            item = row.item
            if item.deltas is None or row.stream_done:
                continue
            t = tokens[r]
            if (t in self.backend.base_stop_ids or t in row.stop_ids or len(row.tokens) >= row.max_new or item.cancelled):
                row.stream_done = True
                continue
            row.tokens.append(t)
            prefix = tok.decode(row.tokens[row.prefix_offset:row.read_offset], skip_special_tokens=False)
            text = tok.decode(row.tokens[row.prefix_offset:], skip_special_tokens=False)
            if len(text) <= len(prefix) or text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 sequence: wait for the next token
            row.prefix_offset, row.read_offset = row.read_offset, len(row.tokens)
            row.text += text[len(prefix):]
            upto = len(row.text)
            if row.stop_texts:
                if any(s in row.text for s in row.stop_texts):
                    row.stream_done = True  # the final flush sends the text before the stop string
                    continue
                upto -= self.holdback[id(row)]  # could still become a stop string
            if upto <= row.emitted:
                continue
            delta, row.emitted = row.text[row.emitted:upto], upto
            assert item.loop is not None
            try:
                item.loop.call_soon_threadsafe(item.deltas.put_nowait, ("delta", delta))
            except RuntimeError:  # the request's event loop is gone
                item.cancelled = True

    def end(self) -> None:
        pass


# ------------------------------------------------------------------------------------ remote


class RemoteBackend(Backend):
    """An OpenAI-compatible server (vLLM) over aiohttp; see the module docstring."""

    kind = "remote"
    supports_structured_output = True
    proxies_openai = True

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 60.0,
                 max_concurrency: int = 256, structured_output: str = "response_format"):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.structured_output = structured_output
        self.supports_structured_output = structured_output != "none"
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.base_url, "model": self.model, "structured_output": self.structured_output}

    def _session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)  # aiohttp sessions belong to one event loop
        if session is None or session.closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=headers,
            )
            self._sessions[loop] = session
        return session

    def structured_params(self, schema: dict[str, Any] | None) -> dict[str, Any]:
        if schema is None or self.structured_output == "none":
            return {}
        if self.structured_output == "response_format":
            return {"response_format": {"type": "json_schema", "json_schema": {"name": "ner_answer", "schema": schema, "strict": True}}}
        if self.structured_output == "structured_outputs":
            return {"structured_outputs": {"json": schema}}
        return {"guided_json": schema}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        try:
            async with self._session().post(f"{self.base_url}{path}", json=body) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise self._status_error(resp.status, text)
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    BACKEND_ERRORS.labels(self.kind, "bad_json").inc()
                    raise BackendUnavailable(f"remote backend sent invalid JSON: {exc.msg}") from exc
        except (asyncio.TimeoutError, TimeoutError) as exc:
            BACKEND_ERRORS.labels(self.kind, "timeout").inc()
            raise BackendTimeout(f"remote backend did not answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            BACKEND_ERRORS.labels(self.kind, "connection").inc()
            raise BackendUnavailable(f"remote backend unreachable: {type(exc).__name__}: {exc}") from exc

    def _status_error(self, status: int, text: str) -> ServingError:
        BACKEND_ERRORS.labels(self.kind, f"http_{status}").inc()
        detail = text[:300].replace("\n", " ")
        if status == 429:
            return Overloaded(f"remote backend is rate limiting (429): {detail}")
        return BackendUnavailable(f"remote backend answered {status}: {detail}")

    @staticmethod
    def _usage(body: dict[str, Any]) -> tuple[int, int, int | None]:
        usage = body.get("usage") or {}
        details = usage.get("completion_tokens_details") or {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), details.get("reasoning_tokens")

    async def generate(self, req: GenRequest) -> GenResult:
        """``/completions`` with the raw prompt (continuations after a forced ``</think>``)."""
        body: dict[str, Any] = {
            "model": self.model, "prompt": req.prompt, "max_tokens": req.max_new_tokens,
            "temperature": req.temperature, "top_p": req.top_p, "stop": [IM_END, *req.stop],
            **self.structured_params(req.json_schema),
        }
        if req.stop:
            body["include_stop_str_in_output"] = True  # vLLM: tells a stop string apart from end of turn
        data = await self._post("/completions", body)
        try:
            choice = data["choices"][0]
            text = choice.get("text") or ""
        except (KeyError, IndexError, TypeError) as exc:
            BACKEND_ERRORS.labels(self.kind, "bad_body").inc()
            raise BackendUnavailable("remote backend answer has no choices[0].text") from exc
        stop_reason = None
        for s in req.stop:
            if text.endswith(s):
                text, stop_reason = text[: -len(s)], s
                break
        else:
            if isinstance(choice.get("stop_reason"), str) and choice["stop_reason"] in req.stop:
                stop_reason = choice["stop_reason"]
        prompt_tokens, completion_tokens, reasoning_tokens = self._usage(data)
        TOKENS.labels("prompt").inc(prompt_tokens)
        TOKENS.labels("completion").inc(completion_tokens)
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return GenResult(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, finish_reason=finish,
                         stop_reason=stop_reason, reasoning_tokens=reasoning_tokens)

    async def generate_chat(self, messages: list[dict[str, str]], max_new_tokens: int,
                            json_schema: dict[str, Any] | None = None, temperature: float = 0.0) -> GenResult:
        """``/chat/completions``; with vLLM's reasoning parser the schema constrains only the content after
        ``</think>`` and the thinking comes back as ``reasoning_content`` (``reasoning`` on newer vLLM)."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": temperature,
                **self.structured_params(json_schema)}
        data = await self._post("/chat/completions", body)
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError) as exc:
            BACKEND_ERRORS.labels(self.kind, "bad_body").inc()
            raise BackendUnavailable("remote backend answer has no choices[0].message") from exc
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        prompt_tokens, completion_tokens, reasoning_tokens = self._usage(data)
        TOKENS.labels("prompt").inc(prompt_tokens)
        TOKENS.labels("completion").inc(completion_tokens)
        return GenResult(text=message.get("content") or "", prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                         reasoning=reasoning if isinstance(reasoning, str) else None, reasoning_tokens=reasoning_tokens)

    # -- OpenAI pass-through --------------------------------------------------------------------

    async def proxy_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(path, body)

    async def proxy_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The remote SSE stream, one parsed JSON chunk at a time (``[DONE]`` ends it)."""
        import aiohttp

        try:
            async with self._session().post(f"{self.base_url}{path}", json=body) as resp:
                if resp.status >= 400:
                    raise self._status_error(resp.status, await resp.text())
                buffer = b""
                async for data in resp.content.iter_any():
                    buffer += data
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        line = line.strip()
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            return
                        try:
                            yield json.loads(payload)
                        except json.JSONDecodeError:
                            BACKEND_ERRORS.labels(self.kind, "bad_json").inc()
                            continue
        except (asyncio.TimeoutError, TimeoutError) as exc:
            BACKEND_ERRORS.labels(self.kind, "timeout").inc()
            raise BackendTimeout(f"remote backend did not answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            BACKEND_ERRORS.labels(self.kind, "connection").inc()
            raise BackendUnavailable(f"remote backend unreachable: {type(exc).__name__}: {exc}") from exc

    async def ready(self) -> bool:
        try:
            async with self._session().get(f"{self.base_url}/models", timeout=_short_timeout()) as resp:
                return resp.status < 500
        except Exception:  # noqa: BLE001 - readiness is a yes/no question
            return False

    async def close(self) -> None:
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()


def _short_timeout():
    import aiohttp

    return aiohttp.ClientTimeout(total=2.0)


def make_backend(settings: Any, model_dir: str | None) -> Backend:
    """The backend a :class:`ServeSettings` asks for."""
    if settings.backend == "remote":
        if not settings.remote_url:
            raise ValueError("backend 'remote' needs remote_url (e.g. http://ner-llm-predictor/openai/v1)")
        return RemoteBackend(
            settings.remote_url, settings.remote_model or settings.model_name,
            api_key=os.environ.get(settings.remote_api_key_env) or None, timeout_s=settings.request_timeout_s,
            max_concurrency=settings.remote_max_concurrency, structured_output=settings.remote_structured_output,
        )
    if not model_dir:
        raise ValueError("backend 'transformers' needs a model directory (--model)")
    return TransformersBackend(model_dir, max_batch_size=settings.max_batch_size, max_batch_wait_ms=settings.max_batch_wait_ms,
                               max_queue=settings.max_queue, device=settings.device, dtype=settings.dtype,
                               torch_threads=settings.torch_threads)
