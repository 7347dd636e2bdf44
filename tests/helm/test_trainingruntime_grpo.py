"""templates/trainingruntime-grpo.yaml: the TrainingRuntime of multi-node GRPO with a vLLM server role,
exactly the object of reasoning_ner.k8s.trainer_runtime.build_vllm_runtime, and only with multiNode.enabled."""

from __future__ import annotations

from typing import Any

import pytest

from reasoning_ner.k8s.trainer_runtime import VLLMRuntimeSettings, build_vllm_runtime
from reasoning_ner.k8s.trainjob import TrainJobSettings, build_trainjob

from .chart_tools import chart, chart_defaults, render_error, template_objects, validate

TEMPLATE = "templates/trainingruntime-grpo.yaml"
ON = {"multiNode": {"enabled": True, "grpoRuntime": {"enabled": True}}}


def builder_runtime(values: dict[str, Any]) -> dict[str, Any]:
    """build_vllm_runtime for the chart's merged values (the train-gpu image as rner.image makes it)."""
    merged = chart().merge_values(values)
    images = merged["images"]
    tag = images.get("tag") or chart().metadata["appVersion"]
    image = f"{images['registry']}/{images['trainGpu']['repository']}:{tag}"
    if images["trainGpu"].get("digest"):
        image += "@" + images["trainGpu"]["digest"]
    rs = VLLMRuntimeSettings.from_helm_values(merged["multiNode"]["grpoRuntime"], image)
    return build_vllm_runtime(rs, merged["kfp"]["namespace"])


def without_labels(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "labels"}}


def test_off_by_default_and_without_multi_node() -> None:
    assert template_objects(TEMPLATE) == []
    assert template_objects(TEMPLATE, {"multiNode": {"enabled": True}}) == []
    assert "multiNode.grpoRuntime.enabled needs multiNode.enabled" in render_error(
        {"multiNode": {"grpoRuntime": {"enabled": True}}})


@pytest.mark.parametrize("values", [
    ON,
    {"multiNode": {"enabled": True, "grpoRuntime": {"enabled": True, "name": "team-grpo", "vllm": {
        "gpus": 2, "port": 9000, "cpu": 16, "memory": "128Gi", "gpuResourceName": "amd.com/gpu"}}},
     "kfp": {"multiUser": True, "namespace": "team-nlp"},
     "images": {"tag": "sha-0123456789ab", "trainGpu": {"digest": "sha256:" + "c" * 64}}},
])
def test_renders_exactly_the_builders_runtime(values: dict[str, Any]) -> None:
    (runtime,) = template_objects(TEMPLATE, values)
    expected = builder_runtime(values)
    assert without_labels(runtime) == without_labels(expected)
    assert expected["metadata"]["labels"].items() <= runtime["metadata"]["labels"].items()
    assert runtime["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_the_default_values_are_the_builders_defaults() -> None:
    """A GRPO TrainJob built with default settings names the runtime the chart installs by default and
    agrees with its server GPUs and port."""
    section = chart_defaults()["multiNode"]["grpoRuntime"]
    image = VLLMRuntimeSettings().image
    assert VLLMRuntimeSettings.from_helm_values(section, image) == VLLMRuntimeSettings()
    (runtime,) = template_objects(TEMPLATE, ON)
    job = build_trainjob(TrainJobSettings(
        name="rner-grpo-run1", namespace=runtime["metadata"]["namespace"], stage="grpo", profile="qwen3-8b",
        model_dir="/shared/sft/model", data_files=["/shared/train.jsonl"], output_dir="/shared/out",
        shared_pvc="reasoning-ner-shared"))
    assert job["spec"]["runtimeRef"] == {"name": runtime["metadata"]["name"], "apiGroup": "trainer.kubeflow.org",
                                         "kind": "TrainingRuntime"}


def test_schema_refuses_a_server_without_gpus_naming_the_key() -> None:
    message = render_error({"multiNode": {"enabled": True, "grpoRuntime": {"enabled": True, "vllm": {"gpus": 0}}}})
    assert "gpus" in message and "grpoRuntime" in message


def test_valid_against_the_crd() -> None:
    assert validate(template_objects(TEMPLATE, ON)) == []


def test_the_pipelines_run_parameters_default_to_the_charts_runtime() -> None:
    """A run with multi_node_grpo=true and default parameters names the runtime the chart installs by
    default, with its server GPUs; the paper profiles' server port is the runtime's; NOTES say so for
    changed values."""
    import yaml

    from pipelines.reasoning_ner_pipeline import COMPILED
    from reasoning_ner.config import resolve_config

    from .chart_tools import render_files

    section = chart_defaults()["multiNode"]["grpoRuntime"]
    params = next(yaml.safe_load_all(COMPILED.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert params["grpo_vllm_runtime"]["defaultValue"] == section["name"]
    assert params["grpo_vllm_gpus"]["defaultValue"] == section["vllm"]["gpus"]
    for profile in ("qwen3-1.7b", "qwen3-8b"):
        assert resolve_config(profile=profile).grpo.vllm_server_port == section["vllm"]["port"], profile
    notes = render_files({"multiNode": {"enabled": True, "grpoRuntime": {
        "enabled": True, "name": "team-grpo", "vllm": {"gpus": 2, "port": 8001}}}})["templates/NOTES.txt"]
    assert "keep grpo_vllm_runtime=team-grpo and grpo_vllm_gpus=2; the profile's grpo.vllm_server_port must be 8001" in notes
    assert "grpo_vllm_runtime" not in render_files(ON | {"multiNode": {"enabled": True}})["templates/NOTES.txt"]
