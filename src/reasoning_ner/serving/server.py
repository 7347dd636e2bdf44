"""App assembly: kserve's routes plus our typed routes, OpenAI routes, metrics, limits, startup.

One FastAPI app carries, on one port:

* our typed routes, registered FIRST so they shadow kserve's untyped ones of the same path:
  ``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}/infer`` (pydantic bodies, so
  ``/openapi.json`` publishes the real request and response schemas), and the OpenAI-compatible
  ``POST /openai/v1/chat/completions`` (streaming too; the work is :mod:`.chat`'s), ``GET /openai/v1/models``
  and ``GET /openai/v1/models/{model}`` (kserve's own OpenAI layer needs vLLM, which is not in the CPU image);
* kserve's routes (health ``/``, ``/v2/health/live|ready``, ``/v1/models/{name}``, model metadata
  ``/v2/models/{name}``, ``/metrics`` ...), registered by kserve's own ``RESTServer`` code. The
  shadowed duplicates are then removed, and so are the routes a public NER endpoint must not
  expose (``:explain``, model load/unload, versioned routes that only answer 501);
* a middleware that counts and times every request by route template (Prometheus, same registry
  as kserve's metrics), and inside it :class:`.http.HTTPHygiene` (405, 408, 413, 415, UTF-8, JSON
  depth, gzip; the OIP error object on ``/v2``); the ``/v2`` routes are :mod:`.oip`'s, readiness
  is :mod:`.health`'s;
* error handlers giving every error the shape ``{"error": {"message", "type", "param", "code"}}``
  (OpenAI's, so the openai client reads it), where ``param`` names the offending field; a bad
  request is 400 on every protocol (OIP, KServe V1 and OpenAI all say so; not FastAPI's 422).

:func:`serve` starts it the kserve way (``ModelServer.start``) but bound to ``settings.host``
(127.0.0.1 by default; kserve hard-codes 0.0.0.0, so the REST server class kserve instantiates is
swapped for a subclass that binds the configured host and serves this app).
"""

# No `from __future__ import annotations` here: FastAPI must see the route bodies' real classes
# (they are built per deployment in install_routes, not module globals).

import argparse
import contextlib
import json
import time

import orjson
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .backends import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    PREDICT_CALLS,
    Backend,
    BackendUnavailable,
    ModelNotFoundError,
    RemoteBackend,
    ServingError,
    make_backend,
)
from .chat import local_chat, proxy_chat
from .health import install_lifespan
from .http import HTTPHygiene
from .model import NERModel
from .oip import install_v2_routes
from .schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    ServeSettings,
    V1Response,
    validation_problems,
)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON or an invalid field (param names it)."},
    404: {"model": ErrorResponse, "description": "Unknown model (param names the field)."},
    408: {"model": ErrorResponse, "description": "Body not complete within body_timeout_s."},
    413: {"model": ErrorResponse, "description": "Body larger than max_body_bytes."},
    415: {"model": ErrorResponse, "description": "Body not sent as JSON, or an unsupported Content-Encoding."},
    503: {"model": ErrorResponse, "description": "Backend unavailable or overloaded."},
    504: {"model": ErrorResponse, "description": "Request or backend timeout."},
}

STATIC_PATHS = {"/", "/metrics", "/openapi.json", "/v1/models", "/v2", "/v2/", "/v2/models", "/v2/health/live", "/v2/health/ready"}

#: kserve routes removed from the app (never useful on this service, or 501-only); oip.py's own
#: versioned routes of the same paths stay.
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
    return error_response(400, message, "invalid_request_error", problems[0][0] if problems else "body")


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


