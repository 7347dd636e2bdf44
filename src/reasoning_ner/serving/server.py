"""App assembly: kserve's routes plus our typed routes, OpenAI routes, metrics, limits, startup.

One FastAPI app carries, on one port:

* our typed routes, registered FIRST so they shadow kserve's untyped ones of the same path:
  ``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}/infer`` (pydantic bodies, so
  ``/openapi.json`` publishes the real request and response schemas), and the OpenAI-compatible
  ``POST /openai/v1/chat/completions`` (streaming too) and ``GET /openai/v1/models`` (kserve's own
  OpenAI layer needs vLLM, which is not in the CPU image);
* kserve's routes (health ``/``, ``/v2/health/live|ready``, ``/v1/models/{name}``, model metadata
  ``/v2/models/{name}``, ``/metrics`` ...), registered by kserve's own ``RESTServer`` code. The
  shadowed duplicates are then removed, and so are the routes a public NER endpoint must not
  expose (``:explain``, model load/unload, versioned routes that only answer 501);
* a middleware that counts and times every request by route template (Prometheus, same registry
  as kserve's metrics) and refuses bodies over ``max_body_bytes`` (413);
* error handlers giving every error the shape ``{"error": {"message", "type", "param", "code"}}``
  (OpenAI's, so the openai client reads it), where ``param`` names the offending field.

:func:`serve` starts it the kserve way (``ModelServer.start``) but bound to ``settings.host``
(127.0.0.1 by default; kserve hard-codes 0.0.0.0, so the REST server class kserve instantiates is
swapped for a subclass that binds the configured host and serves this app).
"""

# No `from __future__ import annotations` here: FastAPI must see the route bodies' real classes
# (they are built per deployment in install_routes, not module globals).

import argparse
import asyncio
import contextlib
import json
import time
import uuid

import orjson
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .backends import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    PREDICT_CALLS,
    Backend,
    BackendTimeout,
    BackendUnavailable,
    GenRequest,
    GenResult,
    ModelNotFoundError,
    PromptTooLong,
    RemoteBackend,
    ServingError,
    make_backend,
    render_chatml,
)
from .model import NERModel
from .schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    ServeSettings,
    Usage,
    V1Response,
    V2InferResponse,
    validation_problems,
)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON."},
    404: {"model": ErrorResponse, "description": "Unknown model (param names the field)."},
    413: {"model": ErrorResponse, "description": "Body larger than max_body_bytes."},
    415: {"model": ErrorResponse, "description": "Body not sent as JSON."},
    422: {"model": ErrorResponse, "description": "Invalid field (param names it)."},
    503: {"model": ErrorResponse, "description": "Backend unavailable or overloaded."},
    504: {"model": ErrorResponse, "description": "Request or backend timeout."},
}

STATIC_PATHS = {"/", "/metrics", "/openapi.json", "/v1/models", "/v2", "/v2/models", "/v2/health/live", "/v2/health/ready"}

#: kserve routes removed from the app (never useful on this service, or 501-only).
DROPPED_ROUTES = {
    "/v1/models/{model_name}:explain",
    "/v2/repository/models/{model_name}/load",
    "/v2/repository/models/{model_name}/unload",
    "/v2/models/{model_name}/versions/{model_version}",
    "/v2/models/{model_name}/versions/{model_version}/ready",
    "/v2/models/{model_name}/versions/{model_version}/infer",
}


# ------------------------------------------------------------------------------------ errors


def error_body(status: int, message: str, type_: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def error_response(status: int, message: str, type_: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, type_, param), status_code=status)


async def _serving_error(request: Request, exc: ServingError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.type, exc.param)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        detail = (err.get("ctx") or {}).get("error", "JSON decode error")
        pos = err.get("loc", ("body", 0))[-1]
        return error_response(400, f"body: malformed JSON ({detail} at character {pos})", "invalid_request_error", "body")
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type.lower() and any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return error_response(415, f"content-type: send the body as JSON with Content-Type: application/json (got {content_type!r})",
                              "invalid_request_error", "content-type")
    problems = validation_problems(errors)
    message = "; ".join(f"{p}: {m}" for p, m, _ in problems)
    return error_response(422, message, "invalid_request_error", problems[0][0] if problems else "body")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    return JSONResponse(error_body(exc.status_code, message, kind), status_code=exc.status_code, headers=getattr(exc, "headers", None))


def _kserve_error(status: int, type_: str, param: str | None = None):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return error_response(status, str(exc), type_, param)
    return handler


# ------------------------------------------------------------------------------------ middleware


class _BodyTooLarge(Exception):
    pass


