"""Optional API-key authentication (``Authorization: Bearer <key>``) for every model route.

Off unless ``api_keys_file`` is set (env ``RNER_SERVE_API_KEYS_FILE``). The keys live in that file,
one per line (blank lines and ``#`` comments ignored), or, when it names a directory, in every
regular file in it whose name does not start with a dot (a Secret mounted as a volume: one file
per Secret key). In Kubernetes the file is a key of a Secret mounted read-only into the transformer
(``serving.transformer.auth.existingSecret`` / ``secretKey``); keys are never taken from a plain
environment value.

* **Rotation without a restart.** The file's identity (inode, size, mtime of every file, following
  symlinks, so the kubelet's atomic ``..data`` swap is seen) is checked on each authenticated
  request; when it changed the keys are re-read. Several keys are valid at once: add the new key,
  move the clients, remove the old one. A file that cannot be read keeps the last keys read (with a
  warning: a Secret update is a symlink swap, never a missing file, so this is an operator error);
  a file that reads fine is the truth, so emptying it locks every model route.
* **Constant time.** The presented key and every configured key are hashed (SHA-256) and compared
  with :func:`hmac.compare_digest` against *every* key, without stopping at a match; neither a
  key's content nor its length changes the time taken.
* **Closed by default, open where it must be.** Every path needs a key except the health routes
  (``/``, ``/v2/health/live``, ``/v2/health/ready``: kubelet and Knative probes) and ``/metrics``
  (Prometheus). Unknown paths get 401 too, so nothing about the API is learnt without a key and a
  new route is protected without anyone remembering to.
* **The answer.** 401 with ``WWW-Authenticate: Bearer realm="<model name>"`` (plus
  ``error="invalid_token"`` for a wrong key, RFC 6750) and a body in the route's protocol:
  ``{"error": "<message>"}`` under ``/v2`` (Open Inference Protocol), the service's OpenAI-shaped
  error object everywhere else (the ``openai`` client raises ``AuthenticationError``). The request
  body is never read.
* **No key in any log or message.** Log lines name the file, line numbers and counts only; the
  401 never echoes what was sent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter

log = logging.getLogger(__name__)

#: Paths served without a key: liveness/readiness probes (kubelet, Knative's queue-proxy) and scraping.
OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/metrics"})
#: RFC 6750 b64token, at least this long (``openssl rand -hex 32`` gives 64 characters).
MIN_KEY_CHARS = 16
KEY_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")

AUTH_FAILURES = Counter("rner_auth_failures_total", "Requests refused with 401 (missing or invalid API key).", ["reason"])


class AuthConfigError(ValueError):
    """The API key file cannot be used (missing, unreadable, or without a valid key)."""


@dataclass(frozen=True)
class _Loaded:
    signature: tuple[Any, ...]
    digests: tuple[bytes, ...]


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode("utf-8") if isinstance(key, str) else key).digest()


class APIKeys:
    """The valid keys, re-read from ``path`` whenever the file (or directory) changes."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._loaded = self._load(strict=True)
        self._unreadable = False  # warn once per outage, not on every request

    # --------------------------------------------------------------- reading
    def _files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if not p.name.startswith(".") and p.is_file())
        return [self.path]

    def _signature(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for f in self._files():
            st = os.stat(f)  # follows the Secret volume's symlinks
            if not stat.S_ISREG(st.st_mode):
                continue
            out.append((f.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _load(self, strict: bool) -> _Loaded:
        try:
            signature = self._signature()
            files = self._files()
            texts = [(f, f.read_text(encoding="utf-8")) for f in files]
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise AuthConfigError(f"api_keys_file {str(self.path)!r} cannot be read: {reason}") from None
        digests: list[bytes] = []
        for f, text in texts:
            for number, line in enumerate(text.splitlines(), 1):
                key = line.strip()
                if not key or key.startswith("#"):
                    continue
                if len(key) < MIN_KEY_CHARS or not KEY_RE.match(key):
                    log.warning("api keys: line %d of %s skipped: a key is at least %d characters of A-Z a-z 0-9 - . _ ~ + / "
                                "(e.g. `openssl rand -hex 32`)", number, f, MIN_KEY_CHARS)
                    continue
                digests.append(_digest(key))
        unique = tuple(dict.fromkeys(digests))
        if strict and not unique:
            raise AuthConfigError(f"api_keys_file {str(self.path)!r} holds no valid key (one per line, at least "
                                  f"{MIN_KEY_CHARS} characters of A-Z a-z 0-9 - . _ ~ + /)")
        return _Loaded(signature, unique)

    def refresh(self) -> None:
        """Re-read the keys if the file changed; keep the last ones if it cannot be read."""
        try:
            signature = self._signature()
            if signature == self._loaded.signature:
                self._unreadable = False
                return
            loaded = self._load(strict=False)
        except (OSError, AuthConfigError) as exc:
            if not self._unreadable:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.warning("api keys: %s cannot be read (%s); keeping the %d keys read before", self.path, reason,
                            len(self._loaded.digests))
            self._unreadable = True
            return
        self._unreadable = False
        self._loaded = loaded
        if loaded.digests:
            log.info("api keys: re-read %s: %d valid keys", self.path, len(loaded.digests))
        else:
            log.warning("api keys: re-read %s: no valid key left; every model route answers 401", self.path)

    @property
    def count(self) -> int:
        return len(self._loaded.digests)

    # --------------------------------------------------------------- checking
    def check(self, presented: str | bytes) -> bool:
        """True when ``presented`` is one of the keys; compares against every key in constant time."""
        self.refresh()
        candidate = _digest(presented)
        ok = False
        for digest in self._loaded.digests:
            ok |= hmac.compare_digest(digest, candidate)
        return ok


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the first ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            token = token.strip()
            if scheme.lower() == b"bearer" and token:
                return token
            return None
    return None


def _body(path: str, message: str) -> bytes:
    if path == "/v2" or path.startswith("/v2/"):  # Open Inference Protocol: {"error": "<string>"}
        return orjson.dumps({"error": message})
    return orjson.dumps({"error": {"message": message, "type": "authentication_error", "param": "authorization", "code": 401}})


class APIKeyAuth:
    """Pure ASGI middleware: 401 before any route runs unless the path is open or the key is valid."""

    def __init__(self, app: Any, keys: APIKeys, realm: str, open_paths: frozenset[str] = OPEN_PATHS):
        self.app = app
        self.keys = keys
        self.realm = realm.replace('"', "")
        self.open_paths = open_paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or (kind == "http" and scope.get("path") in self.open_paths):
            await self.app(scope, receive, send)  # lifespan, probes, scraping
            return
        token = bearer_token(scope.get("headers", []))
        if token is not None and self.keys.check(token):
            await self.app(scope, receive, send)
            return
        reason = "missing" if token is None else "invalid"
        AUTH_FAILURES.labels(reason).inc()
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        challenge = f'Bearer realm="{self.realm}"'
        if reason == "missing":
            message = "authorization: this route needs an API key: send the header 'Authorization: Bearer <key>'"
        else:
            message = "authorization: the API key is not valid"
            challenge += ', error="invalid_token", error_description="the API key is not valid"'
        body = _body(scope.get("path", ""), message)
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode())]})
        await send({"type": "http.response.body", "body": body})


