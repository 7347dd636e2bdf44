"""Open Inference Protocol conformance of every /v2 route, against a live server on 127.0.0.1.

Each test states the requirement of the OIP REST specification it checks
(kserve/open-inference-protocol, specification/protocol/inference_rest.md, quoted as "spec"); then
KServe's own V2 client (``kserve.InferenceRESTClient``, JSON tensors) runs against the same server.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reasoning_ner.modeling import init_tiny
from reasoning_ner.serving import ServeSettings, build_app, build_model
from reasoning_ner.serving.oip import resolve_version
from tests.serving_live import NAME, SMALL, Upstream, uvicorn_server

#: spec "Tensor Data Types"
DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}
TEXTS = ["Ada Lovelace met Alan Turing.", "Paris is in France."]


def v2_body(texts=TEXTS, **extra) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)},
                       {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["person", "location"]']}], **extra}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, served version) of an in-process server on a registry copy ``models/<version>``."""
    version = "20260101T000000-0123abcd"  # promotion.make_version's shape
    tiny: Path = tmp_path_factory.mktemp("registry") / "models" / version
    init_tiny(tiny, SMALL)
    settings = ServeSettings(max_new_tokens=4, max_answer_tokens=2, prompt_style="compact", torch_threads=1,
                             max_batch_wait_ms=2, max_body_bytes=65536)
    with uvicorn_server(build_app(build_model(settings, str(tiny)))) as url:
        yield url, version


