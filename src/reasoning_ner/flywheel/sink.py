"""The payload-logging sink: KServe's logger events -> date-partitioned JSONL of NER records.

A small HTTP service (``rner flywheel sink``; the chart runs it as a Deployment + Service that the
transformer's ``logger.url`` points at). Requests and responses arrive as separate events sharing
``ce-id``; :class:`EventJoiner` pairs them (a request whose response never comes is written without
predictions after ``pair_timeout_s``; with logger mode ``request`` no response is expected at all).
:class:`RecordWriter` appends the records to ``<root>/date=YYYY-MM-DD/part-<sink id>-<n>.jsonl`` on
any fsspec filesystem (``s3://bucket/prefix`` in a cluster), rolling files every ``flush_records``
records or ``flush_seconds``, and deletes partitions older than ``retention_days``. Sentences whose
label set contains an opt-out label (``opt_out_labels``) are never written. Bad input (a foreign or
malformed event, a body that is not UTF-8 JSON, a request without labels, an oversized body) is
answered 202 and counted by reason in ``/stats``; the sink never fails on what it is sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import uuid
from collections import Counter, OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response  # at module level: the route annotations resolve here

from .events import LoggedEvent, Skip, parse_event, records_from_pair

PARTITION = "date="


@dataclass
class SinkSettings:
    root: str
    retention_days: int = 30
    opt_out_labels: frozenset[str] = frozenset()
    pair_timeout_s: float = 30.0
    expect_responses: bool = True  # logger mode "all"; "request" logs no responses
    flush_records: int = 500
    flush_seconds: float = 60.0
    max_pending: int = 10_000


@dataclass
class SinkStats:
    events: int = 0
    records: int = 0
    opted_out: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "records": self.records, "opted_out": self.opted_out, "skipped": dict(self.skipped)}


class RecordWriter:
    """Buffered, date-partitioned JSONL parts on an fsspec filesystem."""

    def __init__(self, root: str, flush_records: int = 500, flush_seconds: float = 60.0, storage_options: dict | None = None):
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(root.rstrip("/"), **(storage_options or {}))
        self.protocol_root = root.rstrip("/")
        self.flush_records, self.flush_seconds = flush_records, flush_seconds
        self.buffer: dict[str, list[dict[str, Any]]] = {}
        self.sink_id = uuid.uuid4().hex[:12]
        self.parts = 0
        self.last_flush = time.monotonic()

    def add(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            day = (record.get("time") or "")[:10]
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                day = dt.datetime.now(dt.timezone.utc).date().isoformat()
            self.buffer.setdefault(day, []).append(record)
        if sum(map(len, self.buffer.values())) >= self.flush_records or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> list[str]:
        written = []
        for day, records in sorted(self.buffer.items()):
            if not records:
                continue
            self.parts += 1
            path = f"{self.root}/{PARTITION}{day}/part-{self.sink_id}-{self.parts:06d}.jsonl"
            self.fs.makedirs(f"{self.root}/{PARTITION}{day}", exist_ok=True)
            with self.fs.open(path, "w", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            written.append(path)
        self.buffer.clear()
        self.last_flush = time.monotonic()
        return written

    def prune(self, retention_days: int, today: dt.date | None = None) -> list[str]:
        """Delete partitions older than ``retention_days`` (the logged text is the users' data)."""
        today = today or dt.datetime.now(dt.timezone.utc).date()
        removed = []
        if not self.fs.exists(self.root):
            return removed
        for entry in self.fs.ls(self.root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith(PARTITION):
                continue
            try:
                day = dt.date.fromisoformat(name[len(PARTITION):])
            except ValueError:
                continue
            if (today - day).days > retention_days:
                self.fs.rm(entry, recursive=True)
                removed.append(name)
        return removed


class EventJoiner:
    """Pairs request and response events by ``ce-id``; emits records once a pair is complete."""

    def __init__(self, settings: SinkSettings, stats: SinkStats):
        self.settings, self.stats = settings, stats
        self.pending: OrderedDict[str, tuple[float, LoggedEvent]] = OrderedDict()
        self.orphans: OrderedDict[str, float] = OrderedDict()  # responses whose request is not here (yet)

    def add(self, event: LoggedEvent, now: float | None = None) -> list[dict[str, Any]]:
        now = time.monotonic() if now is None else now
        if event.kind == "request":
            if not self.settings.expect_responses:
                return self._records(event, None)
            self.pending[event.id] = (now, event)
            while len(self.pending) > self.settings.max_pending:
                _, (_, oldest) = self.pending.popitem(last=False)
                self.stats.skipped["pending_overflow"] += 1
            return []
        if event.id not in self.pending:
            self.stats.skipped["response_without_request"] += 1
            return []
        _, request = self.pending.pop(event.id)
        return self._records(request, event)

    def expire(self, now: float | None = None) -> list[dict[str, Any]]:
        """Requests whose response did not come within ``pair_timeout_s``: written without predictions."""
        now = time.monotonic() if now is None else now
        out: list[dict[str, Any]] = []
        while self.pending:
            event_id, (seen, request) = next(iter(self.pending.items()))
            if now - seen < self.settings.pair_timeout_s:
                break
            self.pending.popitem(last=False)
            self.stats.skipped["response_missing"] += 1
            out += self._records(request, None)
        return out

    def _records(self, request: LoggedEvent, response: LoggedEvent | None) -> list[dict[str, Any]]:
        got = records_from_pair(request, response)
        if isinstance(got, Skip):
            self.stats.skipped[got.reason] += 1
            return []
        opt_out = {label.lower() for label in self.settings.opt_out_labels}
        kept = [r for r in got if not opt_out & {label.lower() for label in r["labels"]}]
        self.stats.opted_out += len(got) - len(kept)
        return kept


class Sink:
    """The sink's state: joiner, writer, stats; ``handle`` takes one POST."""

    def __init__(self, settings: SinkSettings, storage_options: dict | None = None):
        self.settings = settings
        self.stats = SinkStats()
        self.joiner = EventJoiner(settings, self.stats)
        self.writer = RecordWriter(settings.root, settings.flush_records, settings.flush_seconds, storage_options)
        self._lock = threading.Lock()  # the HTTP face calls handle() from worker threads

    def handle(self, headers: dict[str, str], body: bytes) -> None:
        event = parse_event(headers, body)
        with self._lock:
            self.stats.events += 1
            if isinstance(event, Skip):
                self.stats.skipped[event.reason] += 1
                return
            self._write(self.joiner.add(event) + self.joiner.expire())

    def tick(self) -> None:
        """Periodic work: unpaired requests out, buffered records flushed when due."""
        with self._lock:
            self._write(self.joiner.expire())
            if self.writer.buffer and time.monotonic() - self.writer.last_flush >= self.settings.flush_seconds:
                self.writer.flush()

    def close(self) -> None:
        with self._lock:
            self._write(self.joiner.expire(now=float("inf")))
            self.writer.flush()

    def _write(self, records: list[dict[str, Any]]) -> None:
        if records:
            self.stats.records += len(records)
            self.writer.add(records)


def create_app(sink: Sink, tick_s: float = 5.0) -> Any:
    """The sink's HTTP face: POST / (CloudEvents), GET /healthz, GET /stats; flushes on shutdown."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def ticker() -> None:
            while True:
                await asyncio.sleep(tick_s)
                await asyncio.to_thread(sink.tick)

        task = asyncio.create_task(ticker())
        sink.writer.prune(sink.settings.retention_days)
        try:
            yield
        finally:
            task.cancel()
            sink.close()

    app = FastAPI(title="reasoning-ner payload sink", lifespan=lifespan)

    @app.post("/")
    async def receive(request: Request) -> Response:
        body = await request.body()
        await asyncio.to_thread(sink.handle, dict(request.headers), body)  # a flush writes to object storage
        return Response(status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return sink.stats.as_dict()

    return app
