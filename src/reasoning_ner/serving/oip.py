"""Every ``/v2`` route, to the letter of the Open Inference Protocol's REST specification
(``specification/protocol/inference_rest.md`` in kserve/open-inference-protocol).

==========================================================  ===============================================
route                                                       answer
==========================================================  ===============================================
``GET /v2`` (and ``/v2/``)                                  ``{"name", "version", "extensions": []}``
``GET /v2/health/live``                                     kserve's ``{"live": true}`` (never the backend)
``GET /v2/health/ready``                                    ``{"ready": true}``, else 503 (:mod:`.health`)
``GET /v2/models/{name}[/versions/{version}]``              ``{"name", "versions", "platform", "inputs", "outputs"}``
``GET /v2/models/{name}[/versions/{version}]/ready``        ``{"name", "ready": true}``, else 503
``POST /v2/models/{name}[/versions/{version}]/infer``       ``{"model_name", "model_version", "id", "outputs"}``
==========================================================  ===============================================

Errors are ``{"error": "<field>: <what is wrong>"}`` (the protocol's error object, shaped by
:mod:`.http` for every ``/v2`` path) with 400 for a bad request, 404 for an unknown model or
version, 503 while not ready. ``versions`` and ``model_version`` are the served model's real version
(:func:`resolve_version`); without one (a remote backend nobody told) they are left out, as the
specification asks of servers without versioning, and the versioned routes do not exist.
"""

# No `from __future__ import annotations`: FastAPI must see the route bodies' real classes.

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Request
from fastapi import Path as FastAPIPath
from fastapi.responses import Response

from .backends import PREDICT_CALLS, BackendUnavailable, InvalidRequest, ModelNotFoundError
from .schemas import V2ErrorResponse, V2InferResponse

#: promotion.make_version: ``%Y%m%dT%H%M%S-<8 hex>``, the folder name of a registry copy ``models/<version>``.
REGISTRY_VERSION = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}$")
#: What identifies an exported model without a registry version: its card and config (not GBs of weights).
IDENTITY_FILES = ("README.md", "config.json", "generation_config.json", "tokenizer_config.json")

V2_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2ErrorResponse, "description": "Bad request: malformed JSON or an invalid field (the message names it)."},
    404: {"model": V2ErrorResponse, "description": "No model (or version) of that name."},
    503: {"model": V2ErrorResponse, "description": "Not ready: the model is loading or its backend does not answer."},
}


def resolve_version(settings: Any, model_dir: str | None) -> str | None:
    """The served model's version: ``settings.model_version`` (RNER_SERVE_MODEL_VERSION; the chart sets it
    from the InferenceService's ``reasoning-ner.io/model-version`` annotation), else the registry version of
    a folder that is a registry copy, else ``md5-<12 hex>`` of the model card and config, else None."""
    if settings.model_version:
        return settings.model_version
    if not model_dir or not Path(model_dir).is_dir():
        return None
    folder = Path(model_dir).resolve()
    if REGISTRY_VERSION.match(folder.name) and folder.parent.name == "models":
        return folder.name
    digest = hashlib.md5(usedforsecurity=False)
    found = False
    for name in IDENTITY_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
            found = True
    for weights in sorted(folder.glob("*.safetensors")):  # names and sizes: retrained weights change them
        digest.update(f"{weights.name}:{weights.stat().st_size}\0".encode())
    return f"md5-{digest.hexdigest()[:12]}" if found else None


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


#: The infer routes' documentation (with and without a version).
V2_INFER_DOC: dict[str, Any] = dict(
    response_model=V2InferResponse, summary="Extract entities (Open Inference Protocol)",
    responses={**V2_ERRORS, 413: {"model": V2ErrorResponse, "description": "Body larger than max_body_bytes."}},
)


class _V2Routes:
    """What the /v2 routes share: the app they go on, the served model (its name, version and readiness)
    and kserve's dataplane, which runs an infer request through the model's pre/postprocessing."""

    def __init__(self, app: FastAPI, model: Any, dataplane: Any):
        self.app, self.model, self.dataplane = app, model, dataplane
        self.version: str | None = model.version
        kind = model.backend.kind
        self.platform = {"transformers": "pytorch_transformers", "remote": "openai_http"}.get(kind, kind)

    def add(self, path: str, endpoint: Any, method: str = "GET", **kw: Any) -> None:
        kw.setdefault("responses", V2_ERRORS)
        self.app.add_api_route(path, endpoint, methods=[method], tags=["V2"], **kw)

    def check(self, name: str, ver: str | None = None, where: str = "model_version") -> None:
        """404 naming the field unless ``name`` (and ``ver``, when given) is what this server serves."""
        if name != self.model.name:
            raise ModelNotFoundError(f"model_name: no model named {name!r}; this server serves {self.model.name!r}",
                                     param="model_name")
        if ver is not None and ver != self.version:
            raise ModelNotFoundError(f"{where}: model {name!r} has no version {ver!r}; this server serves version "
                                     f"{self.version!r}", param=where)

    async def ensure_ready(self) -> None:
        if not await self.model.serving_ready():
            raise BackendUnavailable(f"model {self.model.name!r} is not ready: {self.model.readiness.why_not()}")

    def metadata(self, name: str) -> Response:
        body: dict[str, Any] = {"name": name, "platform": self.platform}
        if self.version:
            body["versions"] = [self.version]
        body.update(inputs=self.model.get_input_types(), outputs=self.model.get_output_types())
        return _json(body)

    async def ready(self, name: str) -> Any:
        from kserve.protocol.rest.v2_datamodels import ModelReadyResponse

        await self.ensure_ready()
        return ModelReadyResponse(name=name, ready=True)

    async def infer(self, model_name: str, body: Any, request: Request, path_version: str | None) -> Response:
        """The body checked against the path, then kserve's dataplane (the model's preprocess/predict/postprocess)."""
        from kserve.protocol.infer_type import InferRequest
        from kserve.protocol.rest.v2_datamodels import InferenceRequest

        self.check(model_name, path_version)
        if body.model_name is not None and body.model_name != model_name:
            raise InvalidRequest(f"model_name: the body names model {body.model_name!r}, the path {model_name!r}",
                                 param="model_name")
        if body.model_version is not None:
            self.check(model_name, body.model_version, where="model_version")
        PREDICT_CALLS.labels("v2").inc()
        payload = body.model_dump(exclude_none=True, exclude={"model_name", "model_version"})
        infer_request = InferRequest.from_inference_request(InferenceRequest.model_validate(payload), model_name)
        response, _ = await self.dataplane.infer(model_name=model_name, request=infer_request, headers=dict(request.headers))
        rest, _ = response.to_rest()
        if rest.get("model_version") is None:
            rest.pop("model_version", None)  # "servers that do not implement versioning should not provide this field"
        return _json(rest)


