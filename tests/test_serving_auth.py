"""API-key authentication (serving/auth.py) against a live server on 127.0.0.1.

The server (``python -m reasoning_ner.serving.server``, what ``rner serve`` runs) reads its keys from
a directory laid out like a Kubernetes Secret volume (``api-keys -> ..data/api-keys``, ``..data ->
..<timestamp>``), so rotation is tested the way the kubelet performs it (an atomic symlink swap), as
well as by editing the file in place. The routes are enumerated from the app itself: a route added
later without authentication fails :func:`test_every_route_but_health_and_metrics_needs_a_key`.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.serving_live import wait_ready

from reasoning_ner.config import TinyModelConfig
from reasoning_ner.modeling import init_tiny
from reasoning_ner.serving import ServeSettings, build_app, build_model
from reasoning_ner.serving import auth
from reasoning_ner.serving.auth import OPEN_PATHS, APIKeys, AuthConfigError, bearer_token
from reasoning_ner.serving.schemas import ErrorResponse

SMALL = TinyModelConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=512)
NAME = "reasoning-ner"
TEXT = "Ada Lovelace met Alan Turing in London."
KEY_A = "ka-" + "0123456789abcdef" * 2
KEY_B = "kb-" + "fedcba9876543210" * 2
KEY_C = "kc-" + "00112233445566778899" * 2
WRONG = "kw-" + "deadbeefdeadbeef" * 2
SETTINGS = ["max_new_tokens=8", "max_answer_tokens=4", "torch_threads=1", "prompt_style=compact"]
PREDICT_BODY = {"instances": [{"text": TEXT, "labels": ["person"]}]}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ a Secret volume


class SecretVolume:
    """A directory as the kubelet writes a Secret volume: ``<key> -> ..data/<key>``, ``..data -> ..<ts>``;
    :meth:`write` swaps ``..data`` atomically, as the kubelet's AtomicWriter does on a Secret update."""

    def __init__(self, root: Path, key: str = "api-keys"):
        self.root, self.key, self.generation = root, key, 0
        root.mkdir(parents=True, exist_ok=True)

    @property
    def file(self) -> Path:
        return self.root / self.key

    def write(self, text: str) -> None:
        self.generation += 1
        version = self.root / f"..2026_01_01_00_00_{self.generation:02d}.000000000"
        version.mkdir()
        (version / self.key).write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        os.replace(tmp, self.root / "..data")
        if not self.file.is_symlink():
            self.file.symlink_to(f"..data/{self.key}")
        if old is not None:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()


