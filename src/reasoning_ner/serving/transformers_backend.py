"""In-process generation with **dynamic batching** (:class:`TransformersBackend`; CPU by default).

Concurrent requests wait in a queue; a batcher task takes up to ``max_batch_size`` of them (waiting at
most ``max_batch_wait_ms`` for company once the first one arrived), runs ONE batched ``generate`` for
them in a worker thread (the event loop stays free), and routes each row's result back to its
request's future (or its stream). Each row keeps its own token limit, stop strings (matched on its
decoded text) and cancellation through a per-row stopping criterion, and its own sampling, grammar,
thinking budget and logprobs through a per-row logits processor (:mod:`.constrained`), so requests
with any mix of settings share a batch. Loading and the stop tokens come from
:class:`inference.TransformersEngine`.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..prompt import THINK_CLOSE
from .backend_interface import Backend, GenRequest, GenResult
from .errors import BackendUnavailable, Overloaded, PromptTooLong
from .prometheus import BACKEND_ERRORS, BATCH_SECONDS, BATCH_SIZE, QUEUE_DEPTH, TOKENS


@dataclass
class _Item:
    """One request in the queue: its prompt's token ids and where its answer goes."""

    req: GenRequest
    ids: list[int]
    future: asyncio.Future | None = None
    deltas: asyncio.Queue | None = None  # streaming: ("delta", str) / ("done", GenResult) / ("error", exc)
    loop: asyncio.AbstractEventLoop | None = None
    cancelled: bool = False
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class _LoopQueue:
    """The queue and batcher task of one event loop (asyncio objects must not cross loops)."""

    pending: collections.deque
    wakeup: asyncio.Event
    task: asyncio.Task


#: Tokens of context before the newest one when a row's text is decoded incrementally (vLLM's detokenizer keeps 5).
DECODE_CONTEXT = 5


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
            # The window keeps DECODE_CONTEXT tokens before the read offset: a decoder that rewrites across
            # tokens (the tiny tokenizer's "answers" mode drops the space after '", "') needs to see them.
            self._prefix, self._read = max(0, min(self._read, len(self.tokens) - DECODE_CONTEXT)), len(self.tokens)
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