def install_v2_routes(app: FastAPI, model: Any, dataplane: Any, server_version: str) -> None:
    """Our /v2 routes (installed before kserve's, which they shadow). The path parameters' schemas name
    the one model (and version) served, so clients and fuzzers see the only valid values."""
    v2 = _V2Routes(app, model, dataplane)
    ModelName = Annotated[str, FastAPIPath(description="The served model's name.", json_schema_extra={"enum": [model.name]})]
    _install_server_routes(v2, server_version)
    _install_model_routes(v2, ModelName)
    if v2.version is None:
        return  # no versions to name: the versioned paths stay unknown (404)
    ModelVersion = Annotated[str, FastAPIPath(description="The served model's version.",
                                              json_schema_extra={"enum": [v2.version]})]
    _install_versioned_model_routes(v2, ModelName, ModelVersion)


def _install_server_routes(v2: _V2Routes, server_version: str) -> None:
    """``/v2`` (server metadata) and ``/v2/health/ready``; kserve keeps ``/v2/health/live``."""
    from kserve.protocol.rest.v2_datamodels import ServerMetadataResponse, ServerReadyResponse

    async def server_metadata() -> Response:
        return _json({"name": "reasoning-ner", "version": server_version, "extensions": []})

    v2.add("/v2", server_metadata, response_model=ServerMetadataResponse, operation_id="v2_server_metadata",
           summary="Server metadata")
    v2.add("/v2/", server_metadata, response_model=ServerMetadataResponse, include_in_schema=False)

    async def server_ready() -> ServerReadyResponse:
        await v2.ensure_ready()
        return ServerReadyResponse(ready=True)

    v2.add("/v2/health/ready", server_ready, response_model=ServerReadyResponse, operation_id="v2_server_ready",
           summary="Server ready: the model loaded and warmed up (in process) or its upstream answering (remote)")


def _install_model_routes(v2: _V2Routes, ModelName: Any) -> None:
    """``/v2/models/{name}``: metadata, ready and infer."""
    from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse, ModelReadyResponse

    V2InferRequest = v2.model.models.V2InferRequest

    async def model_metadata(model_name: ModelName) -> Response:  # type: ignore[valid-type]
        v2.check(model_name)
        return v2.metadata(model_name)

    async def model_ready(model_name: ModelName) -> ModelReadyResponse:  # type: ignore[valid-type]
        v2.check(model_name)
        return await v2.ready(model_name)

    async def v2_infer(model_name: ModelName, body: V2InferRequest, request: Request) -> Response:  # type: ignore[valid-type]
        return await v2.infer(model_name, body, request, None)

    v2.add("/v2/models/{model_name}", model_metadata, response_model=ModelMetadataResponse, operation_id="v2_model_metadata")
    v2.add("/v2/models/{model_name}/ready", model_ready, response_model=ModelReadyResponse, operation_id="v2_model_ready")
    v2.add("/v2/models/{model_name}/infer", v2_infer, "POST", operation_id="v2_infer", **V2_INFER_DOC)


def _install_versioned_model_routes(v2: _V2Routes, ModelName: Any, ModelVersion: Any) -> None:
    """``/v2/models/{name}/versions/{version}``: the same three routes, for the served version only."""
    from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse, ModelReadyResponse

    V2InferRequest = v2.model.models.V2InferRequest

    async def model_metadata_v(model_name: ModelName, model_version: ModelVersion) -> Response:  # type: ignore[valid-type]
        v2.check(model_name, model_version)
        return v2.metadata(model_name)

    async def model_ready_v(model_name: ModelName, model_version: ModelVersion) -> ModelReadyResponse:  # type: ignore[valid-type]
        v2.check(model_name, model_version)
        return await v2.ready(model_name)

    async def v2_infer_v(model_name: ModelName, model_version: ModelVersion, body: V2InferRequest,  # type: ignore[valid-type]
                         request: Request) -> Response:
        return await v2.infer(model_name, body, request, model_version)

    base = "/v2/models/{model_name}/versions/{model_version}"
    v2.add(base, model_metadata_v, response_model=ModelMetadataResponse, operation_id="v2_model_version_metadata")
    v2.add(base + "/ready", model_ready_v, response_model=ModelReadyResponse, operation_id="v2_model_version_ready")
    v2.add(base + "/infer", v2_infer_v, "POST", operation_id="v2_version_infer", **V2_INFER_DOC)
