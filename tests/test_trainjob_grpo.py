"""Multi-node GRPO as a TrainJob: the trainers run the GRPO main, and with server-mode vLLM the
`trl vllm-serve` process is a role of the job (the project's TrainingRuntime has a `vllm` replicated
job). Checked by shape only (no vLLM or cluster here): both objects against the upstream CRDs, the
rules Trainer's and JobSet's webhooks add, the server command against trl's own parser and the
single-node builder, the trainers' URL against the server pod's JobSet hostname, and the trainers'
early health check naming that URL."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reasoning_ner.config import resolve_config
from reasoning_ner.k8s.schema import crd_problems
from reasoning_ner.k8s.trainer_runtime import (
    ANCESTOR_LABEL,
    VLLM_ENTRYPOINT,
    VLLMRuntimeSettings,
    build_vllm_runtime,
    trainjob_problems,
)
from reasoning_ner.k8s.trainjob import TrainJobSettings, build_trainjob, trainjob_name
from reasoning_ner.training.vllm_server import SERVE_COMMAND_ENV, vllm_serve_command
from tests.test_vllm_server import parse_with_trl

NAME = "rner-grpo-run1"
ROOT = f"/shared/trainjobs/{NAME}"
URL = f"http://{NAME}-vllm-0-0.{NAME}:8000"


def settings(**kw: Any) -> TrainJobSettings:
    base = dict(name=NAME, namespace="ml", stage="grpo", num_nodes=2, gpus_per_node=8, profile="qwen3-8b",
                model_dir=f"{ROOT}/sft/model", data_files=[f"{ROOT}/data/conll2003-train.jsonl"],
                output_dir=f"{ROOT}/out", overrides=["grpo.max_steps=50"], lineage_file=f"{ROOT}/lineage.json",
                shared_pvc="reasoning-ner-shared")
    base.update(kw)
    return TrainJobSettings(**base)


def jobs_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runtime's (or the TrainJob's single patch's) replicated jobs by name."""
    spec = obj["spec"]
    if obj["kind"] == "TrainJob":
        (patch,) = spec["runtimePatches"]
        spec = patch["trainingRuntimeSpec"]
    return {j["name"]: j for j in spec["template"]["spec"]["replicatedJobs"]}


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["template"]["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


# ------------------------------------------------------------------------------------ the TrainJob


def test_the_grpo_trainjob_names_the_vllm_runtime_and_validates() -> None:
    obj = build_trainjob(settings())
    assert trainjob_problems(obj) == []
    assert obj["spec"]["runtimeRef"] == {"name": "reasoning-ner-grpo-vllm", "apiGroup": "trainer.kubeflow.org",
                                         "kind": "TrainingRuntime"}
    assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "grpo"
    trainer = obj["spec"]["trainer"]
    assert trainer["command"][:2] == ["accelerate", "launch"] and "--num_processes" in trainer["command"]
    assert trainer["args"] == [
        "-m", "reasoning_ner.training.grpo", "--profile", "qwen3-8b", "--model", f"{ROOT}/sft/model",
        "--data", f"{ROOT}/data/conll2003-train.jsonl", "--out", f"{ROOT}/out", "--lineage", f"{ROOT}/lineage.json",
        "--set", "grpo.max_steps=50", "--set", "grpo.vllm_server_launch=false",
        "--set", f"grpo.vllm_server_base_url={URL}"]
    jobs = jobs_of(obj)
    assert set(jobs) == {"node", "vllm"}
    server = pod(jobs["vllm"])
    (container,) = server["containers"]
    assert container["name"] == "vllm"
    # the server pod mounts the shared volume (the SFT model), with the trainers' placement and security
    for key in ("volumes", "nodeSelector", "tolerations", "securityContext"):
        assert server[key] == pod(jobs["node"])[key], key
    assert container["volumeMounts"] == pod(jobs["node"])["containers"][0]["volumeMounts"]
    server_labels = jobs["vllm"]["template"]["spec"]["template"]["metadata"]["labels"]
    assert server_labels["app.kubernetes.io/component"] == "grpo-vllm"


def test_the_server_command_is_the_single_node_builders_and_trl_parses_it() -> None:
    s = settings(overrides=["grpo.vllm_tensor_parallel_size=1", "grpo.max_completion_length=2048"])
    (container,) = pod(jobs_of(build_trainjob(s))["vllm"])["containers"]
    command = json.loads(env_of(container)[SERVE_COMMAND_ENV])
    cfg = resolve_config(profile="qwen3-8b", overrides=[*s.overrides, "grpo.vllm_server_bind_host=0.0.0.0"])
    assert command == vllm_serve_command(cfg, f"{ROOT}/sft/model")
    args = parse_with_trl(command)
    assert (args.model, args.host, args.port, args.tensor_parallel_size) == (f"{ROOT}/sft/model", "0.0.0.0", 8000, 1)
    assert args.max_model_len == cfg.grpo.max_prompt_length + 2048


def test_the_trainers_url_is_the_server_pods_jobset_hostname() -> None:
    """JobSet names the pod <jobset>-<replicatedJob>-<jobIndex>-<podIndex> in the subdomain <jobset> (the
    TrainJob's name; Trainer's PET_MASTER_ADDR <name>-node-0-0.<name> follows the same rule), and the
    runtime's server container opens and probes the URL's port."""
    s = settings()
    runtime = build_vllm_runtime(s.vllm, "ml")
    jobs = jobs_of(runtime)
    assert list(jobs) == ["vllm", "node"] and jobs["vllm"]["replicas"] == 1
    assert "subdomain" not in runtime["spec"]["template"]["spec"]["network"], "the subdomain is the JobSet's name"
    (server,) = pod(jobs["vllm"])["containers"]
    assert server["ports"] == [{"name": "http", "containerPort": 8000}]
    assert server["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert s.vllm_server_url == URL
    cfg = resolve_config(profile="qwen3-8b", overrides=_sets(build_trainjob(s)))
    assert (cfg.grpo.vllm_server_base_url, cfg.grpo.vllm_server_launch) == (URL, False)


def _sets(obj: dict[str, Any]) -> list[str]:
    args = obj["spec"]["trainer"]["args"]
    return [args[i + 1] for i, a in enumerate(args) if a == "--set"]


def test_the_trainers_main_accepts_the_args_and_fails_early_naming_the_server_url(
        tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GRPO main parses every argument and resolves the config; the trainers' rollout server is the
    role's URL, never one they start, and an unreachable one fails at once naming it."""
    from reasoning_ner.training import vllm_server
    from reasoning_ner.training.grpo import main

    args = build_trainjob(settings())["spec"]["trainer"]["args"][2:]
    lineage = tmp_path / "lineage.json"
    lineage.write_text("{}")
    args = [str(lineage) if a.endswith("lineage.json") else a for a in args]
    args = [str(tmp_path / "sft") if a.endswith("sft/model") else a for a in args]
    assert main(args) == 2  # every argument parses; the run stops at the missing SFT model
    assert "is not a model directory" in capsys.readouterr().err

    monkeypatch.setattr(vllm_server, "launch_vllm_server", lambda *a, **k: pytest.fail("the role runs the server"))
    overrides = [*_sets(build_trainjob(settings())), "grpo.vllm_server_timeout=1"]
    cfg = resolve_config(profile="qwen3-8b", overrides=overrides)
    started = time.monotonic()
    with pytest.raises(vllm_server.VLLMServerError, match=f"no vLLM rollout server at {URL}"):
        with vllm_server.rollout_server(cfg, "/m", "cuda", str(tmp_path)):
            pass
    assert time.monotonic() - started < 10


def test_patches_name_only_what_the_runtime_has() -> None:
    """Trainer's JobSet plugin refuses runtime patches of replicated jobs or containers the runtime lacks,
    and env patches of the `node` container; patches cannot set images, commands or resources at all."""
    s = settings()
    runtime_jobs = jobs_of(build_vllm_runtime(s.vllm, "ml"))
    for name, job in jobs_of(build_trainjob(s)).items():
        assert name in runtime_jobs
        names = {c["name"] for c in pod(runtime_jobs[name])["containers"]}
        for c in pod(job)["containers"]:
            assert c["name"] in names
            assert set(c) <= {"name", "env", "volumeMounts", "securityContext"}
            assert c["name"] != "node" or "env" not in c


@pytest.mark.parametrize("overrides, runtime", [
    (["grpo.vllm_mode=colocate"], "torch-distributed"),
    (["grpo.use_vllm=false"], "torch-distributed"),
    (["grpo.vllm_server_base_url=http://vllm.ml.svc:8000"], "torch-distributed"),  # a server that runs elsewhere
])
def test_without_a_server_role_grpo_runs_on_the_plain_runtime(overrides: list[str], runtime: str) -> None:
    s = settings(overrides=overrides)
    assert not s.vllm_role
    obj = build_trainjob(s)
    assert trainjob_problems(obj) == []
    assert obj["spec"]["runtimeRef"]["name"] == runtime and list(jobs_of(obj)) == ["node"]
    assert _sets(obj) == overrides
    assert build_trainjob(settings(profile="tiny-cpu", overrides=[]))["spec"]["runtimeRef"]["name"] == runtime


def test_sft_is_unchanged_by_the_grpo_fields() -> None:
    sft = dict(stage="sft", model_dir=None, base_model="Qwen/Qwen3-8B-Base", overrides=["sft.max_steps=1"])
    obj = build_trainjob(settings(**sft))
    assert obj["spec"]["trainer"]["args"][:2] == ["-m", "reasoning_ner.training.sft"]
    assert "--no-progress" in obj["spec"]["trainer"]["args"] and list(jobs_of(obj)) == ["node"]
    assert obj["spec"]["runtimeRef"]["name"] == "torch-distributed"


def test_settings_that_cannot_work_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="grpo.vllm_tensor_parallel_size 2 exceeds vllm.gpus 1"):
        settings(overrides=["grpo.vllm_tensor_parallel_size=2"])
    settings(overrides=["grpo.vllm_tensor_parallel_size=2"], vllm=VLLMRuntimeSettings(gpus=2))
    with pytest.raises(ValidationError, match="gpus\n.*needs a GPU of its own"):
        VLLMRuntimeSettings(gpus=0)
    with pytest.raises(ValidationError, match="grpo.vllm_server_port 9000 differs from vllm.port 8000"):
        settings(overrides=["grpo.vllm_server_port=9000"])
    with pytest.raises(ValidationError, match="stage grpo needs model_dir"):
        settings(model_dir=None)
    with pytest.raises(ValidationError, match="base_model is an sft setting"):
        settings(base_model="Qwen/Qwen3-8B")
    with pytest.raises(ValidationError, match="model_dir '/tmp/sft' must be under shared_mount"):
        settings(model_dir="/tmp/sft")
    with pytest.raises(ValidationError, match="model_dir is a grpo setting"):
        settings(stage="sft")
    with pytest.raises(ValidationError, match="grpo.nonsense"):
        settings(overrides=["grpo.nonsense=1"])
    long = "rner-grpo-" + "x" * 40
    with pytest.raises(ValidationError, match="too long for the vLLM server role"):
        settings(name=long)
    assert not settings(name=long, overrides=["grpo.vllm_mode=colocate"]).vllm_role
    settings(name=trainjob_name("3F2504E0-4F89-11D3-9A0C-0305E82C3301", prefix="rner-grpo"))  # a run id fits


# ------------------------------------------------------------------------------------- the runtime


def test_the_runtime_validates_and_keeps_the_webhooks_rules() -> None:
    runtime = build_vllm_runtime(VLLMRuntimeSettings(), "ml")
    assert crd_problems(runtime) == []
    assert runtime["kind"] == "TrainingRuntime" and runtime["metadata"]["namespace"] == "ml"
    spec = runtime["spec"]["template"]["spec"]
    jobs = jobs_of(runtime)
    # Trainer's webhook: the trainer ancestor has one replica and a `node` container
    node = jobs["node"]
    assert node["template"]["metadata"]["labels"] == {ANCESTOR_LABEL: "trainer"} and node.get("replicas", 1) == 1
    assert [c["name"] for c in pod(node)["containers"]] == ["node"]
    # JobSet's webhook: the first replicated job depends on nothing, later ones on earlier ones
    assert "dependsOn" not in spec["replicatedJobs"][0]
    assert node["dependsOn"] == [{"name": "vllm", "status": "Ready"}]
    assert spec["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["node"]}
    (server,) = pod(jobs["vllm"])["containers"]
    assert server["command"] == VLLM_ENTRYPOINT == ["python", "-m", "reasoning_ner.training.vllm_server"]
    assert server["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1}
    assert jobs["vllm"]["template"]["spec"]["backoffLimit"] == 0


def test_the_crd_rules_the_runtime_relies_on_are_checked() -> None:
    good = build_vllm_runtime(VLLMRuntimeSettings(), "ml")
    bad = copy.deepcopy(good)
    bad["spec"]["template"]["spec"]["startupPolicy"] = {"startupPolicyOrder": "InOrder"}
    assert any("mutually exclusive" in p for p in crd_problems(bad))
    bad = copy.deepcopy(good)
    bad["spec"]["mlPolicy"]["mpi"] = {}
    assert any("Only one of the policy" in p for p in crd_problems(bad))
    bad = copy.deepcopy(good)
    bad["spec"]["template"]["spec"]["replicatedJobs"][1]["dependsOn"][0]["status"] = "Running"
    assert any("dependsOn" in p for p in crd_problems(bad))