# ------------------------------------------------------------------------------------ the live server


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("auth") / "tiny"
    init_tiny(out, SMALL)
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("auth-live")
    volume = SecretVolume(root / "secret")
    volume.write(f"# two keys valid at once (rotation)\n{KEY_A}\n\n{KEY_B}\n")
    port = free_port()
    log_path = root / "server.log"
    log = open(log_path, "w")
    # access log on: the key must not reach it either
    cmd = [sys.executable, "-m", "reasoning_ner.serving.server", "--model", str(tiny_dir), "--port", str(port)]
    for item in SETTINGS:
        cmd += ["--set", item]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RNER_SERVE_API_KEYS_FILE": str(volume.file)}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, log_path)
        yield {"base": base, "pid": proc.pid, "volume": volume, "log": log_path, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def app_routes(tiny_dir: Path) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app, kserve's lazily included routers too."""
    settings = ServeSettings.from_sources({}, env={}, **dict(s.split("=") for s in SETTINGS))
    app = build_app(build_model(settings, str(tiny_dir), load=False))
    out: list[tuple[str, str]] = []

    def walk(router: Any, prefix: str) -> None:
        for route in router.routes:
            original = getattr(route, "original_router", None)
            if original is not None:
                walk(original, prefix + (getattr(getattr(route, "include_context", None), "prefix", "") or ""))
                continue
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                if method != "HEAD":
                    out.append((method, prefix + route.path))

    walk(app.router, "")
    return out


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", NAME, template)


def good_request(c: httpx.Client, key: str = KEY_A) -> httpx.Response:
    return c.post(f"/v1/models/{NAME}:predict", json=PREDICT_BODY, headers=bearer(key))


def assert_refused(r: httpx.Response, path: str, invalid: bool, sent: str | None = None) -> None:
    assert r.status_code == 401, (path, r.status_code, r.text)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer realm="{NAME}"'), challenge
    assert ('error="invalid_token"' in challenge) is invalid, challenge
    body = r.json()
    if path == "/v2" or path.startswith("/v2/"):
        assert isinstance(body["error"], str) and body["error"].startswith("authorization: "), body  # OIP
    else:
        ErrorResponse.model_validate(body)  # the service's (OpenAI's) error object
        assert body["error"]["code"] == 401 and body["error"]["param"] == "authorization", body
    if sent:
        assert sent not in r.text and sent not in challenge


# ------------------------------------------------------------------------------------ routes


def test_every_route_but_health_and_metrics_needs_a_key(live, tiny_dir: Path) -> None:
    routes = app_routes(tiny_dir)
    protected = [(m, p) for m, p in routes if p not in OPEN_PATHS]
    # the enumeration is real: every model route of the service is in it
    for expected in [("POST", "/v1/models/{model_name}:predict"), ("GET", "/v1/models/{model_name}"),
                     ("POST", "/v2/models/{model_name}/infer"), ("GET", "/v2/models/{model_name}"),
                     ("GET", "/v2/models/{model_name}/ready"), ("GET", "/openai/v1/models"),
                     ("POST", "/openai/v1/chat/completions"), ("GET", "/openapi.json")]:
        assert expected in protected, (expected, routes)
    assert {p for _, p in routes} >= OPEN_PATHS
    with httpx.Client(base_url=live["base"], timeout=60) as c:
        for method, template in protected + [("GET", "/no/such/route"), ("POST", "/v1/models/other:predict")]:
            path = concrete(template)
            body = PREDICT_BODY if method == "POST" else None
            assert_refused(c.request(method, path, json=body), path, invalid=False)
            assert_refused(c.request(method, path, json=body, headers=bearer(WRONG)), path, invalid=True, sent=WRONG)
            assert_refused(c.request(method, path, json=body, headers={"Authorization": f"Basic {KEY_A}"}), path, invalid=False)
            assert_refused(c.request(method, path, json=body, headers={"Authorization": KEY_A}), path, invalid=False)
            # the server keeps serving: a good request right after the refused ones succeeds
            r = good_request(c)
            assert r.status_code == 200 and r.json()["predictions"][0]["entities"] == [], r.text


def test_each_of_two_keys_opens_every_model_route(live) -> None:
    infer = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]},
                        {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["person"]']}]}
    chat = {"model": NAME, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}
    with httpx.Client(base_url=live["base"], timeout=60) as c:
        for key in (KEY_A, KEY_B):
            for auth_header in (f"Bearer {key}", f"bearer {key}", f"BEARER  {key}"):
                h = {"Authorization": auth_header}
                assert c.post(f"/v1/models/{NAME}:predict", json=PREDICT_BODY, headers=h).status_code == 200
            h = bearer(key)
            assert c.post(f"/v2/models/{NAME}/infer", json=infer, headers=h).status_code == 200
            assert c.get(f"/v1/models/{NAME}", headers=h).json()["ready"] is True
            assert c.get(f"/v2/models/{NAME}", headers=h).json()["name"] == NAME
            assert c.get(f"/v2/models/{NAME}/ready", headers=h).status_code == 200
            assert [m["id"] for m in c.get("/openai/v1/models", headers=h).json()["data"]] == [NAME]
            assert c.post("/openai/v1/chat/completions", json=chat, headers=h).json()["object"] == "chat.completion"
            spec = c.get("/openapi.json", headers=h).json()
            assert spec["components"]["securitySchemes"]["apiKey"] == {
                "type": "http", "scheme": "bearer", "description": "An API key from the service's api_keys_file."}
            predict_op = spec["paths"]["/v1/models/{model_name}:predict"]["post"]
            assert predict_op["security"] == [{"apiKey": []}] and "401" in predict_op["responses"]
            assert "security" not in spec["paths"]["/v2/health/ready"]["get"]


def test_health_and_metrics_stay_open(live) -> None:
    with httpx.Client(base_url=live["base"], timeout=30) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/").status_code == 200
        metrics = c.get("/metrics")
        assert metrics.status_code == 200
        failures = {m.group(1): float(m.group(2))
                    for m in re.finditer(r'^rner_auth_failures_total\{reason="(\w+)"\} (\S+)$', metrics.text, re.M)}
        c.get(f"/v2/models/{NAME}")
        c.get(f"/v2/models/{NAME}", headers=bearer(WRONG))
        after = {m.group(1): float(m.group(2))
                 for m in re.finditer(r'^rner_auth_failures_total\{reason="(\w+)"\} (\S+)$', c.get("/metrics").text, re.M)}
        assert after["missing"] == failures.get("missing", 0) + 1 and after["invalid"] == failures.get("invalid", 0) + 1


def test_the_openai_client_with_api_key(live) -> None:
    base = live["base"] + "/openai/v1"
    client = openai.OpenAI(base_url=base, api_key=KEY_B, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == [NAME]
    out = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=3)
    assert out.object == "chat.completion"
    chunks = list(client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                                 stream=True))
    assert chunks and all(ch.object == "chat.completion.chunk" for ch in chunks)
    for wrong in (WRONG, "x"):
        bad = openai.OpenAI(base_url=base, api_key=wrong, max_retries=0, timeout=60)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=3)
        assert info.value.status_code == 401 and "API key is not valid" in str(info.value) and wrong not in str(info.value)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    # no key at all: the client sends no Authorization header when given a key-less custom header set
    keyless = openai.OpenAI(base_url=base, api_key=KEY_A, max_retries=0, timeout=60, default_headers={"Authorization": ""})
    with pytest.raises(openai.AuthenticationError) as info:
        keyless.models.list()
    assert "needs an API key" in str(info.value)