def assert_error_object(r: httpx.Response, status: int) -> str:
    """spec: a failed request "must be indicated by an HTTP error status" and the body "must contain"
    ``{"error": $string}``."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], body
    return body["error"]


# ------------------------------------------------------------------------------------- server


@pytest.mark.parametrize("path", ["/v2", "/v2/"])
def test_server_metadata(live, path: str) -> None:
    """spec: GET v2 -> 200 and ``{"name": $string, "version": $string, "extensions": [$string, ...]}``
    (the REST yaml writes the path ``/v2/``: both answer, no redirect)."""
    base, _ = live
    r = httpx.get(base + path, follow_redirects=False, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"name", "version", "extensions"}
    assert isinstance(body["name"], str) and body["name"] and isinstance(body["version"], str) and body["version"]
    assert isinstance(body["extensions"], list) and all(isinstance(e, str) for e in body["extensions"])


def test_server_live_and_ready(live) -> None:
    """spec: GET v2/health/live and v2/health/ready: 200 with ``{"live": $bool}`` / ``{"ready": $bool}``."""
    base, _ = live
    assert httpx.get(base + "/v2/health/live", timeout=10).json() == {"live": True}
    r = httpx.get(base + "/v2/health/ready", timeout=10)
    assert r.status_code == 200 and r.json() == {"ready": True}


# ------------------------------------------------------------------------------------- model metadata


@pytest.mark.parametrize("versioned", [False, True])
def test_model_metadata(live, versioned: bool) -> None:
    """spec: GET v2/models/<name>[/versions/<version>] -> ``{"name", "versions": [$string] #optional,
    "platform": $string, "inputs": [$metadata_tensor], "outputs": [$metadata_tensor]}``, each tensor
    ``{"name": $string, "datatype": <a Tensor Data Type>, "shape": [$number], -1 = variable}``."""
    base, version = live
    path = f"/v2/models/{NAME}" + (f"/versions/{version}" if versioned else "")
    body = httpx.get(base + path, timeout=10).json()
    assert set(body) == {"name", "versions", "platform", "inputs", "outputs"}
    assert body["name"] == NAME and body["versions"] == [version] and isinstance(body["platform"], str)
    for tensor in body["inputs"] + body["outputs"]:
        assert set(tensor) == {"name", "datatype", "shape"}
        assert tensor["datatype"] in DATATYPES
        assert all(isinstance(d, int) and (d >= 0 or d == -1) for d in tensor["shape"])
    assert [t["name"] for t in body["inputs"]] == ["text", "labels", "return_reasoning", "max_reasoning_tokens"]


def test_unknown_model_or_version_is_404_with_the_error_object(live) -> None:
    base, version = live
    for path in ("/v2/models/nope", "/v2/models/nope/ready", f"/v2/models/nope/versions/{version}",
                 f"/v2/models/{NAME}/versions/9", f"/v2/models/{NAME}/versions/9/ready"):
        message = assert_error_object(httpx.get(base + path, timeout=10), 404)
        assert ("model_name" in message) if "nope" in path else ("model_version" in message and "'9'" in message)
    for path in ("/v2/models/nope/infer", f"/v2/models/{NAME}/versions/9/infer"):
        assert_error_object(httpx.post(base + path, json=v2_body(), timeout=10), 404)


@pytest.mark.parametrize("versioned", [False, True])
def test_model_ready(live, versioned: bool) -> None:
    """spec: GET v2/models/<name>[/versions/<version>]/ready -> ``{"name": $string, "ready": $bool}``."""
    base, version = live
    path = f"/v2/models/{NAME}" + (f"/versions/{version}" if versioned else "") + "/ready"
    r = httpx.get(base + path, timeout=10)
    assert r.status_code == 200 and r.json() == {"name": NAME, "ready": True}


# ------------------------------------------------------------------------------------- infer


@pytest.mark.parametrize("versioned", [False, True])
def test_infer_response_object(live, versioned: bool) -> None:
    """spec: POST v2/models/<name>[/versions/<version>]/infer -> 200 and ``{"model_name": $string,
    "model_version": $string #optional, "id": $string, "parameters" #optional, "outputs": [$response_output]}``;
    "id": "if specified this identifier must be returned in the response"; each output ``{"name", "shape":
    [$number], "datatype", "data"}`` with data holding every element of the shape; without ``outputs`` in the
    request "all outputs produced by the model will be returned"."""
    base, version = live
    path = f"/v2/models/{NAME}" + (f"/versions/{version}" if versioned else "") + "/infer"
    r = httpx.post(base + path, json=v2_body(id="req-42", parameters={"note": "x"}), timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-42" and body["model_name"] == NAME and body["model_version"] == version
    assert set(body) <= {"model_name", "model_version", "id", "parameters", "outputs"}
    names = []
    for out in body["outputs"]:
        assert set(out) <= {"name", "shape", "datatype", "parameters", "data"}
        assert out["datatype"] in DATATYPES and math.prod(out["shape"]) == len(out["data"]) == len(TEXTS)
        names.append(out["name"])
    assert names == ["entities", "ungrounded", "parse_error"]
    r = httpx.post(base + path, json=v2_body(), timeout=60)
    assert isinstance(r.json()["id"], str) and r.json()["id"]  # $string even when the request had none


def test_the_outputs_filter_is_honoured(live) -> None:
    """spec: "outputs": "The output tensors requested for this inference" ("the inference server must
    return the 'output0' output tensor" in the example): exactly those, in that order; asking for
    ``reasoning`` returns it for every sentence."""
    base, _ = live
    r = httpx.post(base + f"/v2/models/{NAME}/infer", timeout=60,
                   json=v2_body(outputs=[{"name": "parse_error"}, {"name": "reasoning"}, {"name": "entities"}]))
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["parse_error", "reasoning", "entities"]
    assert all(isinstance(t, str) for t in outs[1]["data"]) and len(outs[1]["data"]) == len(TEXTS)
    message = assert_error_object(httpx.post(base + f"/v2/models/{NAME}/infer", timeout=10,
                                             json=v2_body(outputs=[{"name": "logits"}])), 400)
    assert message.startswith("outputs[0].name") and "logits" in message


@pytest.mark.parametrize("body,field", [
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Ada"]}]}, "inputs"),
    (v2_body(texts=[""]), "inputs[text].data[0]"),
    ({"inputs": "text"}, "inputs"),
    ({**v2_body(), "id": 5}, "id"),
    ({**v2_body(), "model_name": "other"}, "model_name"),
    ({**v2_body(), "colour": "red"}, "colour"),
    ([1, 2], "body"),
])
def test_a_bad_request_is_400_with_the_error_object_naming_the_field(live, body, field: str) -> None:
    """spec: "A failed inference request must be indicated by an HTTP error status (typically 400)"."""
    base, _ = live
    message = assert_error_object(httpx.post(base + f"/v2/models/{NAME}/infer", json=body, timeout=10), 400)
    assert field in message, message
    assert httpx.post(base + f"/v2/models/{NAME}/infer", json=v2_body(), timeout=60).status_code == 200


def test_every_v2_error_is_the_error_object(live) -> None:
    """Not only the route handlers': malformed JSON, a wrong method, an oversized body, an unknown path."""
    base, _ = live
    url = base + f"/v2/models/{NAME}/infer"
    assert "malformed JSON" in assert_error_object(httpx.post(url, content=b"{", timeout=10), 400)
    assert_error_object(httpx.get(url, timeout=10), 405)
    assert_error_object(httpx.post(url, content=b"x" * 70000, timeout=10), 413)
    assert_error_object(httpx.get(base + "/v2/nothing/here", timeout=10), 404)


# ------------------------------------------------------------------------------------- a real V2 client


def test_kserve_inference_rest_client(live) -> None:
    """KServe's own V2 client (JSON tensors) end to end: health, readiness, infer with a requested
    output, the response parsed into its InferResponse, a versioned infer (its model_version),
    and an error surfacing the server's message; metadata validated by KServe's own response models."""
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput
    from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse, ServerMetadataResponse

    base, version = live

    async def run() -> None:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
        try:
            assert await client.is_server_live(base) is True
            assert await client.is_server_ready(base) is True
            assert await client.is_model_ready(base, NAME) is True
            inputs = [InferInput("text", [2], "BYTES", TEXTS), InferInput("labels", [1], "BYTES", ['["person"]'])]
            request = InferRequest(NAME, inputs, request_id="kserve-1", request_outputs=[RequestedOutput("entities")])
            response = await client.infer(base, request, model_name=NAME)
            # (InferResponse.from_bytes drops model_version; the dict answer below shows it)
            assert response.id == "kserve-1" and response.model_name == NAME
            assert [o.name for o in response.outputs] == ["entities"] and response.outputs[0].data == ["[]", "[]"]
            versioned = await client.infer(f"{base}/v2/models/{NAME}/versions/{version}/infer",
                                           InferRequest(NAME, inputs), is_graph_endpoint=True)
            assert versioned["model_version"] == version and len(versioned["outputs"]) == 3
            with pytest.raises(httpx.HTTPStatusError) as info:
                await client.infer(base, InferRequest(NAME, inputs[:1]), model_name=NAME)
            assert info.value.response.status_code == 400 and "inputs" in str(info.value)
            assert await client.is_model_ready(base, "nope") is False
        finally:
            await client.close()

    asyncio.run(run())
    ServerMetadataResponse.model_validate(httpx.get(base + "/v2", timeout=10).json())
    meta = ModelMetadataResponse.model_validate(httpx.get(base + f"/v2/models/{NAME}", timeout=10).json())
    assert meta.versions == [version]


# ------------------------------------------------------------------------------------- versions


def test_a_remote_model_without_a_version_does_not_claim_one() -> None:
    """spec: "Inference servers that do not implement versioning should not provide this field":
    no ``versions``, no ``model_version``, and the versioned paths do not exist."""
    upstream = Upstream()
    with upstream.running():
        settings = ServeSettings(backend="remote", remote_url=upstream.url, remote_model="m", prompt_style="compact",
                                 max_new_tokens=16, max_answer_tokens=8, probe_interval_s=0.2, probe_successes=1)
        with uvicorn_server(build_app(build_model(settings))) as base:
            assert "versions" not in httpx.get(base + f"/v2/models/{NAME}", timeout=10).json()
            r = httpx.post(base + f"/v2/models/{NAME}/infer", json=v2_body(), timeout=30)
            assert r.status_code == 200 and "model_version" not in r.json(), r.text
            assert_error_object(httpx.get(base + f"/v2/models/{NAME}/versions/1", timeout=10), 404)
            settings = settings.model_copy(update={"model_version": "20260101T000000-0123abcd"})
        with uvicorn_server(build_app(build_model(settings))) as base:  # told by RNER_SERVE_MODEL_VERSION (the chart)
            assert httpx.get(base + f"/v2/models/{NAME}", timeout=10).json()["versions"] == ["20260101T000000-0123abcd"]


def test_version_resolution(tmp_path: Path) -> None:
    """The explicit setting (env RNER_SERVE_MODEL_VERSION) > the registry copy's folder name > a digest
    of the model card and config (changes when they change) > none."""
    env = ServeSettings.from_sources(env={"RNER_SERVE_MODEL_VERSION": "v7"})
    assert resolve_version(env, None) == "v7" and resolve_version(ServeSettings(), None) is None
    copy = tmp_path / "models" / "20251231T235959-deadbeef"
    copy.mkdir(parents=True)
    (copy / "config.json").write_text("{}")
    assert resolve_version(ServeSettings(), str(copy)) == "20251231T235959-deadbeef"
    other = tmp_path / "export"
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "README.md").write_text("# card\n")
    first = resolve_version(ServeSettings(), str(other))
    assert first.startswith("md5-") and first == resolve_version(ServeSettings(), str(other))
    (other / "README.md").write_text("# card, retrained\n")
    assert resolve_version(ServeSettings(), str(other)) != first
    assert resolve_version(ServeSettings(), str(tmp_path / "empty")) is None