class MetricsAndLimits:
    """Pure ASGI middleware: request counts/latency by route template; 413 over max_body_bytes."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "sent": False}
        limit = self.max_body_bytes
        too_large = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > limit
                except ValueError:
                    too_large = False
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
            await send(message)

        try:
            if too_large:
                raise _BodyTooLarge()
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if status["sent"]:
                raise
            response = error_response(413, f"body: larger than max_body_bytes={limit}", "invalid_request_error", "body")
            await response(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None)
            if template is None:  # static routes outside FastAPI's APIRoute; never a raw parametrised path
                path = scope.get("path", "")
                template = path if path in STATIC_PATHS and status["code"] != 404 else "unmatched"
            HTTP_REQUESTS.labels(template, scope.get("method", ""), str(status["code"])).inc()
            HTTP_LATENCY.labels(template).observe(time.perf_counter() - started)


# ------------------------------------------------------------------------------------ OpenAI helpers


class ReasoningSplitter:
    """Streams text into (field, text) pieces: ``reasoning_content`` inside a leading think block,
    ``content`` after it (what vLLM's reasoning parser does)."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.mode = "start"
        self.buffer = ""
        self.saw_think = False
        self.reasoning_started = False
        self.content_started = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.buffer += text
        out: list[tuple[str, str]] = []
        while True:
            if self.mode == "start":
                head = self.buffer.lstrip()
                if head.startswith(self.OPEN):
                    self.buffer = head[len(self.OPEN):].lstrip("\n")
                    self.mode = "reasoning"
                    self.saw_think = True
                    continue
                if head and not self.OPEN.startswith(head):
                    self.mode = "content"
                    continue
                return out
            if self.mode == "reasoning":
                if not self.reasoning_started:
                    self.buffer = self.buffer.lstrip("\n")  # layout after <think>
                if self.CLOSE in self.buffer:
                    before, _, after = self.buffer.partition(self.CLOSE)
                    before = before.rstrip("\n")  # layout before </think>
                    if before:
                        out.append(("reasoning_content", before))
                    self.buffer = after
                    self.mode = "content"
                    continue
                # Hold back what could be the start of </think>, and trailing newlines (layout if </think> follows).
                keep = len(self.CLOSE) - 1
                emit = self.buffer[:-keep] if len(self.buffer) > keep else ""
                emit = emit.rstrip("\n")
                if emit:
                    self.reasoning_started = True
                    out.append(("reasoning_content", emit))
                    self.buffer = self.buffer[len(emit):]
                return out
            if self.saw_think and not self.content_started:
                self.buffer = self.buffer.lstrip("\n")  # the newline after </think> is layout, not content
            if self.buffer:
                self.content_started = True
                out.append(("content", self.buffer))
                self.buffer = ""
            return out

    def flush(self) -> list[tuple[str, str]]:
        out = []
        if self.mode == "reasoning":
            self.buffer = self.buffer.rstrip("\n") if self.reasoning_started else self.buffer.strip("\n")
        if self.buffer:
            out.append(("reasoning_content" if self.mode == "reasoning" else "content", self.buffer))
            self.buffer = ""
        return out


def split_reasoning_text(text: str) -> tuple[str | None, str]:
    splitter = ReasoningSplitter()
    pieces = splitter.feed(text) + splitter.flush()
    reasoning = "".join(t for f, t in pieces if f == "reasoning_content")
    content = "".join(t for f, t in pieces if f == "content")
    return (reasoning if splitter.saw_think else None), content


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


# ------------------------------------------------------------------------------------ routes


def install_routes(app: FastAPI, model: NERModel, dataplane: Any) -> None:
    """Our routes (must be installed before kserve's so that they shadow them)."""
    settings = model.settings
    backend: Backend = model.backend
    M = model.models
    V1Request, V2InferRequest = M.V1Request, M.V2InferRequest

    # The only valid name is published as an enum (clients and fuzzers see it); other names get 404.
    ModelName = Annotated[str, FastAPIPath(description="The served model's name.", json_schema_extra={"enum": [model.name]})]

    def check_model(name: str, param: str = "model_name") -> None:
        if name != model.name:
            raise ModelNotFoundError(f"{param}: no model named {name!r}; this server serves {model.name!r}", param=param)

    @app.post("/v1/models/{model_name}:predict", response_model=V1Response, responses=ERROR_RESPONSES, tags=["V1"],
              summary="Extract entities (KServe V1)", operation_id="v1_predict")
    async def v1_predict(model_name: ModelName, body: V1Request, request: Request) -> Response:  # type: ignore[valid-type]
        check_model(model_name)
        PREDICT_CALLS.labels("v1").inc()
        response, _ = await dataplane.infer(model_name=model_name, request=body, headers=dict(request.headers))
        return _json(response)

    @app.post("/v2/models/{model_name}/infer", response_model=V2InferResponse, responses=ERROR_RESPONSES, tags=["V2"],
              summary="Extract entities (Open Inference Protocol)", operation_id="v2_infer")
    async def v2_infer(model_name: ModelName, body: V2InferRequest, request: Request) -> Response:  # type: ignore[valid-type]
        from kserve.protocol.infer_type import InferRequest
        from kserve.protocol.rest.v2_datamodels import InferenceRequest

        check_model(model_name)
        PREDICT_CALLS.labels("v2").inc()
        infer_request = InferRequest.from_inference_request(
            InferenceRequest.model_validate(body.model_dump(exclude_none=True)), model_name)
        response, _ = await dataplane.infer(model_name=model_name, request=infer_request, headers=dict(request.headers))
        rest, _ = response.to_rest()
        return _json(rest)

    # kserve's health/metadata routes take an optional model_version that only ever answers 501;
    # these typed equivalents shadow them.
    from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse, ModelReadyResponse

    @app.get("/v1/models/{model_name}", tags=["V1"], operation_id="v1_model_ready", responses=ERROR_RESPONSES)
    async def v1_model_ready(model_name: ModelName) -> dict[str, Any]:
        check_model(model_name)
        if not await dataplane.model_ready(model_name):
            raise BackendUnavailable(f"model {model_name!r} is not ready")
        return {"name": model_name, "ready": True}

    @app.get("/v2/models/{model_name}", response_model=ModelMetadataResponse, tags=["V2"], operation_id="v2_model_metadata",
             responses=ERROR_RESPONSES)
    async def v2_model_metadata(model_name: ModelName) -> ModelMetadataResponse:
        check_model(model_name)
        return ModelMetadataResponse.model_validate(await dataplane.model_metadata(model_name))

    @app.get("/v2/models/{model_name}/ready", response_model=ModelReadyResponse, tags=["V2"], operation_id="v2_model_ready",
             responses=ERROR_RESPONSES)
    async def v2_model_ready(model_name: ModelName) -> ModelReadyResponse:
        check_model(model_name)
        if not await dataplane.model_ready(model_name):
            raise BackendUnavailable(f"model {model_name!r} is not ready")
        return ModelReadyResponse(name=model_name, ready=True)

    @app.get("/openai/v1/models", response_model=ModelList, tags=["OpenAI"], operation_id="openai_models")
    async def openai_models() -> ModelList:
        return ModelList(data=[ModelCard(id=model.name, created=int(model.created))])

    @app.post("/openai/v1/chat/completions", response_model=ChatCompletion, tags=["OpenAI"], operation_id="openai_chat",
              responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {"description": "SSE chat.completion.chunk objects, then [DONE]"}}}})
    async def openai_chat(body: ChatCompletionRequest, request: Request):
        check_model(body.model, "model")
        PREDICT_CALLS.labels("openai").inc()
        if isinstance(backend, RemoteBackend):
            return await _proxy_chat(backend, model.name, await request.json(), body.stream)
        max_tokens = min(body.max_completion_tokens or body.max_tokens or settings.max_new_tokens, settings.max_new_tokens)
        gen = GenRequest(
            render_chatml([{"role": m.role, "content": m.text()} for m in body.messages]), max_tokens,
            temperature=body.temperature or 0.0, top_p=body.top_p or 1.0, stop=body.stop_list(),
        )
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            try:
                result = await asyncio.wait_for(backend.generate(gen), settings.request_timeout_s)
            except PromptTooLong as exc:
                exc.param = "messages"
                raise
            except TimeoutError as exc:
                raise BackendTimeout(f"the request took longer than request_timeout_s={settings.request_timeout_s:g} s") from exc
            reasoning, content = split_reasoning_text(result.text)
            return ChatCompletion(
                id=cid, created=created, model=model.name,
                choices=[ChatChoice(index=0, message=AssistantMessage(content=content, reasoning_content=reasoning),
                                    finish_reason="length" if result.finish_reason == "length" else "stop")],
                usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                            total_tokens=result.prompt_tokens + result.completion_tokens),
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = backend.stream(gen)
        deadline = time.monotonic() + settings.request_timeout_s
        try:  # the first event: errors before any byte is sent still get a proper status
            first = await asyncio.wait_for(events.__anext__(), settings.request_timeout_s)
        except PromptTooLong as exc:
            exc.param = "messages"
            raise
        except TimeoutError as exc:
            await events.aclose()
            raise BackendTimeout(f"no token within request_timeout_s={settings.request_timeout_s:g} s") from exc
        return StreamingResponse(_local_stream(events, first, cid, created, model.name, include_usage, deadline),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _local_stream(events: AsyncIterator[str | GenResult], first: str | GenResult, cid: str, created: int,
                        name: str, include_usage: bool, deadline: float) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    splitter = ReasoningSplitter()
    yield _sse(chunk({"role": "assistant", "content": ""}))
    final: GenResult | None = None
    try:
        event: str | GenResult | None = first
        while event is not None:
            if isinstance(event, GenResult):
                final = event
                break
            for field, text in splitter.feed(event):
                yield _sse(chunk({field: text}))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            event = await asyncio.wait_for(events.__anext__(), remaining)
    except (TimeoutError, StopAsyncIteration, ServingError) as exc:
        status, kind, message = (504, "timeout_error", "request_timeout_s exceeded while streaming") if isinstance(exc, TimeoutError) \
            else (503, "backend_error", str(exc) or "stream ended early")
        if isinstance(exc, ServingError):
            status, kind = exc.status, exc.type
        yield _sse(error_body(status, message, kind))
        yield b"data: [DONE]\n\n"
        return
    finally:
        await events.aclose()
    for field, text in splitter.flush():
        yield _sse(chunk({field: text}))
    assert final is not None
    yield _sse(chunk({}, "length" if final.finish_reason == "length" else "stop"))
    if include_usage:
        usage = {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.completion_tokens,
                 "total_tokens": final.prompt_tokens + final.completion_tokens}
        yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": name, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


async def _proxy_chat(backend: RemoteBackend, name: str, raw: dict[str, Any], stream: bool):
    """Forward an OpenAI chat request verbatim to the remote server (model name swapped both ways)."""
    raw = dict(raw)
    raw["model"] = backend.model
    if not stream:
        data = await backend.proxy_json("/chat/completions", raw)
        data["model"] = name
        return JSONResponse(data)
    chunks = backend.proxy_stream("/chat/completions", raw)
    try:  # errors before the first byte keep their HTTP status
        first: dict[str, Any] | None = await chunks.__anext__()
    except StopAsyncIteration:
        first = None

    async def relay() -> AsyncIterator[bytes]:
        try:
            item = first
            while item is not None:
                item["model"] = name
                yield _sse(item)
                try:
                    item = await chunks.__anext__()
                except StopAsyncIteration:
                    item = None
        except ServingError as exc:
            yield _sse(error_body(exc.status, exc.message, exc.type))
        finally:
            await chunks.aclose()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# ------------------------------------------------------------------------------------ assembly


def _prune_routes(app: FastAPI) -> None:
    """Drop kserve's routes that ours shadow (same path and methods; the first one wins) and the
    routes in :data:`DROPPED_ROUTES`. FastAPI >= 0.160 keeps included routers as lazy branches
    (``_IncludedRouter``), so their original routers are filtered too."""
    seen: set[tuple[str, frozenset[str]]] = set()

    def keep(path: str | None, route: Any) -> bool:
        if path in DROPPED_ROUTES:
            return False
        methods = getattr(route, "methods", None)
        if path is None or methods is None:
            return True
        key = (path, frozenset(methods))
        if key in seen:
            return False
        seen.add(key)
        return True

    def prune(router: Any, prefix: str) -> None:
        kept = []
        for route in router.routes:
            original = getattr(route, "original_router", None)
            if original is not None:  # a lazily included router
                context = getattr(route, "include_context", None)
                prune(original, prefix + (getattr(context, "prefix", "") or ""))
                kept.append(route)
            elif keep(prefix + route.path if getattr(route, "path", None) is not None else None, route):
                kept.append(route)
        router.routes[:] = kept
        if hasattr(router, "_mark_routes_changed"):
            router._mark_routes_changed()

    prune(app.router, "")
    app.openapi_schema = None


def assemble(app: FastAPI, model: NERModel, rest_server: Any) -> FastAPI:
    """Put our routes, kserve's routes (through its RESTServer), handlers and middleware on ``app``."""
    install_routes(app, model, rest_server.dataplane)
    # kserve's own middleware only logs a timing line per request; MetricsAndLimits replaces it.
    rest_server._register_endpoints(app)
    rest_server._add_exception_handlers(app)
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady

    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ModelNotFound, _kserve_error(404, "not_found_error", "model_name"))
    app.add_exception_handler(InvalidInput, _kserve_error(400, "invalid_request_error", "body"))
    app.add_exception_handler(ModelNotReady, _kserve_error(503, "backend_error"))
    app.add_exception_handler(ServerNotReady, _kserve_error(503, "backend_error"))
    app.add_middleware(MetricsAndLimits, max_body_bytes=model.settings.max_body_bytes)
    _prune_routes(app)
    _document_everything(app)
    return app


