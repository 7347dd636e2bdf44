"""The refresh pipeline variant: compiled YAML freshness, its steps and condition, GPU settings, secrets, the CLI."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler
from typer.testing import CliRunner

from pipelines.reasoning_ner_pipeline import SECRETS
from pipelines.refresh_pipeline import (COMPILED, REFRESH_HELP, REFRESH_NAME, refresh_arguments,
                                        refresh_cluster_pipeline, refresh_local_pipeline)
from reasoning_ner.cli import app
from reasoning_ner.config import load_config
from reasoning_ner.images import image


def _compile(pipeline, path: Path) -> list[dict]:
    compiler.Compiler().compile(pipeline, str(path))
    return list(yaml.safe_load_all(path.read_text()))


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> list[dict]:
    return _compile(refresh_cluster_pipeline, tmp_path_factory.mktemp("r") / "refresh.yaml")


def _all_tasks(spec: dict) -> dict[str, dict]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_committed_yaml_is_fresh(docs: list[dict]) -> None:
    assert list(yaml.safe_load_all(COMPILED.read_text())) == docs, (
        "pipelines/refresh_pipeline.yaml is stale: run `rner pipeline compile --variant refresh`")


def test_the_steps_and_no_grpo(docs: list[dict]) -> None:
    spec = docs[0]
    assert spec["pipelineInfo"]["name"] == REFRESH_NAME
    steps = {name for name in _all_tasks(spec) if not name.startswith("condition")}
    assert steps == {"lookup-champion", "fetch-data", "check-window", "skip-refresh", "harvest-traffic", "synthesize-cot",
                     "mix-cot-data", "validate-data", "train-sft", "evaluate-refresh", "promote-refresh", "deploy-model"}


def test_an_empty_window_skips_everything_after_the_check(docs: list[dict]) -> None:
    spec = docs[0]
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"lookup-champion", "fetch-data", "check-window", "condition-branches-1"}
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    conditions = {name: task["triggerPolicy"]["condition"] for name, task in branches.items()}
    empty, refresh = (conditions[n] for n in sorted(conditions))
    assert "pipelinechannel--check-window-usable" in empty and "== 0" in empty
    assert refresh.startswith("!(") and "== 0" in refresh  # the Else branch
    skip_group = spec["components"][branches[sorted(conditions)[0]]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(skip_group) == {"skip-refresh"}
    # the output is whichever branch ran: the skip message or the promotion decision
    assert spec["root"]["dag"]["outputs"]["parameters"]["Output"]["valueFromParameter"]["producerSubtask"] == \
        "condition-branches-1"
    (oneof,) = spec["components"]["comp-condition-branches-1"]["dag"]["outputs"]["parameters"].values()
    assert {s["outputParameterKey"] for s in oneof["valueFromOneof"]["parameterSelectors"]} == {
        "pipelinechannel--skip-refresh-Output", "pipelinechannel--promote-refresh-decision"}


def _source(binding: dict) -> str:
    """``task-output`` of an input: a sibling's output, or an outer task's passed into a condition group."""
    if "taskOutputParameter" in binding:
        return f"{binding['taskOutputParameter']['producerTask']}-{binding['taskOutputParameter']['outputParameterKey']}"
    if "taskOutputArtifact" in binding:
        return f"{binding['taskOutputArtifact']['producerTask']}-{binding['taskOutputArtifact']['outputArtifactKey']}"
    return (binding.get("componentInputParameter") or binding["componentInputArtifact"]).removeprefix("pipelinechannel--")


def test_sft_starts_from_the_champion_on_the_mixed_data(docs: list[dict]) -> None:
    tasks = _all_tasks(docs[0])
    sft = tasks["train-sft"]["inputs"]
    assert _source(sft["parameters"]["base_model"]) == "lookup-champion-model_uri"
    assert _source(sft["artifacts"]["cot"]) == "mix-cot-data-mixed"
    mix = tasks["mix-cot-data"]["inputs"]["artifacts"]
    assert (_source(mix["harvested"]), _source(mix["original"])) == ("harvest-traffic-cot", "synthesize-cot-cot")
    assert _source(tasks["evaluate-refresh"]["inputs"]["artifacts"]["heldout"]) == "harvest-traffic-heldout"
    harvest = tasks["harvest-traffic"]["inputs"]["parameters"]
    assert _source(harvest["since"]) == "check-window-since"  # the window that was checked
    assert _source(harvest["until"]) == "check-window-until"
    assert _source(tasks["promote-refresh"]["inputs"]["parameters"]["zero_shot_tolerance"]) == "zero_shot_tolerance"
    for name in ("check-window", "harvest-traffic", "promote-refresh", "deploy-model"):
        assert tasks[name]["cachingOptions"] == {}, name


def test_gpu_steps_secrets_and_images(docs: list[dict]) -> None:
    spec, platform = docs
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("train-sft", "evaluate-refresh"):
        assert executors[f"exec-{step}"]["container"]["image"] == image("train-gpu")
        assert "accelerator" in executors[f"exec-{step}"]["container"]["resources"]
        assert "nodeSelector" in k8s[f"exec-{step}"] and "tolerations" in k8s[f"exec-{step}"]
    for step in ("lookup-champion", "check-window", "harvest-traffic", "mix-cot-data", "promote-refresh", "skip-refresh"):
        assert executors[f"exec-{step}"]["container"]["image"] == image("cpu")
        assert "accelerator" not in executors[f"exec-{step}"]["container"].get("resources", {})

    def secrets(step: str) -> set[str]:
        return {s["secretName"] for s in k8s[f"exec-{step}"].get("secretAsEnv", [])}

    assert secrets("harvest-traffic") == {SECRETS["teacher"][0], SECRETS["s3"][0]}
    assert SECRETS["s3"][0] in secrets("train-sft")  # the champion's registry copy is on S3
    for step in ("lookup-champion", "check-window", "promote-refresh", "deploy-model"):
        assert SECRETS["s3"][0] in secrets(step), step
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in params if any(w in p.lower() for w in ("token", "secret", "password", "api_key"))]


def test_parameters_are_documented_and_default_to_the_profiles() -> None:
    cluster = inspect.signature(refresh_cluster_pipeline.pipeline_func).parameters
    local = inspect.signature(refresh_local_pipeline.pipeline_func).parameters
    assert list(local) == [name for name in cluster if name in local]
    assert set(cluster) <= set(REFRESH_HELP)
    assert set(cluster) - set(local) == {"accelerator_type", "gpus_per_step", "gpu_node_selector", "gpu_tolerations",
                                         "deploy_namespace", "inference_service", "canary_percent"}
    paper, tiny = refresh_arguments("qwen3-8b"), refresh_arguments("tiny-cpu")
    assert {name: cluster[name].default for name in paper} == paper
    assert {name: local[name].default for name in tiny} == tiny
    cfg = load_config(profile="qwen3-8b")
    assert cluster["zero_shot_tolerance"].default == cfg.promotion.zero_shot_tolerance
    assert cluster["mix_ratio"].default == cfg.refresh.mix_ratio
    assert "mix_ratio: Harvested : original" in refresh_cluster_pipeline.pipeline_func.__doc__


def test_both_variants_use_the_same_component_specs(tmp_path: Path, docs: list[dict]) -> None:
    local = _compile(refresh_local_pipeline, tmp_path / "local.yaml")[0]
    for name, executor in local["deploymentSpec"]["executors"].items():
        for key in ("image", "command", "args"):
            assert executor["container"][key] == docs[0]["deploymentSpec"]["executors"][name]["container"][key], (name, key)
        comp = name.replace("exec-", "comp-")
        assert local["components"][comp] == docs[0]["components"][comp], comp
    assert "exec-deploy-model" not in local["deploymentSpec"]["executors"]


def test_cli_compiles_each_variant(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["pipeline", "compile", "--variant", "refresh", "--out", str(tmp_path / "r.yaml")])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load_all((tmp_path / "r.yaml").read_text()).__next__()["pipelineInfo"]["name"] == REFRESH_NAME
    res = runner.invoke(app, ["pipeline", "compile", "--out", str(tmp_path / "m.yaml")])  # the default is unchanged
    assert res.exit_code == 0 and next(yaml.safe_load_all((tmp_path / "m.yaml").read_text()))["pipelineInfo"]["name"] == \
        "reasoning-ner"
    res = runner.invoke(app, ["pipeline", "compile", "--variant", "weekly"])
    assert res.exit_code != 0 and "weekly" in res.output
    assert json.dumps(REFRESH_HELP)  # the run form's help is plain text
