"""Generation backends behind one interface, the service's errors and its Prometheus metrics.

* :class:`TransformersBackend`: the model in this process (CPU by default), with **dynamic
  batching**: concurrent requests wait in a queue; a batcher task takes up to ``max_batch_size``
  of them (waiting at most ``max_batch_wait_ms`` for company once the first one arrived), runs ONE
  batched ``generate`` for them in a worker thread (the event loop stays free), and routes each
  row's result back to its request's future (or its stream). Each row keeps its own token limit,
  stop strings (matched on its decoded text) and cancellation through a per-row stopping criterion,
  and its own sampling, grammar, thinking budget and logprobs through a per-row logits processor
  (:mod:`.constrained`), so requests with any mix of settings share a batch. Loading and the stop
  tokens come from :class:`inference.TransformersEngine`.
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
    # 400 as OIP, KServe's InvalidInput and OpenAI answer a bad request (not FastAPI's 422).
    status, type = 400, "invalid_request_error"


class ModelNotFoundError(ServingError):
    status, type = 404, "not_found_error"


class Overloaded(ServingError):
    status, type = 503, "overloaded_error"


class BackendUnavailable(ServingError):
    status, type = 503, "backend_error"


class BadGateway(ServingError):
    """The upstream answered, but not with the JSON object the protocol promises (HTML, a list, no choices)."""

    status, type = 502, "upstream_error"


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
    stop: tuple[str, ...] = ()  # stop strings, matched on the decoded text and excluded from it (OpenAI's `stop`)
    json_schema: dict[str, Any] | None = None  # constrain the whole completion (remote only)
    # In process only (serving/constrained.py): a grammar for the answer after </think>, a thinking budget
    # (</think> forced after that many tokens), the answer's reserve, seeded sampling, logprobs (top-k).
    grammar: str | None = None
    think_budget: int | None = None
    answer_reserve: int = 0
    seed: int | None = None
    logprobs: int | None = None


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" (end of turn or a stop string) or "length"
    stop_reason: str | None = None  # the stop string that ended it; None = end of turn or length
    reasoning: str | None = None  # thinking text returned separately (vLLM reasoning parser)
    reasoning_tokens: int | None = None  # tokens up to and including </think>, where known
    logprobs: list[dict[str, Any]] | None = None  # OpenAI's logprobs.content, when asked (in process)


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
    """One row of a batched generate call (worker thread only). Each new token is decoded incrementally
    (as vLLM's detokenizer does: complete characters only) and the stop strings are matched on the TEXT, so a
    stop spanning tokens, or ending inside one, is found; the text is cut where the stop begins. Streaming
    rows send their new text at once, holding back the tail that could still become a stop string."""

    def __init__(self, item: _Item, control: Any = None):
        self.item = item
        self.max_new = item.req.max_new_tokens
        self.stops = item.req.stop
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.control = control  # constrained.RowControl, when the row needs more than greedy decoding
        self.tokens: list[int] = []
        self.text = ""
        self._prefix = self._read = 0  # incremental decoding offsets into tokens
        self.done = self.eos = False
        self.finish, self.stop_reason = "length", None
        self.reasoning_tokens: int | None = None
        self.emitted = 0

    def step(self, token: int, tokenizer: Any, end_ids: set[int]) -> None:
        item = self.item
        if item.cancelled:
            self.done = True
            return
        if token in end_ids:
            self.done, self.eos, self.finish = True, True, "stop"
            return
        self.tokens.append(token)
        if self.control is not None:
            self.control.advance(token)
        prefix = tokenizer.decode(self.tokens[self._prefix:self._read], skip_special_tokens=False)
        text = tokenizer.decode(self.tokens[self._prefix:], skip_special_tokens=False)
        if len(text) > len(prefix) and not text.endswith("\ufffd"):  # else: an incomplete UTF-8 sequence
            self._prefix, self._read = self._read, len(self.tokens)
            before = len(self.text)
            self.text += text[len(prefix):]
            if self.reasoning_tokens is None and THINK_CLOSE in self.text[max(0, before - len(THINK_CLOSE) + 1):]:
                self.reasoning_tokens = len(self.tokens)
            since = max(0, before - self.hold)  # a stop string ending in the new text starts at or after this
            hits = [(i, s) for s in self.stops if (i := self.text.find(s, since)) >= 0]
            if hits:
                pos, self.stop_reason = min(hits)
                self.text, self.done, self.finish = self.text[:pos], True, "stop"
                return
        if len(self.tokens) >= self.max_new:
            self.done = True
        elif item.deltas is not None and len(self.text) - self.hold > self.emitted:
            upto = len(self.text) - self.hold  # the rest of the text comes with the result
            delta, self.emitted = self.text[self.emitted:upto], upto
            assert item.loop is not None
            try:
                item.loop.call_soon_threadsafe(item.deltas.put_nowait, ("delta", delta))
            except RuntimeError:  # the request's event loop is gone
                item.cancelled = True


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
        self._vocab: Any = None  # constrained.Vocab, built at the first row that needs one
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
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_context = int(limit) if limit else None

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

    def _control(self, req: GenRequest) -> Any:
        """The row's constrained.RowControl, when it needs more than greedy decoding."""
        if req.grammar is None and req.think_budget is None and req.temperature <= 0 and req.logprobs is None:
            return None
        from .constrained import RowControl, Vocab

        if self._vocab is None:
            self._vocab = Vocab(self.tokenizer, int(self.model.config.vocab_size), sorted(self.base_stop_ids))
        return RowControl(self._vocab, max_new=req.max_new_tokens, grammar=req.grammar, think_budget=req.think_budget,
                          answer_reserve=req.answer_reserve, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                          logprobs=req.logprobs)

    def _run_batch(self, items: list[_Item]) -> list[GenResult]:
        """ONE greedy generate call for the whole batch. Rows that sample, follow a grammar, have a thinking
        budget or want logprobs do so through their own control (a logits processor), so rows with different
        settings share the call and a seeded row draws the same tokens whatever else is in the batch."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from .constrained import Controls

        rows = [_RowState(item, self._control(item.req)) for item in items]
        width = max(len(it.ids) for it in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        for r, item in enumerate(items):
            n = len(item.ids)
            input_ids[r, width - n:] = torch.tensor(item.ids, dtype=torch.long)
            attention[r, width - n:] = 1
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids.to(self.model.device), attention_mask=attention.to(self.model.device),
            max_new_tokens=max(row.max_new for row in rows), eos_token_id=sorted(self.base_stop_ids),
            pad_token_id=self.pad_id, stopping_criteria=StoppingCriteriaList([_RowCriteria(self, rows)]),
            do_sample=False, temperature=None, top_p=None, top_k=None,
        )
        if any(row.control is not None for row in rows):
            kwargs["logits_processor"] = LogitsProcessorList([Controls(rows)])
        BATCH_SIZE.observe(len(items))
        self.batches += 1
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.model.generate(**kwargs)
        BATCH_SECONDS.observe(time.perf_counter() - t0)
        results = [self._finish_row(row) for row in rows]
        TOKENS.labels("prompt").inc(sum(len(it.ids) for it in items))
        TOKENS.labels("completion").inc(sum(res.completion_tokens for res in results))
        return results

    def _finish_row(self, row: _RowState) -> GenResult:
        # Without a stop string the whole decode (it includes an incomplete UTF-8 tail as U+FFFD).
        text = row.text if row.stop_reason is not None else self.tokenizer.decode(row.tokens, skip_special_tokens=False)
        reasoning_tokens = row.reasoning_tokens
        if reasoning_tokens is None and row.stop_reason == THINK_CLOSE:
            reasoning_tokens = len(row.tokens)
        logprobs = None
        if row.control is not None and row.control.logprobs is not None:
            logprobs = row.control.logprob_entries(len(row.tokens))
        return GenResult(text=text, prompt_tokens=len(row.item.ids), completion_tokens=len(row.tokens) + row.eos,
                         finish_reason=row.finish, stop_reason=row.stop_reason, reasoning_tokens=reasoning_tokens,
                         logprobs=logprobs)

    async def close(self) -> None:
        for q in list(self._queues.values()):
            if not q.task.done():
                q.task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class _RowCriteria:
    """Per-row stop (transformers calls it after every token): each live row takes its new token
    (:meth:`_RowState.step`: end of turn, stop strings on the text, its own limit, streaming) or stops
    because its request went away."""

    def __init__(self, backend: TransformersBackend, rows: list[_RowState]):
        self.backend, self.rows = backend, rows

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        last = input_ids[:, -1].tolist()
        for r, row in enumerate(self.rows):
            if not row.done:
                row.step(last[r], self.backend.tokenizer, self.backend.base_stop_ids)
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)


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
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise self._bad_answer(path, f"invalid JSON ({exc.msg}): {text[:80]!r}") from exc
                if not isinstance(data, dict):
                    raise self._bad_answer(path, f"a JSON {type(data).__name__}, not an object")
                return data
        except (asyncio.TimeoutError, TimeoutError) as exc:
            BACKEND_ERRORS.labels(self.kind, "timeout").inc()
            raise BackendTimeout(f"remote backend did not answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            BACKEND_ERRORS.labels(self.kind, "connection").inc()
            raise BackendUnavailable(f"remote backend unreachable: {type(exc).__name__}: {exc}") from exc

    def _bad_answer(self, path: str, what: str) -> BadGateway:
        BACKEND_ERRORS.labels(self.kind, "bad_body").inc()
        return BadGateway(f"upstream {self.base_url}{path} answered with {what}")

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
            raise self._bad_answer("/completions", "no choices[0].text") from exc
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
            raise self._bad_answer("/chat/completions", "no choices[0].message") from exc
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
                            chunk = json.loads(payload)
                        except json.JSONDecodeError:
                            BACKEND_ERRORS.labels(self.kind, "bad_json").inc()
                            continue
                        if not isinstance(chunk, dict):
                            raise self._bad_answer(path, f"a stream chunk that is a JSON {type(chunk).__name__}")
                        yield chunk
        except (asyncio.TimeoutError, TimeoutError) as exc:
            BACKEND_ERRORS.labels(self.kind, "timeout").inc()
            raise BackendTimeout(f"remote backend did not answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            BACKEND_ERRORS.labels(self.kind, "connection").inc()
            raise BackendUnavailable(f"remote backend unreachable: {type(exc).__name__}: {exc}") from exc

    async def ready(self, timeout_s: float = 2.0) -> bool:
        """One cheap probe: GET {base_url}/models answered 2xx (vLLM and KServe's runtime answer it)."""
        try:
            async with self._session().get(f"{self.base_url}/models", timeout=_short_timeout(timeout_s)) as resp:
                return 200 <= resp.status < 300
        except Exception:  # noqa: BLE001 - readiness is a yes/no question
            return False

    async def close(self) -> None:
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()


def _short_timeout(total: float = 2.0):
    import aiohttp

    return aiohttp.ClientTimeout(total=total)


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
