"""The Kubeflow pipeline: compiled YAML freshness, GPU node-pool settings, secrets, PVC, variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from pipelines.reasoning_ner_pipeline import COMPILED, SECRETS, build_pipeline
from reasoning_ner.config import load_config
from reasoning_ner.images import image

GPU_STEPS = ("train-sft", "train-grpo", "evaluate-model")


def _compile(tmp_path: Path, **kw) -> list[dict]:
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(**kw), str(out))
    return list(yaml.safe_load_all(out.read_text()))


@pytest.fixture(scope="module")
def cluster_docs(tmp_path_factory) -> list[dict]:
    return _compile(tmp_path_factory.mktemp("c"), cluster=True)


def test_committed_yaml_is_fresh(tmp_path: Path) -> None:
    # Compared as YAML: kfp's header comment prints struct defaults in a hash-dependent key order.
    fresh = tmp_path / "fresh.yaml"
    compiler.Compiler().compile(build_pipeline(cluster=True), str(fresh))
    committed = list(yaml.safe_load_all(COMPILED.read_text()))
    assert list(yaml.safe_load_all(fresh.read_text())) == committed, (
        "pipelines/reasoning_ner_pipeline.yaml is stale: run `rner pipeline compile`")


def test_gpu_steps_carry_accelerators_node_selector_and_tolerations(cluster_docs: list[dict]) -> None:
    spec, platform = cluster_docs
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in GPU_STEPS:
        resources = executors[f"exec-{step}"]["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
        # GRPO's rollout server (trl vllm-serve) has a GPU of its own: the step asks for grpo_gpus_per_step
        count = "grpo_gpus_per_step" if step == "train-grpo" else "gpus_per_step"
        assert resources["accelerator"]["resourceCount"] == f"{{{{$.inputs.parameters['pipelinechannel--{count}']}}}}"
        assert resources["cpuLimit"] > 0 and resources["memoryLimit"] > 0
        ex = k8s[f"exec-{step}"]
        # train-sft sits in the multi_node Else branch, where pipeline parameters arrive as channels.
        assert ex["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].removeprefix("pipelinechannel--") \
            == "gpu_node_selector"
        assert ex["tolerations"][0]["tolerationJson"]["componentInputParameter"].removeprefix("pipelinechannel--") \
            == "gpu_tolerations"
        assert executors[f"exec-{step}"]["container"]["image"] == image("train-gpu")
    for step in ("fetch-data", "synthesize-cot", "validate-data", "promote-model", "deploy-model"):
        assert "accelerator" not in executors[f"exec-{step}"]["container"].get("resources", {})
        assert executors[f"exec-{step}"]["container"]["image"] == image("cpu")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gpu_node_selector"]["parameterType"] == "STRUCT"
    assert params["gpu_tolerations"]["parameterType"] == "LIST"


def test_secrets_as_env_and_a_writable_workspace(cluster_docs: list[dict]) -> None:
    _, platform = cluster_docs
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]

    def secret_names(step: str) -> set[str]:
        return {s["secretName"] for s in k8s[f"exec-{step}"].get("secretAsEnv", [])}

    assert secret_names("fetch-data") == {SECRETS["git"][0], SECRETS["s3"][0]}
    assert secret_names("synthesize-cot") == {SECRETS["teacher"][0], SECRETS["s3"][0]}  # s3: NER-CoT records in the bucket
    assert secret_names("train-sft") == {SECRETS["hf"][0]}
    assert SECRETS["s3"][0] in secret_names("promote-model")
    assert all(s.get("optional") for s in k8s["exec-fetch-data"]["secretAsEnv"])
    for step in ("train-sft", "train-grpo"):
        # An emptyDir: kubelet makes it writable for the images' uid 1000 and it needs no StorageClass.
        (mount,) = k8s[f"exec-{step}"]["emptyDirMounts"]
        assert mount["mountPath"] == "/workspace" and "pvcMount" not in k8s[f"exec-{step}"]
    assert not [e for e in cluster_docs[0]["deploymentSpec"]["executors"] if "pvc" in e]  # no CreatePVC/DeletePVC
    params = cluster_docs[0]["root"]["inputDefinitions"]["parameters"]
    assert params["dvc_remote"]["defaultValue"] == "s3"  # the committed remote a pod reaches with the S3 Secret
    assert not [p for p in params if p.startswith("workspace_")]


def test_no_secret_is_a_parameter(cluster_docs: list[dict]) -> None:
    params = cluster_docs[0]["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in params if any(w in p.lower() for w in ("token", "secret", "password", "api_key"))]


def test_both_variants_use_the_same_component_specs(tmp_path: Path, cluster_docs: list[dict]) -> None:
    local_spec = _compile(tmp_path, cluster=False)[0]
    cluster_spec = cluster_docs[0]
    local_exec = local_spec["deploymentSpec"]["executors"]
    cluster_exec = cluster_spec["deploymentSpec"]["executors"]
    shared = set(local_exec)
    assert shared == {f"exec-{s}" for s in ("fetch-data", "synthesize-cot", "validate-data", "train-sft", "train-grpo",
                                             "evaluate-model", "promote-model")}
    for name in shared:
        for key in ("image", "command", "args"):
            assert local_exec[name]["container"][key] == cluster_exec[name]["container"][key], (name, key)
        comp = name.replace("exec-", "comp-")
        assert local_spec["components"][comp] == cluster_spec["components"][comp], comp
    assert "exec-deploy-model" in cluster_exec


def test_caching_off_for_promote_and_deploy(cluster_docs: list[dict]) -> None:
    spec = cluster_docs[0]
    tasks = spec["root"]["dag"]["tasks"]
    nested = {name: task for comp in spec["components"].values() for name, task in comp.get("dag", {}).get("tasks", {}).items()}
    assert tasks["promote-model"]["cachingOptions"] == {}
    assert nested["deploy-model"]["cachingOptions"] == {}
    assert {**tasks, **nested}["train-sft"]["cachingOptions"] == {"enableCache": True}
    (gate,) = [t for t in tasks.values() if "promote-model" in json.dumps(t.get("triggerPolicy", {}))]
    assert gate["componentRef"]["name"] in spec["components"]


def test_training_waits_for_the_registry_check(cluster_docs: list[dict]) -> None:
    spec = cluster_docs[0]
    root = spec["root"]["dag"]["tasks"]
    assert root["check-registry"]["inputs"]["parameters"]["registry_uri"] == {"componentInputParameter": "registry_uri"}

    def contains(comp_name: str, step: str) -> bool:  # the task, or a condition group holding it
        tasks = spec["components"][comp_name].get("dag", {}).get("tasks", {})
        return step in tasks or any(contains(t["componentRef"]["name"], step) for t in tasks.values())

    for step in ("train-sft", "submit-trainjob"):
        (group,) = [t for t in root.values() if contains(t["componentRef"]["name"], step)]
        assert "check-registry" in group["dependentTasks"], step


def test_both_pipelines_are_plain_functions_with_the_same_shared_parameters() -> None:
    """The run form's fields are the functions' own signatures; the local variant has the cluster's
    parameters minus the Kubernetes-only ones, and its defaults come from tiny-cpu."""
    import inspect

    from pipelines.reasoning_ner_pipeline import HELP, cluster_pipeline, local_pipeline, profile_arguments

    cluster = inspect.signature(cluster_pipeline.pipeline_func).parameters
    local = inspect.signature(local_pipeline.pipeline_func).parameters
    assert list(local) == [name for name in cluster if name in local] and set(cluster) == set(HELP)
    assert set(cluster) - set(local) >= {"accelerator_type", "gpu_node_selector", "deploy_namespace", "multi_node"}
    tiny = profile_arguments("tiny-cpu")
    assert {name: local[name].default for name in tiny} == tiny


def test_parameter_defaults_come_from_the_profile(cluster_docs: list[dict]) -> None:
    cfg = load_config(profile="qwen3-8b")
    params = cluster_docs[0]["root"]["inputDefinitions"]["parameters"]
    assert params["base_model"]["defaultValue"] == cfg.model.base_model
    assert params["grpo_group_size"]["defaultValue"] == cfg.grpo.num_generations
    assert params["grpo_learning_rate"]["defaultValue"] == cfg.grpo.learning_rate
    assert params["sft_learning_rate"]["defaultValue"] == cfg.sft.learning_rate
    assert params["judge_threshold"]["defaultValue"] == cfg.cot.judge_threshold
    # every component documents itself for the dashboard
    for comp in cluster_docs[0]["components"].values():
        if "executorLabel" in comp:
            assert comp.get("inputDefinitions"), comp["executorLabel"]
    assert "CoT synthesis" in cluster_docs[0]["pipelineInfo"]["description"]


def test_every_component_folder_documents_its_inputs_and_outputs() -> None:
    """components/<name>/README.md (what it does, inputs, outputs) lists exactly the component's
    inputs and outputs, so a renamed or new parameter cannot go undocumented."""
    import importlib
    import pkgutil
    import re

    import components

    names = [m.name for m in pkgutil.iter_modules(components.__path__)]
    assert len(names) >= 10
    for name in names:
        spec = getattr(importlib.import_module(f"components.{name}.component"), name).component_spec
        readme = (Path(components.__path__[0]) / name / "README.md").read_text()
        inputs, outputs = readme.split("## Inputs", 1)[1].split("## Outputs", 1)
        listed = lambda section: re.findall(r"^\| `(\w+)` \|", section, flags=re.M)  # noqa: E731
        assert listed(inputs) == list(spec.inputs or {}), name
        assert listed(outputs) == list(spec.outputs or {}), name
        assert all(row.count("|") == 4 and not row.endswith("|  |") for row in readme.splitlines() if row.startswith("| `")), name