def _document_everything(app: FastAPI) -> None:
    """Complete the OpenAPI document for kserve's routes: the errors they really return (404 for an
    unknown model, 503 when not ready, our 4xx for bodies) and /metrics as text/plain."""
    from fastapi.openapi.utils import get_openapi

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, operations in spec.get("paths", {}).items():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                if "{model_name}" in path:
                    responses.setdefault("404", error("No model of that name."))
                if path.endswith("/ready") or "{model_name}" in path:
                    responses.setdefault("503", error("The model (or its backend) is not ready."))
                if method in ("post", "put"):
                    for code, text in (("400", "Malformed JSON."), ("413", "Body too large."), ("415", "Body not JSON."),
                                       ("422", "Invalid field (param names it).")):
                        responses.setdefault(code, error(text))
        metrics = spec.get("paths", {}).get("/metrics", {}).get("get")
        if metrics is not None:
            metrics["responses"]["200"] = {"description": "Prometheus text exposition.",
                                           "content": {"text/plain": {"schema": {"type": "string"}}}}
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def new_app() -> FastAPI:
    from importlib import metadata

    try:
        version = metadata.version("reasoning-ner")
    except metadata.PackageNotFoundError:  # pragma: no cover - always installed in the venv
        version = "0"
    return FastAPI(title="reasoning-ner", version=version, docs_url=None, redoc_url=None,
                   strict_content_type=False,
                   description="ReasoningNER: reason, then extract named entities (KServe V1/V2 + OpenAI-compatible).")