def test_rotation_without_restart(live) -> None:
    volume: SecretVolume = live["volume"]
    pid = live["pid"]
    try:
        with httpx.Client(base_url=live["base"], timeout=60) as c:
            assert good_request(c, KEY_A).status_code == 200
            # 1. the kubelet's way: a Secret update swaps ..data; the new key works, the removed one stops at once
            volume.write(f"{KEY_B}\n{KEY_C}\n")
            assert good_request(c, KEY_C).status_code == 200
            assert_refused(good_request(c, KEY_A), "/v1/models", invalid=True, sent=KEY_A)
            assert good_request(c, KEY_B).status_code == 200
            # 2. an in-place edit of the file
            target = volume.file.resolve()
            target.write_text(f"{KEY_C}\n")
            assert_refused(good_request(c, KEY_B), "/v1/models", invalid=True)
            assert good_request(c, KEY_C).status_code == 200
            # 3. no valid key left: every model route is locked, health stays open
            target.write_text("# all keys revoked\n")
            assert_refused(good_request(c, KEY_C), "/v1/models", invalid=True)
            assert c.get("/v2/health/ready").status_code == 200
            # 4. a file that cannot be read keeps the keys read before (a Secret update never deletes the file)
            volume.write(f"{KEY_A}\n")
            assert good_request(c, KEY_A).status_code == 200
            volume.file.unlink()
            assert good_request(c, KEY_A).status_code == 200
            volume.file.symlink_to(f"..data/{volume.key}")
    finally:
        if not volume.file.is_symlink():
            volume.file.symlink_to(f"..data/{volume.key}")
        volume.write(f"{KEY_A}\n{KEY_B}\n")
    assert live["proc"].poll() is None and live["pid"] == pid  # the same process all along
    with httpx.Client(base_url=live["base"], timeout=60) as c:
        assert good_request(c, KEY_A).status_code == 200 and good_request(c, KEY_B).status_code == 200
        assert good_request(c, KEY_C).status_code == 401