def _document(app: Any) -> None:
    """Add the bearer scheme, ``security`` and the 401 answer to every protected operation of the
    OpenAPI document (wrapping whatever ``app.openapi`` is when first called)."""
    previous = app.openapi

    def openapi() -> dict[str, Any]:
        spec = previous()
        if spec.get("components", {}).get("securitySchemes", {}).get("apiKey"):
            return spec
        spec.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
            "type": "http", "scheme": "bearer", "description": "An API key from the service's api_keys_file."}
        for path, operations in spec.get("paths", {}).items():
            if path in OPEN_PATHS:
                continue
            for op in operations.values():
                if isinstance(op, dict):
                    op["security"] = [{"apiKey": []}]
                    op.setdefault("responses", {}).setdefault("401", {"description": "Missing or invalid API key."})
        return spec

    app.openapi = openapi


def install_auth(app: Any, settings: Any) -> APIKeys | None:
    """Require an API key on every model route when ``settings.api_keys_file`` is set (no-op otherwise).

    The middleware goes innermost among the user middlewares (after the request metrics and body
    limits, before routing), whenever this is called; raises :class:`AuthConfigError` when the file
    holds no usable key, so a misconfigured server does not start.
    """
    path = getattr(settings, "api_keys_file", None)
    if not path:
        return None
    from starlette.middleware import Middleware

    keys = APIKeys(path)
    log.info("api keys: %d valid keys from %s; every route but %s needs one", keys.count, path, ", ".join(sorted(OPEN_PATHS)))
    app.user_middleware.append(Middleware(APIKeyAuth, keys=keys, realm=getattr(settings, "model_name", "reasoning-ner")))
    _document(app)
    app.state.api_keys = keys
    return keys