class RequestMetrics:
    """Pure ASGI middleware: request counts/latency by route template (limits are http.HTTPHygiene's)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None)
            if template is None:  # static routes outside FastAPI's APIRoute; never a raw parametrised path
                path = scope.get("path", "")
                template = path if path in STATIC_PATHS and status["code"] != 404 else "unmatched"
            HTTP_REQUESTS.labels(template, scope.get("method", ""), str(status["code"])).inc()
            HTTP_LATENCY.labels(template).observe(time.perf_counter() - started)


# ------------------------------------------------------------------------------------ OpenAI helpers


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


# ------------------------------------------------------------------------------------ routes


def install_routes(app: FastAPI, model: NERModel, dataplane: Any) -> None:
    """Our routes (must be installed before kserve's so that they shadow them)."""
    settings = model.settings
    backend: Backend = model.backend
    M = model.models
    V1Request = M.V1Request

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

    @app.get("/v1/models/{model_name}", tags=["V1"], operation_id="v1_model_ready", responses=ERROR_RESPONSES)
    async def v1_model_ready(model_name: ModelName) -> dict[str, Any]:  # type: ignore[valid-type]
        check_model(model_name)
        if not await model.serving_ready():
            raise BackendUnavailable(f"model {model_name!r} is not ready: {model.readiness.why_not()}")
        return {"name": model_name, "ready": True}

    # Every /v2 route (metadata, readiness, infer; with and without a version): the OIP's, in oip.py.
    install_v2_routes(app, model, dataplane, app.version)

    @app.get("/openai/v1/models", response_model=ModelList, tags=["OpenAI"], operation_id="openai_models")
    async def openai_models() -> ModelList:
        return ModelList(data=[ModelCard(id=model.name, created=int(model.created))])

    @app.get("/openai/v1/models/{model_id}", response_model=ModelCard, tags=["OpenAI"], operation_id="openai_model",
             responses=ERROR_RESPONSES)
    async def openai_model(model_id: str) -> ModelCard:  # the openai client's models.retrieve
        check_model(model_id, "model")
        return ModelCard(id=model.name, created=int(model.created))

    @app.post("/openai/v1/chat/completions", response_model=ChatCompletion, tags=["OpenAI"], operation_id="openai_chat",
              responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {"description": "SSE chat.completion.chunk objects, then [DONE]"}}}})
    async def openai_chat(body: ChatCompletionRequest, request: Request):
        check_model(body.model, "model")
        PREDICT_CALLS.labels("openai").inc()
        if isinstance(backend, RemoteBackend):
            return await proxy_chat(backend, settings, model.name, await request.json(), body, request.headers)
        return await local_chat(backend, settings, model.name, body, request.headers)


# ------------------------------------------------------------------------------------ assembly


def _prune_routes(app: FastAPI) -> None:
    """Drop kserve's routes that ours shadow (same path and methods; the first one wins) and the
    routes in :data:`DROPPED_ROUTES`. FastAPI >= 0.160 keeps included routers as lazy branches
    (``_IncludedRouter``), so their original routers are filtered too."""
    seen: set[tuple[str, frozenset[str]]] = set()

    def keep(path: str | None, route: Any) -> bool:
        ours = getattr(getattr(route, "endpoint", None), "__module__", "").startswith("reasoning_ner.")
        if path in DROPPED_ROUTES and not ours:
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
    # kserve's own middleware only logs a timing line per request; RequestMetrics replaces it.
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
    app.add_middleware(HTTPHygiene, app_routes=app, settings=model.settings)  # inside the metrics: they count its 4xx
    app.add_middleware(RequestMetrics)
    install_lifespan(app, model.readiness)  # upstream probing runs while the server does
    _prune_routes(app)
    _document_everything(app)
    from .auth import install_auth  # optional API keys: every route but health and /metrics (serving/auth.py)
    install_auth(app, model.settings)
    return app


def _document_everything(app: FastAPI) -> None:
    """Complete the OpenAPI document for kserve's routes: the errors they really return (404 for an
    unknown model, 503 when not ready, our 4xx for bodies) and /metrics as text/plain."""
    from fastapi.openapi.utils import get_openapi

    def error(description: str, path: str = "") -> dict[str, Any]:
        shape = "V2ErrorResponse" if path == "/v2" or path.startswith("/v2/") else "ErrorResponse"  # http.py shapes /v2
        return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, operations in spec.get("paths", {}).items():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)  # FastAPI's default; validation errors are 400 here
                if "{model_name}" in path:
                    responses.setdefault("404", error("No model of that name.", path))
                if path.endswith("/ready") or "{model_name}" in path:
                    responses.setdefault("503", error("The model (or its backend) is not ready.", path))
                if method in ("post", "put"):
                    for code, text in (("400", "Malformed JSON, invalid UTF-8, JSON too deep or an invalid field."),
                                       ("408", "Body not complete within body_timeout_s."), ("413", "Body too large."),
                                       ("415", "Body not JSON, or a Content-Encoding other than gzip.")):
                        responses.setdefault(code, error(text, path))
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


def configure_server_logging() -> None:
    """kserve's log configuration plus our own logger at INFO in kserve's format: kserve configures only
    its own and uvicorn's loggers, so our startup lines (API keys loaded, drift baseline) were dropped."""
    import copy
    import logging

    from kserve.logging import KSERVE_LOG_CONFIG, configure_logging

    if logging.getLogger("kserve").handlers:  # configured by whoever embeds the server: keep theirs, as kserve does
        return
    config = copy.deepcopy(KSERVE_LOG_CONFIG)
    config["loggers"]["reasoning_ner"] = {"handlers": ["kserve"], "level": "INFO", "propagate": False}
    configure_logging(config)


def serve(settings: ServeSettings, model_dir: str | None = None, access_log: bool | None = None) -> None:
    """Load the model and serve it until SIGINT/SIGTERM (``rner serve``)."""
    from kserve import ModelServer

    configure_server_logging()  # before the model loads: ModelServer keeps a configuration it finds
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
