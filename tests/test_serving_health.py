"""Readiness that tells the truth, liveness that stays out of it.

The main test runs real processes on 127.0.0.1: ``rner serve --backend remote`` in front of a stub
OpenAI-compatible upstream (``rner cot stub-teacher``), which it kills (SIGKILL) and starts again on the
same port, with the shipped probe numbers (P = 2 s, N = 3 failures, M = 2 successes): ready -> upstream
killed -> 503 on every ready route after N failed probes, not after one -> upstream back -> ready after M
good probes. Liveness answers 200 throughout. The rest is in process: a model is ready only when loaded
and warmed up; ``probe_upstream: false`` (scale to zero) leaves readiness to the transformer; the
hysteresis itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from reasoning_ner.modeling import init_tiny
from reasoning_ner.serving import ServeSettings, build_app, build_model
from reasoning_ner.serving.health import Readiness
from tests.serving_live import NAME, SMALL, free_port

RNER = str(Path(sys.executable).parent / "rner")
P, N, M = 2.0, 3, 2  # the shipped defaults (ServeSettings), stated in docs/serving.md
assert (ServeSettings().probe_interval_s, ServeSettings().probe_failures, ServeSettings().probe_successes) == (P, N, M)
READY_ROUTES = ["/v2/health/ready", f"/v2/models/{NAME}/ready", f"/v1/models/{NAME}"]


def _start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RNER_")}
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env={**clean, **(env or {})},
                            start_new_session=True)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)  # its own session: only what this test started
        proc.wait(timeout=20)


def _wait(predicate, timeout: float, what: str, poll: float = 0.1) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(poll)
    return time.monotonic() - started


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=1.5).status_code
    except httpx.HTTPError:
        return -1


class Upstream:
    """``rner cot stub-teacher`` as a process on a fixed port: killed and started again."""

    def __init__(self, work: Path):
        self.work, self.port = work, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        (work / "gold.jsonl").write_text("")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = _start([RNER, "cot", "stub-teacher", "--gold", str(self.work / "gold.jsonl"), "--port", str(self.port)],
                           self.work / "upstream.log")
        _wait(lambda: _status(self.url + "/models") == 200, 60, "the stub upstream listening")

    def kill(self) -> None:
        assert self.proc is not None
        _stop(self.proc, signal.SIGKILL)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Upstream]]:
    work = tmp_path_factory.mktemp("readiness")
    upstream = Upstream(work)
    upstream.start()
    port = free_port()
    server = _start([RNER, "serve", "--backend", "remote", "--remote-url", upstream.url, "--port", str(port), "--name", NAME],
                    work / "serve.log", {"RNER_SERVE_REMOTE_MODEL": "stub-teacher", "RNER_SERVE_ACCESS_LOG": "false"})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: server.poll() is not None or _status(base + "/v2/health/live") == 200, 120, "rner serve live")
        assert server.poll() is None, (work / "serve.log").read_text()[-3000:]
        yield base, upstream
    finally:
        _stop(server)
        if upstream.proc is not None:
            _stop(upstream.proc)


def _predict(base: str, text: str = "Ada Lovelace met Alan Turing .") -> httpx.Response:
    return httpx.post(f"{base}/v1/models/{NAME}:predict", json={"instances": [{"text": text, "labels": ["person"]}]},
                      timeout=30)


def test_readiness_follows_the_upstream_with_hysteresis_and_liveness_does_not(remote) -> None:
    base, upstream = remote
    _wait(lambda: _status(base + "/v2/health/ready") == 200, 30, "ready once the upstream answered")
    assert [_status(base + r) for r in READY_ROUTES] == [200, 200, 200]
    assert _predict(base).status_code == 200

    upstream.kill()
    killed = time.monotonic()
    # The first failed probe changes nothing: still ready until N probes in a row failed.
    gone = _wait(lambda: _status(base + "/v2/health/ready") == 503, (N + 1) * P + 2, "503 after the upstream died")
    assert (N - 1) * P - 0.5 <= gone <= (N + 1) * P + 1.5, f"{gone:.1f} s; the stated bound is (N+1)P = {(N + 1) * P:g} s"
    for route in READY_ROUTES:
        r = httpx.get(base + route, timeout=5)
        assert r.status_code == 503, (route, r.text)
        message = r.json()["error"] if route.startswith("/v2") else r.json()["error"]["message"]
        assert upstream.url + "/models" in message and "probe" in message, message
    for route in ("/v2/health/live", "/"):  # liveness never follows the upstream
        assert _status(base + route) == 200
    r = _predict(base)
    assert r.status_code == 503 and "unreachable" in r.json()["error"]["message"]

    upstream.start()
    back = time.monotonic()
    ready = _wait(lambda: _status(base + "/v2/health/ready") == 200, (M + 1) * P + 2, "ready again")
    assert (M - 1) * P - 0.5 <= ready <= (M + 1) * P + 1.5, f"{ready:.1f} s; the stated bound is (M+1)P = {(M + 1) * P:g} s"
    assert [_status(base + r) for r in READY_ROUTES] == [200, 200, 200]
    assert _predict(base).status_code == 200
    metrics = httpx.get(base + "/metrics", timeout=5).text
    assert "rner_ready 1.0" in metrics
    print(f"\nreadiness: 503 {gone:.1f} s after the kill (bound {(N + 1) * P:g} s), ready {ready:.1f} s after the restart "
          f"(bound {(M + 1) * P:g} s); whole outage {time.monotonic() - killed:.1f} s, {time.monotonic() - back:.1f} s back")


# ------------------------------------------------------------------------------------- in process


def test_in_process_ready_means_loaded_and_warmed_up(tmp_path: Path) -> None:
    init_tiny(tmp_path / "tiny", SMALL)
    settings = ServeSettings(max_new_tokens=4, max_answer_tokens=2, prompt_style="compact", torch_threads=1)
    model = build_model(settings, str(tmp_path / "tiny"), load=False)
    with TestClient(build_app(model)) as c:
        for route in READY_ROUTES:
            r = c.get(route)
            assert r.status_code == 503 and "not loaded" in r.text, (route, r.text)
        assert c.get("/v2/health/live").status_code == 200
        model.load()
        assert model.backend.warmed_up and model.backend.batches >= 1  # one generation went through
        assert [c.get(r).status_code for r in READY_ROUTES] == [200, 200, 200]


def test_without_upstream_probing_readiness_is_the_transformers_own() -> None:
    """probe_upstream: false (the chart sets it when the predictor scales to zero): ready without an
    upstream, and nothing is probed (a probe would keep the predictor awake)."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    on = ServeSettings(backend="remote", remote_url=dead, prompt_style="compact", probe_interval_s=0.1)
    with TestClient(build_app(build_model(on))) as c:
        time.sleep(0.5)
        assert c.get("/v2/health/ready").status_code == 503
    off = on.model_copy(update={"probe_upstream": False})
    model = build_model(off)
    with TestClient(build_app(model)) as c:
        assert [c.get(r).status_code for r in READY_ROUTES] == [200, 200, 200]
        assert model.readiness._task is None


def test_the_hysteresis() -> None:
    settings = SimpleNamespace(probe_upstream=True, probe_failures=3, probe_successes=2, probe_interval_s=2.0)
    from reasoning_ner.serving.backends import RemoteBackend

    r = Readiness(RemoteBackend("http://up/v1", "m"), settings)
    r.mark_loaded()
    states = []
    for ok in [True, True, False, False, True, False, False, False, True, False, True, True]:
        r.record(ok)
        states.append(r.ready)
    assert states == [False, True, True, True, True, True, True, False, False, False, False, True]
