"""A recording JSON HTTP peer on 127.0.0.1 for the tests that drive a real client (the Kubernetes
client, ``kfp.Client``) against a stand-in for an API server that cannot run here.

Subclasses implement :meth:`StubAPIServer.route`; every request is recorded (method, path, query,
Authorization header, Content-Type, parsed body) before it is routed, so tests assert on what the
real client actually sent.
"""

from __future__ import annotations

import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, Any]


def parse_body(content_type: str, raw: bytes) -> Any:
    """JSON, or a multipart form as ``{field: {"filename", "content"}}`` (kfp uploads), or None."""
    if content_type.startswith("multipart/form-data"):
        msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        return {
            part.get_param("name", header="content-disposition"): {
                "filename": part.get_filename(), "content": part.get_payload(decode=True)}
            for part in msg.iter_parts()
        }
    return json.loads(raw) if raw else None


class StubAPIServer:
    """Subclass and implement ``route(request) -> (status, json_body)``; use as a context manager.

    ``flat_query``: record each query parameter's first value instead of parse_qs's lists.
    Routes run one at a time (under ``self.lock``), so they may mutate the stub's state freely.
    """

    flat_query = False
    poll_interval = 0.05

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def route(self, request: dict[str, Any]) -> Reply:
        raise NotImplementedError

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]

    def writes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] in ("PATCH", "POST", "PUT", "DELETE")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                content_type = self.headers.get("Content-Type") or ""
                query = parse_qs(url.query)
                request = {
                    "method": self.command, "path": url.path,
                    "query": {k: v[0] for k, v in query.items()} if stub.flat_query else query,
                    "auth": self.headers.get("Authorization"), "content_type": self.headers.get("Content-Type"),
                    "body": parse_body(content_type, raw),
                }
                with stub.lock:
                    stub.requests.append(request)
                    code, obj = stub.route(request)
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve  # noqa: N815

        return Handler

    def __enter__(self) -> Any:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": self.poll_interval}, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def k8s_status(code: int, reason: str = "", message: str = "") -> dict[str, Any]:
    """A Kubernetes ``Status`` error body."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    if reason:
        body["reason"] = reason
    if message:
        body["message"] = message
    return body