def build_model(settings: ServeSettings, model_dir: str | None = None, backend: Backend | None = None, load: bool = True) -> NERModel:
    model = NERModel(settings.model_name, backend or make_backend(settings, model_dir), settings)
    if load:
        model.load()
    return model


def build_app(model: NERModel) -> FastAPI:
    """The complete app for ``model`` without starting a server (tests, ``TestClient``, embedding)."""
    from kserve import ModelServer
    from kserve.protocol.rest.server import RESTServer

    server = ModelServer(http_port=model.settings.port or 8080, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.register_model(model)
    rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension, http_port=model.settings.port)
    return assemble(new_app(), model, rest)


@contextlib.contextmanager
def _kserve_rest_server(model: NERModel, access_log: bool) -> Iterator[None]:
    """Make ``ModelServer.start`` build our app and bind ``settings.host`` instead of 0.0.0.0."""
    import kserve.model_server as kms
    from kserve.protocol.rest.server import RESTServer

    settings = model.settings

    class NERRESTServer(RESTServer):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.config.host = settings.host
            self.config.access_log = access_log

        def create_application(self) -> None:
            self.config.app = assemble(new_app(), model, self)

    original = kms.RESTServer
    kms.RESTServer = NERRESTServer
    try:
        yield
    finally:
        kms.RESTServer = original


