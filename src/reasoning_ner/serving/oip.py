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


def install_v2_routes(app: FastAPI, model: Any, dataplane: Any, server_version: str) -> None:
    """Our /v2 routes (installed before kserve's, which they shadow)."""
    from kserve.protocol.infer_type import InferRequest
    from kserve.protocol.rest.v2_datamodels import (
        InferenceRequest,
        ModelMetadataResponse,
        ModelReadyResponse,
        ServerMetadataResponse,
        ServerReadyResponse,
    )

    V2InferRequest = model.models.V2InferRequest
    version: str | None = model.version
    platform = {"transformers": "pytorch_transformers", "remote": "openai_http"}.get(model.backend.kind, model.backend.kind)
    ModelName = Annotated[str, FastAPIPath(description="The served model's name.", json_schema_extra={"enum": [model.name]})]
    ModelVersion = Annotated[str, FastAPIPath(description="The served model's version.", json_schema_extra={"enum": [version or ""]})]

    def check(name: str, ver: str | None = None, where: str = "model_version") -> None:
        if name != model.name:
            raise ModelNotFoundError(f"model_name: no model named {name!r}; this server serves {model.name!r}", param="model_name")
        if ver is not None and ver != version:
            raise ModelNotFoundError(f"{where}: model {name!r} has no version {ver!r}; this server serves version {version!r}",
                                     param=where)

    async def ensure_ready() -> None:
        if not await model.serving_ready():
            raise BackendUnavailable(f"model {model.name!r} is not ready: {model.readiness.why_not()}")

    def route(path: str, endpoint: Any, method: str = "GET", **kw: Any) -> None:
        kw.setdefault("responses", V2_ERRORS)
        app.add_api_route(path, endpoint, methods=[method], tags=["V2"], **kw)

    # -- server ---------------------------------------------------------------------------------
    async def server_metadata() -> Response:
        return _json({"name": "reasoning-ner", "version": server_version, "extensions": []})

    route("/v2", server_metadata, response_model=ServerMetadataResponse, operation_id="v2_server_metadata",
          summary="Server metadata")
    route("/v2/", server_metadata, response_model=ServerMetadataResponse, include_in_schema=False)

    async def server_ready() -> ServerReadyResponse:
        await ensure_ready()
        return ServerReadyResponse(ready=True)

    route("/v2/health/ready", server_ready, response_model=ServerReadyResponse, operation_id="v2_server_ready",
          summary="Server ready: the model loaded and warmed up (in process) or its upstream answering (remote)")

    # -- model metadata / ready -----------------------------------------------------------------
    def metadata(name: str) -> Response:
        body: dict[str, Any] = {"name": name, "platform": platform}
        if version:
            body["versions"] = [version]
        body.update(inputs=model.get_input_types(), outputs=model.get_output_types())
        return _json(body)

    async def model_metadata(model_name: ModelName) -> Response:  # type: ignore[valid-type]
        check(model_name)
        return metadata(model_name)

    async def model_ready(model_name: ModelName) -> ModelReadyResponse:  # type: ignore[valid-type]
        check(model_name)
        await ensure_ready()
        return ModelReadyResponse(name=model_name, ready=True)

    route("/v2/models/{model_name}", model_metadata, response_model=ModelMetadataResponse, operation_id="v2_model_metadata")
    route("/v2/models/{model_name}/ready", model_ready, response_model=ModelReadyResponse, operation_id="v2_model_ready")

    # -- infer ----------------------------------------------------------------------------------
    async def infer(model_name: str, body: Any, request: Request, path_version: str | None) -> Response:
        check(model_name, path_version)
        if body.model_name is not None and body.model_name != model_name:
            raise InvalidRequest(f"model_name: the body names model {body.model_name!r}, the path {model_name!r}",
                                 param="model_name")
        if body.model_version is not None:
            check(model_name, body.model_version, where="model_version")
        PREDICT_CALLS.labels("v2").inc()
        payload = body.model_dump(exclude_none=True, exclude={"model_name", "model_version"})
        infer_request = InferRequest.from_inference_request(InferenceRequest.model_validate(payload), model_name)
        response, _ = await dataplane.infer(model_name=model_name, request=infer_request, headers=dict(request.headers))
        rest, _ = response.to_rest()
        if rest.get("model_version") is None:
            rest.pop("model_version", None)  # "servers that do not implement versioning should not provide this field"
        return _json(rest)

    async def v2_infer(model_name: ModelName, body: V2InferRequest, request: Request) -> Response:  # type: ignore[valid-type]
        return await infer(model_name, body, request, None)

    infer_doc = dict(response_model=V2InferResponse, summary="Extract entities (Open Inference Protocol)",
                     responses={**V2_ERRORS, 413: {"model": V2ErrorResponse, "description": "Body larger than max_body_bytes."}})
    route("/v2/models/{model_name}/infer", v2_infer, "POST", operation_id="v2_infer", **infer_doc)

    if version is None:
        return  # no versions to name: the versioned paths stay unknown (404)

    async def model_metadata_v(model_name: ModelName, model_version: ModelVersion) -> Response:  # type: ignore[valid-type]
        check(model_name, model_version)
        return metadata(model_name)

    async def model_ready_v(model_name: ModelName, model_version: ModelVersion) -> ModelReadyResponse:  # type: ignore[valid-type]
        check(model_name, model_version)
        await ensure_ready()
        return ModelReadyResponse(name=model_name, ready=True)

    async def v2_infer_v(model_name: ModelName, model_version: ModelVersion, body: V2InferRequest,  # type: ignore[valid-type]
                         request: Request) -> Response:
        return await infer(model_name, body, request, model_version)

    base = "/v2/models/{model_name}/versions/{model_version}"
    route(base, model_metadata_v, response_model=ModelMetadataResponse, operation_id="v2_model_version_metadata")
    route(base + "/ready", model_ready_v, response_model=ModelReadyResponse, operation_id="v2_model_version_ready")
    route(base + "/infer", v2_infer_v, "POST", operation_id="v2_version_infer", **infer_doc)
