"""HTTP hygiene over real sockets on 127.0.0.1 (uvicorn, the app ``rner serve`` builds, a tiny model).

Each bad request gets its protocol's status and an error naming the field or cause; right after each
one a good request succeeds (the server keeps serving); nothing hangs (every socket has a timeout):

* one body limit (413) for Content-Length and chunked bodies, gzip decompressed under it;
* 400 for invalid UTF-8 and over-deep JSON, 415 (+ Accept-Encoding) for an unsupported coding;
* 408 for a body that stalls (half sent), with the connection closed so that the worker is free;
* 405 with ``Allow`` for a wrong method;
* an upstream answering anything but the JSON object the protocol promises: 502 naming its URL.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reasoning_ner.modeling import init_tiny
from reasoning_ner.serving import ServeSettings, build_app, build_model
from tests.serving_live import NAME, SMALL, Upstream, uvicorn_server

LIMIT = 4096
BODY_TIMEOUT = 1.0
PREDICT = f"/v1/models/{NAME}:predict"
INFER = f"/v2/models/{NAME}/infer"
GOOD_V1 = {"instances": [{"text": "Ada Lovelace met Alan Turing.", "labels": ["person"]}]}
GOOD_V2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Ada Lovelace"]},
                      {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["person"]']}]}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tiny: Path = tmp_path_factory.mktemp("hygiene") / "tiny"
    init_tiny(tiny, SMALL)
    settings = ServeSettings(max_new_tokens=4, max_answer_tokens=2, prompt_style="compact", torch_threads=1,
                             max_body_bytes=LIMIT, body_timeout_s=BODY_TIMEOUT, max_json_depth=16, max_batch_wait_ms=2)
    with uvicorn_server(build_app(build_model(settings, str(tiny)))) as url:
        yield url


def still_serving(base: str) -> None:
    """The good request right after a bad one."""
    r = httpx.post(base + PREDICT, json=GOOD_V1, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(base + INFER, json=GOOD_V2, timeout=30)
    assert r.status_code == 200, r.text


def raw(base: str, request: bytes, wait: float = 10.0) -> tuple[int, dict[str, str], bytes, float]:
    """Send ``request`` on a fresh socket; the status, headers, body and seconds until the answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        started = time.monotonic()
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        elapsed = time.monotonic() - started
        if headers.get("connection") == "close":  # the server must really close it
            s.settimeout(5)
            assert s.recv(1) == b""
        return int(lines[0].split()[1]), headers, body, elapsed


def head(path: str, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}".encode()


# ------------------------------------------------------------------------------------- 413