def serve(settings: ServeSettings, model_dir: str | None = None, access_log: bool | None = None) -> None:
    """Load the model and serve it until SIGINT/SIGTERM (``rner serve``)."""
    from kserve import ModelServer

    model = build_model(settings, model_dir)
    server = ModelServer(http_port=settings.port, enable_grpc=False, workers=1, enable_latency_logging=False)
    with _kserve_rest_server(model, settings.access_log if access_log is None else access_log):
        server.start([model])


def main(argv: list[str] | None = None) -> None:
    """``python -m reasoning_ner.serving.server --model DIR [--host] [--port] [--set field=value ...]``
    (the same as ``rner serve``, without the project configuration file)."""
    parser = argparse.ArgumentParser(prog="python -m reasoning_ner.serving.server")
    parser.add_argument("--model", dest="model_dir", default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="a ServeSettings field, e.g. max_new_tokens=8")
    args = parser.parse_args(argv)
    import yaml

    extra = {}
    for item in args.sets:
        key, _, value = item.partition("=")
        extra[key.strip()] = yaml.safe_load(value) if value.strip() else None
    settings = ServeSettings.from_sources(extra, host=args.host, port=args.port, model_name=args.name)
    serve(settings, args.model_dir, access_log=False if args.no_access_log else None)


if __name__ == "__main__":
    main()
