"""HTTP hygiene in front of every route: one place that reads bodies, so every route gets the same rules.

The middleware, before the app sees a request:

* **405** with ``Allow`` when the path belongs to a route of other methods (Starlette would send some
  of these to a same-shaped route of another method, e.g. ``GET /v1/models/m:predict`` to the model
  ready route, and answer 404);
* reads the whole body before the app does, so that one limit and one clock hold for all routes:
  **413** past ``max_body_bytes``, whether announced by Content-Length or sent chunked (the limit
  counts the bytes as they arrive, so a chunked body is cut off at the limit, never buffered whole);
  **408** when the body is not complete ``body_timeout_s`` after the request started (a client that
  sends half and stops), answered with ``Connection: close`` so that the worker is freed at once;
* ``Content-Encoding: gzip`` is decompressed under the same limit (a gzip bomb stops at the limit);
  any other coding gets **415** with ``Accept-Encoding: gzip, identity`` (RFC 9110 15.5.16);
* a body meant as JSON (Content-Type JSON or none) must be UTF-8 (**400** naming the byte) and nested
  at most ``max_json_depth`` deep (**400**); malformed JSON is left to the route, which names the position.

and after: on ``/v2`` paths every error body becomes the Open Inference Protocol's
``{"error": "<message>"}`` (the rest of the service keeps OpenAI's error object).
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import orjson
from starlette.routing import compile_path

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class _Reject(Exception):
    def __init__(self, status: int, message: str, param: str | None = "body", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}


def _routes(router: Any, prefix: str = "") -> list[tuple[Any, set[str]]]:
    """(path regex, methods) of every HTTP route in registration order, included routers flattened
    (FastAPI >= 0.160 keeps them as lazy ``_IncludedRouter`` branches)."""
    out: list[tuple[Any, set[str]]] = []
    for route in router.routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            context = getattr(route, "include_context", None)
            out += _routes(original, prefix + (getattr(context, "prefix", "") or ""))
        elif getattr(route, "methods", None) and getattr(route, "path", None) is not None:
            out.append((compile_path(prefix + route.path)[0], set(route.methods)))
    return out


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping as soon as it passes ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


class HTTPHygiene:
    """Pure ASGI middleware; see the module docstring. ``app_routes`` is the FastAPI app (for 405)."""

    def __init__(self, app: Any, app_routes: Any, settings: Any):
        self.app = app
        self.app_routes = app_routes
        self.max_body = settings.max_body_bytes
        self.timeout = settings.body_timeout_s
        self.max_depth = settings.max_json_depth
        self._table: list[tuple[Any, set[str]]] | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        oip = path == "/v2" or path.startswith("/v2/")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            self._check_method(path, method)
            body = await self._read_body(receive, headers) if method in _BODY_METHODS else None
        except _Reject as exc:
            await _error(send, exc, oip)
            return
        if body is not None:
            receive = _replay(body, receive)
            if "content-encoding" in headers:  # the app sees the decoded body (in place: the metrics read scope)
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() not in
                                    (b"content-encoding", b"content-length")] + [(b"content-length", str(len(body)).encode())]
        await self.app(scope, receive, _oip_errors(send) if oip else send)

    # -- 405 ----------------------------------------------------------------------------------------

    def _check_method(self, path: str, method: str) -> None:
        if self._table is None:  # routes are final once the app serves (after pruning)
            self._table = _routes(self.app_routes.router)
        for regex, methods in self._table:
            if regex.match(path):  # the first route of this path says what the resource is
                if method not in methods:
                    allow = ", ".join(sorted(methods))
                    raise _Reject(405, f"method {method} is not allowed on {path}; use {allow}", None, {"Allow": allow})
                return

    # -- the body -------------------------------------------------------------------------------------

    async def _read_body(self, receive: Any, headers: dict[str, str]) -> bytes:
        limit = self.max_body
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise _Reject(413, f"body: {int(declared)} bytes, larger than max_body_bytes={limit}")
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("identity", "gzip", "x-gzip"):
            raise _Reject(415, f"content-encoding: {coding!r} is not supported; send gzip or identity", "content-encoding",
                          {"Accept-Encoding": "gzip, identity"})
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except TimeoutError:
                raise _Reject(408, f"body: not complete within body_timeout_s={self.timeout:g} s ({size} bytes arrived)",
                              headers={"Connection": "close"}) from None
            if message["type"] == "http.disconnect":
                raise _Reject(400, "body: the client disconnected before sending all of it")
            size += len(message.get("body", b""))
            if size > limit:
                raise _Reject(413, f"body: more than max_body_bytes={limit} bytes", headers={"Connection": "close"})
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if coding != "identity" and body:
            body = self._gunzip(body, limit)
        content_type = headers.get("content-type", "").lower()
        if body and (not content_type or "json" in content_type):
            self._check_json(body)
        return body

    @staticmethod
    def _gunzip(body: bytes, limit: int) -> bytes:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise _Reject(400, f"body: Content-Encoding says gzip but the body is not gzip data ({exc})") from None
        if len(out) > limit:
            raise _Reject(413, f"body: more than max_body_bytes={limit} bytes once decompressed")
        if not inflater.eof:
            raise _Reject(400, "body: the gzip data is truncated")
        return out

    def _check_json(self, body: bytes) -> None:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Reject(400, f"body: not valid UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start}: {exc.reason}); "
                          "JSON must be UTF-8") from None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth" in str(exc):
                raise _Reject(400, f"body: JSON nested deeper than max_json_depth={self.max_depth}") from None
            return  # malformed: the route's own error names the position
        if _depth(parsed, self.max_depth) > self.max_depth:
            raise _Reject(400, f"body: JSON nested deeper than max_json_depth={self.max_depth}")


def _replay(body: bytes, receive: Any) -> Any:
    """A receive() that gives the app the whole body once, then the client's own messages (disconnects)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def oip_message(body: Any) -> str:
    """``{"error": {"message": ...}}`` (or anything else) -> the OIP error string."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message, param = error["message"], error.get("param")
        return message if not param or message.startswith(str(param)) else f"{param}: {message}"
    return json.dumps(body) if body is not None else "error"


def _oip_errors(send: Any) -> Any:
    """Rewrite error bodies (status >= 400, JSON) as ``{"error": "<string>"}``; success passes untouched."""
    start: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            if message["status"] < 400:
                await send(message)
                return
            start = message
            return
        if start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        raw = b"".join(chunks)
        try:
            body = orjson.dumps({"error": oip_message(orjson.loads(raw))})
        except orjson.JSONDecodeError:
            body = orjson.dumps({"error": raw.decode("utf-8", "replace") or f"HTTP {start['status']}"})
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped


async def _error(send: Any, exc: _Reject, oip: bool) -> None:
    if oip:
        payload: dict[str, Any] = {"error": exc.message}
    else:
        kind = {405: "invalid_request_error", 408: "timeout_error"}.get(exc.status, "invalid_request_error")
        payload = {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.status}}
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
