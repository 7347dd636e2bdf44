"""templates/servingruntime.yaml: the optional namespaced pin of the Hugging Face runtime."""

from __future__ import annotations

import yaml

from .chart_tools import CRD_DIR, one, render, render_error, template_objects, validate

TEMPLATE = "templates/servingruntime.yaml"
ON = {"servingRuntime": {"enabled": True, "shmSizeLimit": "8Gi"}}


def test_off_by_default() -> None:
    assert template_objects(TEMPLATE) == []


def test_pins_the_runtime_the_predictor_names() -> None:
    objs = render(ON)
    runtime = one(objs, "ServingRuntime")
    isvc = one(objs, "InferenceService")
    assert runtime["metadata"]["name"] == isvc["spec"]["predictor"]["model"]["runtime"] == "kserve-huggingfaceserver"
    assert runtime["metadata"]["namespace"] == isvc["metadata"]["namespace"]
    (container,) = runtime["spec"]["containers"]
    assert container["image"] == isvc["spec"]["predictor"]["model"]["image"]
    assert container["args"] == ["--model_name={{.Name}}"]  # KServe's runtime template, not Helm's
    assert runtime["spec"]["volumes"] == [{"name": "devshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "huggingface"


def test_matches_the_upstream_runtime_shape() -> None:
    upstream = yaml.safe_load((CRD_DIR.parent / "reference-runtimes" / "kserve-huggingfaceserver.yaml").read_text())
    runtime = template_objects(TEMPLATE, ON)[0]
    for key in ("supportedModelFormats", "protocolVersions", "annotations"):
        assert runtime["spec"][key] == upstream["spec"][key], key
    assert runtime["spec"]["containers"][0]["args"] == upstream["spec"]["containers"][0]["args"]


def test_custom_runtime_name() -> None:
    objs = render({**ON, "serving": {"predictor": {"runtime": "rner-hf"}}})
    assert one(objs, "ServingRuntime")["metadata"]["name"] == "rner-hf"
    assert one(objs, "InferenceService")["spec"]["predictor"]["model"]["runtime"] == "rner-hf"


def test_needs_a_runtime_name() -> None:
    assert "servingRuntime.enabled needs serving.predictor.runtime" in render_error(
        {**ON, "serving": {"predictor": {"runtime": None}}})


def test_valid_against_the_crd() -> None:
    assert validate(template_objects(TEMPLATE, ON)) == []