def test_no_key_in_the_log(live) -> None:
    with httpx.Client(base_url=live["base"], timeout=60) as c:
        c.get(f"/v2/models/{NAME}", headers=bearer(WRONG))
        good_request(c)
    time.sleep(0.5)
    text = live["log"].read_text()
    # the log is written: the startup line (our logger at INFO, in kserve's format) and the access log
    assert "reasoning_ner.serving.auth INFO" in text and "api keys: 2 valid keys from" in text
    assert '"POST /v1/models/reasoning-ner%3Apredict HTTP/1.1" 200' in text
    for key in (KEY_A, KEY_B, KEY_C, WRONG):
        assert key not in text and key[3:] not in text


def test_a_server_without_a_usable_key_does_not_start(tmp_path: Path, tiny_dir: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("too-short\n")
    cmd = [sys.executable, "-m", "reasoning_ner.serving.server", "--model", str(tiny_dir), "--port", str(free_port()),
           "--no-access-log", "--set", f"api_keys_file={keys}"] + [a for s in SETTINGS for a in ("--set", s)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert f"api_keys_file '{keys}' holds no valid key" in out, out[-3000:]
    assert f"line 1 of {keys} skipped" in out and "too-short" not in out, out[-3000:]


# ------------------------------------------------------------------------------------ units


def test_every_key_is_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{KEY_A}\n{KEY_B}\n{KEY_C}\n{KEY_A}\n")
    keys = APIKeys(keys_file)
    assert keys.count == 3  # duplicates once
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented, ok in ((KEY_A, True), (KEY_C, True), (WRONG, False), ("x", False), (KEY_A * 10, False)):
        calls.clear()
        assert keys.check(presented) is ok
        # every key, whether or not an earlier one matched; equal-length digests, never the raw key
        assert len(calls) == 3 and all(len(a) == len(b) == 32 for a, b in calls)


def test_key_file_forms(tmp_path: Path) -> None:
    d = tmp_path / "secret"
    d.mkdir()
    (d / "team-a").write_text(f"{KEY_A}\n")
    (d / "team-b").write_text(f"  {KEY_B}  \n# note\n")
    (d / ".hidden").write_text(f"{KEY_C}\n")
    keys = APIKeys(d)
    assert keys.check(KEY_A) and keys.check(KEY_B) and not keys.check(KEY_C)
    with pytest.raises(AuthConfigError, match="cannot be read"):
        APIKeys(tmp_path / "missing")
    (tmp_path / "bad").write_text("has a space in it but long\nshort\n")
    with pytest.raises(AuthConfigError, match="holds no valid key") as info:
        APIKeys(tmp_path / "bad")
    assert "space" not in str(info.value)


def test_bearer_parsing() -> None:
    assert bearer_token([(b"authorization", b"Bearer abc")]) == b"abc"
    assert bearer_token([(b"Authorization", b"bEaReR   abc  ")]) == b"abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([(b"authorization", b"Bearer")]) is None
    assert bearer_token([(b"x-api-key", b"abc")]) is None


def test_off_by_default() -> None:
    assert ServeSettings().api_keys_file is None
    assert ServeSettings.from_sources({}, env={"RNER_SERVE_API_KEYS_FILE": "/var/run/keys"}).api_keys_file == "/var/run/keys"
    from fastapi import FastAPI

    assert auth.install_auth(FastAPI(), ServeSettings()) is None
    assert json.dumps(sorted(OPEN_PATHS)) == '["/", "/metrics", "/v2/health/live", "/v2/health/ready"]'
