"""Readiness that follows the backend; liveness that does not.

* In process, the model is ready once its weights are loaded AND one warm-up generation has gone
  through the real path (tokenizer, batcher, ``generate``, decoding): the first real request then
  does not pay for lazy initialisation, and a model that loads but cannot generate never reports
  ready.
* Remote, a background task probes the upstream (``GET {remote_url}/models``, which vLLM and
  KServe's Hugging Face runtime answer cheaply) every ``probe_interval_s`` seconds, with hysteresis:
  the server turns not ready (503 on every ready route) after ``probe_failures`` failed probes in a
  row and ready again after ``probe_successes`` passed probes in a row. It starts not ready, so a
  pod enters rotation only once its predictor answered. One flapping probe changes nothing.
* ``probe_upstream: false`` (set by the chart when the predictor scales to zero): no probing, since a
  probe every few seconds would keep the predictor awake forever; readiness is then the
  transformer's own, and a request arriving while the predictor is cold waits for Knative's activator.

Liveness (``/``, ``/v2/health/live``) is kserve's and never looks at the backend: a dead upstream
must take the pod out of rotation, not restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Gauge

from ..prompt import chatml
from .backends import GenRequest, RemoteBackend

log = logging.getLogger(__name__)

READY = Gauge("rner_ready", "1 when the server reports ready (the backend answered), else 0.")
UPSTREAM_PROBE_FAILURES = Gauge("rner_upstream_probe_failures", "Failed upstream probes in a row (remote backend).")


def warm_up(backend: Any, timeout_s: float = 300.0) -> None:
    """One 1-token generation through the backend's real path, on a private event loop in a worker thread
    (load() runs before the server's loop exists, and may be called from inside a running loop in tests)."""
    if getattr(backend, "warmed_up", False):
        return  # a backend shared by several apps (tests) warms up once

    async def once() -> None:
        await backend.generate(GenRequest(chatml("warm-up"), 1))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rner-warm-up") as pool:
        pool.submit(asyncio.run, once()).result(timeout=timeout_s)
    backend.warmed_up = True


class Readiness:
    """The ready state of one served model; see the module docstring."""

    def __init__(self, backend: Any, settings: Any):
        self.backend = backend
        self.settings = settings
        self.probing = isinstance(backend, RemoteBackend) and settings.probe_upstream
        self.loaded = False  # set by NERModel.load once loaded and warmed up
        self.upstream_ok = not self.probing  # remote + probing: not ready until the upstream answered
        self.reason = "the model is not loaded yet"
        self.failures = self.successes = 0
        self.last_change = time.monotonic()
        self._task: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self.loaded and self.upstream_ok

    def why_not(self) -> str:
        return "ready" if self.ready else self.reason

    def mark_loaded(self) -> None:
        self.loaded = True
        self.reason = f"waiting for {self.settings.probe_successes} good probes of {self._url()}" if self.probing else "ready"
        READY.set(int(self.ready))

    def _url(self) -> str:
        return f"{getattr(self.backend, 'base_url', '?')}/models"

    def record(self, ok: bool) -> None:
        """One probe's outcome through the hysteresis."""
        s = self.settings
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if not self.upstream_ok and self.successes >= s.probe_successes:
                self.upstream_ok, self.last_change = True, time.monotonic()
                self.reason = "ready"
                log.warning("upstream %s answered %d probes in a row: ready", self._url(), self.successes)
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.upstream_ok and self.failures >= s.probe_failures:
                self.upstream_ok, self.last_change = False, time.monotonic()
                log.warning("upstream %s failed %d probes in a row: not ready", self._url(), self.failures)
            if not self.upstream_ok:
                self.reason = f"upstream {self._url()} failed the last {self.failures} probe(s)"
        UPSTREAM_PROBE_FAILURES.set(self.failures)
        READY.set(int(self.ready))

    async def _probe_loop(self) -> None:
        period = self.settings.probe_interval_s
        while True:
            started = time.monotonic()
            self.record(await self.backend.ready(timeout_s=period))
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    def start(self) -> None:
        """Start probing on the running loop (the app's lifespan); nothing to do in process."""
        if self.probing and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._probe_loop(), name="rner-upstream-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def install_lifespan(app: Any, readiness: Readiness) -> None:
    """Wrap the app's lifespan so that probing runs exactly while the server runs."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any):
        readiness.start()
        try:
            async with inner(a) as state:
                yield state
        finally:
            await readiness.stop()

    app.router.lifespan_context = lifespan