@pytest.mark.parametrize("path", [PREDICT, INFER, "/openai/v1/chat/completions"])
def test_content_length_and_chunked_bodies_over_the_limit_are_413(base: str, path: str) -> None:
    big = json.dumps({"instances": [{"text": "x" * (LIMIT + 100), "labels": ["person"]}]}).encode()
    r = httpx.post(base + path, content=big, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413 and "max_body_bytes" in r.text, r.text

    def chunks():  # a chunked body (no Content-Length): the limit counts the bytes as they come
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    r = httpx.post(base + path, content=chunks(), headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413 and "max_body_bytes" in r.text, r.text
    assert "transfer-encoding" not in r.request.headers or r.request.headers["transfer-encoding"] == "chunked"
    still_serving(base)


def test_a_chunked_body_within_the_limit_is_served(base: str) -> None:
    data = json.dumps(GOOD_V1).encode()
    r = httpx.post(base + PREDICT, content=iter([data[:10], data[10:]]), headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------- 400 / 415


def test_invalid_utf8_is_400_naming_the_byte(base: str) -> None:
    r = httpx.post(base + PREDICT, content=b'{"instances": [{"text": "Ada \xff", "labels": ["person"]}]}',
                   headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "body" and "UTF-8" in err["message"] and "0xff" in err["message"]
    r = httpx.post(base + INFER, content=b'{"inputs": "\xc3\x28"}', headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "UTF-8" in r.json()["error"], r.text  # the OIP error object on /v2
    still_serving(base)


def test_json_nested_too_deep_is_400(base: str) -> None:
    deep = b'{"instances": ' + b"[" * 40 + b"]" * 40 + b"}"
    r = httpx.post(base + PREDICT, content=deep, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "max_json_depth=16" in r.json()["error"]["message"], r.text
    very_deep = b"[" * 1500 + b"]" * 1500  # past orjson's own limit (1024): still a 400, not a 500
    r = httpx.post(base + INFER, content=very_deep, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "max_json_depth" in r.json()["error"], r.text
    still_serving(base)


def test_malformed_json_keeps_its_position(base: str) -> None:
    r = httpx.post(base + PREDICT, content=b'{"instances": [', headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"], r.text


def test_gzip_is_accepted_and_decompressed_under_the_same_limit(base: str) -> None:
    r = httpx.post(base + INFER, content=gzip.compress(json.dumps(GOOD_V2).encode()),
                   headers={"content-type": "application/json", "content-encoding": "gzip"}, timeout=30)
    assert r.status_code == 200 and r.json()["model_name"] == NAME, r.text
    bomb = gzip.compress(b" " * (50 * LIMIT))  # tiny on the wire, 50x the limit inflated
    assert len(bomb) < LIMIT
    r = httpx.post(base + PREDICT, content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"},
                   timeout=10)
    assert r.status_code == 413 and "decompressed" in r.json()["error"]["message"], r.text
    r = httpx.post(base + PREDICT, content=b"not gzip at all", timeout=10,
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["error"]["message"], r.text
    still_serving(base)


@pytest.mark.parametrize("coding", ["br", "deflate", "zstd"])
def test_other_content_encodings_are_415_with_accept_encoding(base: str, coding: str) -> None:
    r = httpx.post(base + PREDICT, content=b"{}", headers={"content-type": "application/json", "content-encoding": coding},
                   timeout=10)
    assert r.status_code == 415 and r.headers["accept-encoding"] == "gzip, identity", r.text
    err = r.json()["error"]
    assert err["param"] == "content-encoding" and coding in err["message"]
    still_serving(base)


# ------------------------------------------------------------------------------------- 408


def test_a_stalled_body_gets_408_and_the_connection_is_closed(base: str) -> None:
    half = b'{"instances": [{"text": "Ada'
    status, headers, body, elapsed = raw(base, head(PREDICT, "Content-Length: 200\r\n\r\n") + half)
    assert status == 408 and headers["connection"] == "close", (status, headers, body)
    assert "body_timeout_s=1" in json.loads(body)["error"]["message"]
    assert BODY_TIMEOUT - 0.2 <= elapsed < BODY_TIMEOUT + 3, elapsed
    # chunked, stalled after the first chunk, on /v2 (the OIP error object)
    status, headers, body, _ = raw(base, head(INFER, "Transfer-Encoding: chunked\r\n\r\n") + b"5\r\n{\"inp\r\n")
    assert status == 408 and isinstance(json.loads(body)["error"], str)
    still_serving(base)


def test_stalled_clients_do_not_pin_the_workers(base: str) -> None:
    socks = []
    try:
        host, port = base.removeprefix("http://").split(":")
        for _ in range(20):  # twenty slow clients at once, all stopped half-way
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(head(PREDICT, "Content-Length: 500\r\n\r\n") + b'{"inst')
            socks.append(s)
        time.sleep(BODY_TIMEOUT + 0.5)
        for s in socks:
            assert s.recv(4096).startswith(b"HTTP/1.1 408")
        still_serving(base)
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------------------------------- 405


@pytest.mark.parametrize("method,path,allow", [
    ("GET", PREDICT, "POST"), ("GET", INFER, "POST"), ("GET", "/openai/v1/chat/completions", "POST"),
    ("PUT", INFER, "POST"), ("POST", "/v2/health/ready", "GET"), ("DELETE", f"/v2/models/{NAME}", "GET"),
    ("POST", "/metrics", "GET"),
])
def test_wrong_methods_are_405_with_allow(base: str, method: str, path: str, allow: str) -> None:
    r = httpx.request(method, base + path, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == allow, (r.status_code, r.headers, r.text)
    message = r.json()["error"] if path.startswith("/v2") else r.json()["error"]["message"]
    assert method in message and allow in message
    still_serving(base)


# ------------------------------------------------------------------------------------- 502


@pytest.fixture(scope="module")
def bad_upstream() -> Iterator[tuple[Upstream, str]]:
    upstream = Upstream()
    with upstream.running():
        settings = ServeSettings(backend="remote", remote_url=upstream.url, remote_model="m", prompt_style="compact",
                                 max_new_tokens=16, max_answer_tokens=8, probe_interval_s=0.2, probe_successes=1)
        with uvicorn_server(build_app(build_model(settings))) as url:
            yield upstream, url


@pytest.mark.parametrize("mode", ["list", "html", "no_choices"])
def test_an_upstream_answer_that_is_not_the_json_object_is_502_naming_the_upstream(bad_upstream, mode: str) -> None:
    upstream, base = bad_upstream
    chat = {"model": NAME, "messages": [{"role": "user", "content": "Hi"}]}
    try:
        upstream.mode = mode
        for path, body in ((PREDICT, GOOD_V1), (INFER, GOOD_V2), ("/openai/v1/chat/completions", chat)):
            if mode == "no_choices" and path.startswith("/openai"):
                continue  # a pass-through relays any JSON object verbatim
            r = httpx.post(base + path, json=body, timeout=30)
            assert r.status_code == 502, (path, r.status_code, r.text)
            message = r.json()["error"] if path.startswith("/v2") else r.json()["error"]["message"]
            assert upstream.url in message, message
        if mode == "list":  # a streamed chunk that is a list: 502 before the first byte
            r = httpx.post(base + "/openai/v1/chat/completions", json={**chat, "stream": True}, timeout=30)
            assert r.status_code == 502 and upstream.url in r.json()["error"]["message"], r.text
    finally:
        upstream.mode = "ok"
    r = httpx.post(base + PREDICT, json=GOOD_V1, timeout=30)
    assert r.status_code == 200 and r.json()["predictions"][0]["entities"] == [], r.text
