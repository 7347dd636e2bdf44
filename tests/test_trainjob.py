"""Multi-node SFT: the TrainJob builder (validated against the upstream CRD), the client code that creates
and follows it (real Kubernetes client against a stub API server on 127.0.0.1), and the pipeline
component end to end (the stub "cluster" runs the TrainJob's own command on this CPU)."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reasoning_ner.images import image
from reasoning_ner.k8s.trainer_runtime import API_VERSION, RESERVED_ENV, VLLMRuntimeSettings, phase, trainjob_problems
from reasoning_ner.k8s.trainjob import ACCELERATE_CONFIG, PATCH_MANAGER, TrainJobSettings, build_trainjob, trainjob_name
from tests.stubs import Reply, StubAPIServer, k8s_status

NS = "ml"
TOKEN = "test-token"
COLLECTION = f"/apis/{API_VERSION}/namespaces/{NS}/trainjobs"


def settings(**kw: Any) -> TrainJobSettings:
    base = dict(name="rner-sft-run1", namespace=NS, num_nodes=2, gpus_per_node=8, profile="qwen3-8b",
                data_files=["/shared/trainjobs/rner-sft-run1/data/accepted.jsonl"],
                output_dir="/shared/trainjobs/rner-sft-run1/out", base_model="Qwen/Qwen3-8B-Base",
                overrides=["sft.finetune=full", "sft.max_steps=100"],
                lineage_file="/shared/trainjobs/rner-sft-run1/lineage.json", shared_pvc="reasoning-ner-shared")
    base.update(kw)
    return TrainJobSettings(**base)


def pod_patch(obj: dict[str, Any]) -> dict[str, Any]:
    (patch,) = obj["spec"]["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    return job["template"]["spec"]["template"]["spec"]


# ------------------------------------------------------------------------------------------ builder


def test_trainjob_validates_against_the_crd_and_runs_accelerate_with_deepspeed() -> None:
    obj = build_trainjob(settings())
    assert trainjob_problems(obj) == []
    assert obj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and obj["kind"] == "TrainJob"
    spec = obj["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    trainer = spec["trainer"]
    assert trainer["image"] == image("train-gpu")
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 8
    assert trainer["command"] == [
        "accelerate", "launch", "--config_file", ACCELERATE_CONFIG, "--num_machines", "2", "--num_processes", "16",
        "--machine_rank", "$(PET_NODE_RANK)", "--main_process_ip", "$(PET_MASTER_ADDR)",
        "--main_process_port", "$(PET_MASTER_PORT)"]
    assert trainer["args"] == [
        "-m", "reasoning_ner.training.sft", "--profile", "qwen3-8b",
        "--data", "/shared/trainjobs/rner-sft-run1/data/accepted.jsonl", "--out", "/shared/trainjobs/rner-sft-run1/out",
        "--no-progress", "--base-model", "Qwen/Qwen3-8B-Base", "--lineage", "/shared/trainjobs/rner-sft-run1/lineage.json",
        "--set", "sft.finetune=full", "--set", "sft.max_steps=100"]
    env = {e["name"]: e for e in trainer["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "reasoning-ner-hf", "key": "token", "optional": True}
    assert not set(env) & RESERVED_ENV, "Trainer's torch plugin refuses PET_* in spec.trainer.env"
    pod = pod_patch(obj)
    assert obj["spec"]["runtimePatches"][0]["manager"] == PATCH_MANAGER
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert {"name": "shared", "persistentVolumeClaim": {"claimName": "reasoning-ner-shared"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert container["name"] == "node"
    assert {"name": "shared", "mountPath": "/shared"} in container["volumeMounts"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_accelerate_config_ships_in_the_image_and_matches_the_path() -> None:
    repo = Path(__file__).resolve().parents[1]
    assert ACCELERATE_CONFIG == "/app/configs/accelerate/deepspeed_zero3.yaml"
    assert (repo / "configs" / "accelerate" / "deepspeed_zero3.yaml").is_file()
    dockerfile = (repo / "images" / "train-gpu" / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and "COPY configs ./configs" in dockerfile


def test_commands_parse_with_accelerate_and_the_sft_entry_point(tmp_path: Path, capsys: Any) -> None:
    """The launcher flags are accelerate's own; the script arguments are the SFT main's (and resolve)."""
    from accelerate.commands.launch import launch_command_parser

    obj = build_trainjob(settings())
    trainer = obj["spec"]["trainer"]
    kubelet = {"PET_NODE_RANK": "1", "PET_MASTER_ADDR": "rner-sft-run1-node-0-0.rner-sft-run1", "PET_MASTER_PORT": "29400"}
    argv = [re.sub(r"\$\((\w+)\)", lambda m: kubelet[m.group(1)], a) for a in trainer["command"][2:] + trainer["args"]]
    ns = launch_command_parser().parse_args(argv)
    assert (ns.num_machines, ns.num_processes, ns.machine_rank) == (2, 16, 1)
    assert ns.main_process_ip == kubelet["PET_MASTER_ADDR"] and ns.main_process_port == 29400
    assert ns.module and ns.training_script == "reasoning_ner.training.sft"
    assert ns.training_script_args == trainer["args"][2:]

    from reasoning_ner.training.sft import main

    missing = str(tmp_path / "missing.jsonl")
    script = [missing if a.endswith("accepted.jsonl") else a for a in ns.training_script_args]
    script = [str(tmp_path / "lineage.json") if a.endswith("lineage.json") else a for a in script]
    (tmp_path / "lineage.json").write_text("{}")
    # argparse accepts every argument and the profile + overrides resolve: the run stops at the data check.
    assert main(script) == 2
    assert f"training file {missing} does not exist" in capsys.readouterr().err


def test_torchrun_launcher_and_single_node() -> None:
    obj = build_trainjob(settings(launcher="torchrun", num_nodes=1, gpus_per_node=4, base_model=None,
                                  lineage_file=None, overrides=[]))
    assert trainjob_problems(obj) == []
    trainer = obj["spec"]["trainer"]
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"][:2] == ["-m", "reasoning_ner.training.sft"] and "--base-model" not in trainer["args"]
    assert trainer["numNodes"] == 1 and trainer["numProcPerNode"] == 4


def test_crd_schema_refuses_what_the_api_server_would() -> None:
    good = build_trainjob(settings())

    def problems(mutate) -> list[str]:
        obj = copy.deepcopy(good)
        mutate(obj)
        return trainjob_problems(obj)

    assert any("podTemplateOverrides" in p for p in problems(
        lambda o: o["spec"].__setitem__("podTemplateOverrides", [])))  # the old API, gone in this CRD
    assert any("numProcPerNode must be greater than or equal to 1" in p for p in problems(
        lambda o: o["spec"]["trainer"].__setitem__("numProcPerNode", 0)))
    assert any("RFC 1035" in p for p in problems(lambda o: o["metadata"].__setitem__("name", "1-sft")))
    assert any("63 characters" in p for p in problems(lambda o: o["metadata"].__setitem__("name", "a" * 64)))
    assert any("'image' was unexpected" in p for p in problems(
        lambda o: pod_patch(o)["containers"][0].__setitem__("image", "x")))  # patches may not change images
    assert any("ManagedBy must be" in p for p in problems(lambda o: o["spec"].__setitem__("managedBy", "me")))
    assert any("runtimeRef" in p and "required" in p for p in problems(lambda o: o["spec"].pop("runtimeRef")))


def test_settings_refuse_what_cannot_run() -> None:
    with pytest.raises(ValidationError, match="RFC 1035"):
        settings(name="SFT_run")
    with pytest.raises(ValidationError, match="torch plugin"):
        settings(env={"PET_NNODES": "4"})
    with pytest.raises(ValidationError, match="under shared_mount"):
        settings(data_files=["/tmp/accepted.jsonl"])
    with pytest.raises(ValidationError, match="under shared_mount"):
        settings(output_dir="/shared/../etc/out")
    with pytest.raises(ValidationError, match="Kubernetes quantity"):
        settings(memory_per_node="lots")
    with pytest.raises(ValidationError):
        settings(gpus_per_node=0)


def test_trainjob_name_is_deterministic_and_valid() -> None:
    run = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
    name = trainjob_name(run)
    assert name == trainjob_name(run) == "rner-sft-3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert len(trainjob_name("x" * 200)) <= 63
    settings(name=trainjob_name("x" * 200))


def test_the_library_never_imports_the_kubernetes_client() -> None:
    code = ("import sys, reasoning_ner.k8s.trainjob, components.submit_trainjob.trainjob_client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'jsonschema', 'kfp')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    assert out == "[]"


def test_phase_from_conditions() -> None:
    def job(*conds: tuple[str, str]) -> dict[str, Any]:
        return {"status": {"conditions": [{"type": t, "status": s} for t, s in conds]}}

    assert phase({}) == "Running"
    assert phase(job(("Created", "True"))) == "Running"
    assert phase(job(("Suspended", "True"))) == "Suspended"
    assert phase(job(("Created", "True"), ("Complete", "True"))) == "Complete"
    assert phase(job(("Complete", "False"), ("Failed", "True"))) == "Failed"


# -------------------------------------------------------------------------------- pipeline wiring


def _all_dag_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_pipeline_runs_sft_and_grpo_as_trainjobs_when_multi_node(tmp_path: Path) -> None:
    import yaml
    from kfp import compiler

    from pipelines.reasoning_ner_pipeline import build_pipeline

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(cluster=True), str(out))
    spec, platform = list(yaml.safe_load_all(out.read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["multi_node"]["defaultValue"] is False and params["multi_node_grpo"]["defaultValue"] is False
    assert params["grpo_vllm_runtime"]["defaultValue"] == VLLMRuntimeSettings().name, "the chart's default runtime"
    tasks = _all_dag_tasks(spec)
    submit, sft, grpo = tasks["submit-trainjob"], tasks["train-sft"], tasks["train-grpo"]
    submit_grpo = tasks["submit-grpo-trainjob"]
    # Two exclusive branches per switch, each pair joined with dsl.OneOf into the next stage's input.
    branches = {name: t for name, t in spec["root"]["dag"]["tasks"].items() if name.startswith("condition-branches")}
    assert len(branches) == 2
    for switch in ("multi_node", "multi_node_grpo"):
        conds = [t["triggerPolicy"]["condition"] for t in tasks.values()
                 if f"['pipelinechannel--{switch}']" in t.get("triggerPolicy", {}).get("condition", "")]
        assert len(conds) == 2 and any(c.startswith("!(") for c in conds), (switch, conds)
    sft_in = [grpo["inputs"]["artifacts"]["sft_model"], submit_grpo["inputs"]["artifacts"]["sft_model"]]
    assert all("oneof" in json.dumps(a) for a in sft_in), "both GRPO branches start from the SFT OneOf"
    for consumer in ("evaluate-model", "promote-model"):
        model_in = spec["root"]["dag"]["tasks"][consumer]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
        assert model_in["producerTask"].startswith("condition-branches") and "oneof" in model_in["outputArtifactKey"]
    executors = spec["deploymentSpec"]["executors"]
    for name in ("exec-submit-trainjob", "exec-submit-grpo-trainjob"):
        assert executors[name]["container"]["image"] == image("cpu")
        assert "accelerator" not in executors[name]["container"].get("resources", {})
    for name in ("exec-train-sft", "exec-train-grpo"):
        assert executors[name]["container"]["image"] == image("train-gpu")
        assert "accelerator" in executors[name]["container"]["resources"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-submit-trainjob", "exec-submit-grpo-trainjob"):
        (mount,) = k8s[name]["pvcMount"]
        assert mount["mountPath"] == "/shared" and "shared_pvc" in json.dumps(mount["pvcNameParameter"])
    for step in (submit, submit_grpo):
        assert step["inputs"]["parameters"]["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
        assert step["inputs"]["parameters"]["image"] == {"runtimeValue": {"constant": image("train-gpu")}}
    assert submit_grpo["inputs"]["parameters"]["vllm_runtime"]["componentInputParameter"].endswith("grpo_vllm_runtime")
    sft_branches = next(t for t in branches.values() if "validate-data" in t["dependentTasks"])
    assert "check-registry" in sft_branches["dependentTasks"], "both SFT branches train only on validated data"
    assert sft["componentRef"]["name"] == "comp-train-sft"


# ---------------------------------------------------------------------------- stub API server


def _condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason or kind, "message": message,
            "lastTransitionTime": "2026-11-25T00:00:00Z"}


class FakeTrainer(StubAPIServer):
    """Just enough of the API server for TrainJobs, recording every request.

    ``script``: the status conditions returned by successive GETs (the last one repeats).
    ``run``: instead, execute the created TrainJob's trainer command on this machine (one node, one
    process, kubelet-style ``$(VAR)`` expansion) and report Complete / Failed by its exit code.
    ``sigterm_on_get``: send SIGTERM to this process on that GET (a cancelled pipeline step).
    ``pods``: pods readable in ``NS`` by name (the submitting step reads its own).
    """

    def __init__(self, script: list[list[dict[str, Any]]] | None = None, existing: dict[str, Any] | None = None,
                 reject: int | None = None, run: dict[str, Any] | None = None, sigterm_on_get: int | None = None,
                 failing_gets: dict[int, int] | None = None, pods: dict[str, dict[str, Any]] | None = None):
        self.pods = pods or {}
        self.failing_gets = failing_gets or {}  # GET number -> HTTP status to answer instead
        self.script = script or [[_condition("Created")], [_condition("Created"), _condition("Complete")]]
        self.objects: dict[str, dict[str, Any]] = {}
        if existing:
            self.objects[existing["metadata"]["name"]] = existing
        self.reject = reject
        self.run = run
        self.sigterm_on_get = sigterm_on_get
        self.gets = 0
        self.proc: subprocess.Popen | None = None
        super().__init__()

    def _status(self, name: str) -> dict[str, Any]:
        if self.run is None:
            conds = self.script[min(self.gets - 1, len(self.script) - 1)]
            return {"conditions": conds}
        code = self.proc.poll() if self.proc else None
        if code is None:
            return {"conditions": [_condition("Created")]}
        if code == 0:
            return {"conditions": [_condition("Created"), _condition("Complete", "JobsCompleted")]}
        return {"conditions": [_condition("Created"), _condition("Failed", "JobsFailed", f"exit code {code}")]}

    def _start(self, obj: dict[str, Any]) -> None:
        trainer = obj["spec"]["trainer"]
        env = dict(os.environ)
        env.update({e["name"]: e["value"] for e in trainer["env"] if "value" in e})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env.update({"PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0",
                    "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port), **self.run["env"]})
        argv = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a)
                for a in trainer["command"] + trainer["args"]]
        argv[0] = str(Path(sys.executable).with_name(argv[0]))  # the venv's torchrun
        self.argv = argv
        self.proc = subprocess.Popen(argv, env=env, cwd=self.run["cwd"], stdout=self.run["log"], stderr=subprocess.STDOUT)

    def route(self, r: dict[str, Any]) -> Reply:
        method, path, body = r["method"], r["path"], r["body"]
        name = path.rsplit("/", 1)[-1]
        if path.startswith(f"/api/v1/namespaces/{NS}/pods/"):
            if method == "GET" and name in self.pods:
                return 200, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                             "spec": {"containers": [{"name": "main", "image": image("cpu")}], **self.pods[name]}}
            return (404, k8s_status(404, "NotFound")) if method == "GET" else (405, k8s_status(405))
        if method == "POST":
            if path != COLLECTION:
                return 404, k8s_status(404)
            if self.reject:
                return self.reject, k8s_status(self.reject, "Invalid", "TrainJob.trainer.kubeflow.org is invalid: spec.trainer")
            name = body["metadata"]["name"]
            if name in self.objects:
                return 409, k8s_status(409, "AlreadyExists")
            obj = copy.deepcopy(body)
            obj["metadata"].update({"uid": "uid-1", "resourceVersion": "1", "generation": 1})
            obj["status"] = {}
            self.objects[name] = obj
            if self.run is not None:
                self._start(obj)
            return 201, obj
        if not path.startswith(COLLECTION + "/") or name not in self.objects:
            return 404, k8s_status(404, "NotFound")
        if method == "GET":
            self.gets += 1
            if self.gets in self.failing_gets:
                code = self.failing_gets[self.gets]
                return code, k8s_status(code, "ServiceUnavailable")
            if self.sigterm_on_get == self.gets:  # shortly after this answer, while the client waits
                threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
            obj = copy.deepcopy(self.objects[name])
            obj["status"] = self._status(name)
            return 200, obj
        if method == "DELETE":
            del self.objects[name]
            return 200, {"kind": "Status", "status": "Success"}
        return 405, k8s_status(405)

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()

    def api_client(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.api_key = {"authorization": TOKEN}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)



def _run(fake: FakeTrainer, obj: dict[str, Any], **kw: Any):
    from components.submit_trainjob.trainjob_client import run_trainjob

    kw.setdefault("poll_s", 0.01)
    return run_trainjob(obj, api_client=fake.api_client(), log=lambda m: None, **kw)


ITEM = f"{COLLECTION}/rner-sft-run1"


def test_pull_secrets_reach_the_training_pods() -> None:
    obj = build_trainjob(settings(image_pull_secrets=["ghcr-pull", "mirror-pull"]))
    assert pod_patch(obj)["imagePullSecrets"] == [{"name": "ghcr-pull"}, {"name": "mirror-pull"}]
    assert trainjob_problems(obj) == [], "imagePullSecrets is a field the runtime patch allows"
    assert "imagePullSecrets" not in pod_patch(build_trainjob(settings()))
    with pytest.raises(ValidationError, match="not a Secret name"):
        settings(image_pull_secrets=["Bad_Name"])


def test_the_submitting_step_reads_its_own_pull_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from components.submit_trainjob.trainjob_client import own_pod_pull_secrets

    notes: list[str] = []
    with FakeTrainer(pods={"run-42-submit": {"imagePullSecrets": [{"name": "ghcr-pull"}]}}) as fake:
        monkeypatch.delenv("KFP_POD_NAME", raising=False)
        assert own_pod_pull_secrets(NS, fake.api_client()) == [], "not in a pipeline pod: none, and no request"
        assert fake.requests == []
        monkeypatch.setenv("KFP_POD_NAME", "run-42-submit")
        assert own_pod_pull_secrets(NS, fake.api_client(), notes.append) == ["ghcr-pull"]
        assert fake.calls() == [("GET", f"/api/v1/namespaces/{NS}/pods/run-42-submit")]
        monkeypatch.setenv("KFP_POD_NAME", "someone-else")
        assert own_pod_pull_secrets(NS, fake.api_client(), notes.append) == []
    assert notes and "404" in notes[0] and "no imagePullSecrets" in notes[0]


def test_client_creates_then_polls_until_complete() -> None:
    obj = build_trainjob(settings())
    with FakeTrainer() as fake:
        result = _run(fake, obj)
    assert fake.calls() == [("POST", COLLECTION), ("GET", ITEM), ("GET", ITEM)]
    post = fake.requests[0]
    assert post["body"] == obj, "the API server receives exactly the built TrainJob"
    assert post["query"] == {"fieldManager": ["rner-submit-trainjob"]}
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in fake.requests)
    assert result.state == "Complete" and not result.attached and not result.deleted and result.polls == 2
    assert phase(result.final) == "Complete"


def test_failed_trainjob_raises_and_is_kept_for_its_logs() -> None:
    from components.submit_trainjob.trainjob_client import TrainJobFailed

    failed = [[_condition("Created")], [_condition("Created"), _condition("Failed", "JobsFailed", "node-1 OOMKilled")]]
    with FakeTrainer(script=failed) as fake, pytest.raises(TrainJobFailed, match="JobsFailed: node-1 OOMKilled") as err:
        _run(fake, build_trainjob(settings()))
    assert fake.calls() == [("POST", COLLECTION), ("GET", ITEM), ("GET", ITEM)]
    assert err.value.result.state == "Failed" and not err.value.result.deleted
    with FakeTrainer(script=failed) as fake, pytest.raises(TrainJobFailed):
        _run(fake, build_trainjob(settings()), delete_on_failure=True)
    assert fake.calls()[-1] == ("DELETE", ITEM)


def test_timeout_deletes_the_trainjob_with_foreground_propagation() -> None:
    from components.submit_trainjob.trainjob_client import TrainJobTimeout

    with FakeTrainer(script=[[_condition("Created")]]) as fake, pytest.raises(TrainJobTimeout, match="within") as err:
        _run(fake, build_trainjob(settings()), timeout_s=0.2, poll_s=0.02)
    assert fake.calls()[0] == ("POST", COLLECTION) and fake.calls()[-1] == ("DELETE", ITEM)
    assert {m for m, _ in fake.calls()[1:-1]} == {"GET"}
    assert fake.requests[-1]["body"]["propagationPolicy"] == "Foreground"
    assert err.value.result.state == "TimedOut" and err.value.result.deleted


def test_sigterm_cancels_and_deletes_the_trainjob() -> None:
    """KFP stops a cancelled step's pod with SIGTERM: the TrainJob must not outlive it."""
    from components.submit_trainjob.trainjob_client import TrainJobCancelled

    before = signal.getsignal(signal.SIGTERM)
    with FakeTrainer(script=[[_condition("Created")]], sigterm_on_get=1) as fake, \
            pytest.raises(TrainJobCancelled) as err:
        _run(fake, build_trainjob(settings()), poll_s=5.0)  # the signal must interrupt the 5 s wait
    assert fake.calls() == [("POST", COLLECTION), ("GET", ITEM), ("DELETE", ITEM)]
    assert err.value.result.state == "Cancelled" and err.value.result.seconds < 4
    assert signal.getsignal(signal.SIGTERM) == before, "the previous SIGTERM handler is restored"


def test_retried_step_reattaches_to_the_existing_trainjob() -> None:
    obj = build_trainjob(settings())
    with FakeTrainer(existing=copy.deepcopy(obj)) as fake:
        result = _run(fake, obj)
    # 409 on create -> read the existing one -> poll it (Complete on the second read).
    assert fake.calls() == [("POST", COLLECTION), ("GET", ITEM), ("GET", ITEM)]
    assert result.attached and result.state == "Complete" and result.polls == 1


def test_transient_read_errors_are_waited_out_but_a_vanished_trainjob_is_an_error() -> None:
    from components.submit_trainjob.trainjob_client import TrainJobError

    obj = build_trainjob(settings())
    with FakeTrainer(failing_gets={1: 503, 2: 429}) as fake:
        result = _run(fake, obj)
    assert result.state == "Complete" and [m for m, _ in fake.calls()].count("GET") == 3  # 503, 429, Complete
    assert sum("retrying" in e for e in result.events) == 2
    with FakeTrainer(failing_gets={1: 404}) as fake, pytest.raises(TrainJobError, match="was deleted"):
        _run(fake, obj)
    with FakeTrainer(failing_gets={1: 503, 2: 503}) as fake, pytest.raises(Exception, match="503"):
        _run(fake, obj, max_read_errors=1)


def test_a_refused_trainjob_names_the_api_servers_reason() -> None:
    from components.submit_trainjob.trainjob_client import TrainJobError

    with FakeTrainer(reject=422) as fake, pytest.raises(TrainJobError, match="422 .*is invalid: spec.trainer"):
        _run(fake, build_trainjob(settings()))
    assert fake.calls() == [("POST", COLLECTION)]


# ------------------------------------------------------------------------------ component end to end


def _micro_base(tmp_path: Path, prepared_dir: Path) -> Path:
    from reasoning_ner.config import TinyModelConfig
    from reasoning_ner.modeling import init_tiny

    base = tmp_path / "micro-base"
    init_tiny(base, TinyModelConfig(vocab_size=800, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=1, tokenizer_corpus_limit=500),
              data_dir=prepared_dir)
    return base


@contextmanager
def _stub_cluster(tmp_path: Path, monkeypatch: Any) -> Iterator[FakeTrainer]:
    """A FakeTrainer that runs the TrainJob's own command on this CPU, reached through a kubeconfig (the
    real client's config path) from a step pod whose own pull Secret is ``ghcr-pull``."""
    log = open(tmp_path / "node-0.log", "wb")
    cwd = tmp_path / "app"  # the image's WORKDIR: no params.yaml there
    cwd.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KFP_POD_NAME", "run-42-submit-trainjob")  # KFP's downward-API variable
    pods = {"run-42-submit-trainjob": {"imagePullSecrets": [{"name": "ghcr-pull"}]}}
    with FakeTrainer(run={"cwd": cwd, "log": log, "env": {"HOME": str(home), "OMP_NUM_THREADS": "1"}}, pods=pods) as fake:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": fake.url}}],
            "users": [{"name": "pipeline", "user": {"token": TOKEN}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "pipeline", "namespace": NS}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        try:
            yield fake
        finally:
            log.close()
    assert fake.proc is not None and fake.proc.returncode == 0, (tmp_path / "node-0.log").read_text()[-3000:]


def _outputs(tmp_path: Path) -> dict[str, Any]:
    from kfp.dsl import HTML, Metrics, Model

    return {"model": Model(name="model", uri=str(tmp_path / "out-model")),
            "metrics": Metrics(name="metrics", uri=str(tmp_path / "metrics")),
            "curves": HTML(name="curves", uri=str(tmp_path / "curves.html"))}


#: The cluster parameters both submitting steps take, as the pipeline passes them.
CLUSTER_ARGS = dict(num_nodes=1, gpus_per_node=1, accelerator_type="nvidia.com/gpu", node_selector={"pool": "gpu"},
                    tolerations=[], shared_pvc="reasoning-ner-shared", run_id="run-42", namespace=NS,
                    runtime="torch-distributed", timeout_hours=0.05, poll_seconds=0.2, launcher="torchrun",
                    image=image("train-gpu", "sha-0123456789ab"))


def _check_created_job(fake: FakeTrainer, name: str) -> dict[str, Any]:
    (post,) = [r for r in fake.requests if r["method"] == "POST"]
    job = post["body"]
    assert job["metadata"]["name"] == name and job["metadata"]["namespace"] == NS
    assert trainjob_problems(job) == []
    assert pod_patch(job)["nodeSelector"] == {"pool": "gpu"}
    assert pod_patch(job)["imagePullSecrets"] == [{"name": "ghcr-pull"}], "the step's own pull Secrets"
    assert job["spec"]["trainer"]["image"] == image("train-gpu", "sha-0123456789ab"), "the image the pipeline passed"
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in fake.requests)
    return job


def test_component_trains_through_a_trainjob_end_to_end(tmp_path: Path, prepared_dir: Path, monkeypatch: Any) -> None:
    """submit_trainjob as the pipeline runs it: stage data on the "shared volume", create the TrainJob
    through a kubeconfig, and collect the model the TrainJob's own command (torchrun -m
    reasoning_ner.training.sft ..., one CPU process) writes there."""
    from kfp.dsl import Dataset
    from transformers import AutoModelForCausalLM

    from components.submit_trainjob.component import submit_trainjob
    from reasoning_ner.cot.offline import offline_chain
    from reasoning_ner.records import read_records, write_jsonl

    base = _micro_base(tmp_path, prepared_dir)
    cot_dir = tmp_path / "cot"
    cot_dir.mkdir()
    recs = read_records(prepared_dir / "conll2003" / "train.jsonl")[:48]
    for rec in recs:
        rec.cot = offline_chain(rec, "compact")
    write_jsonl(cot_dir / "accepted.jsonl", recs)
    prep_dir = tmp_path / "prepared"
    prep_dir.mkdir()
    (prep_dir / "lineage.json").write_text(json.dumps({"commit": "abc123", "md5": "m"}))
    shared = tmp_path / "shared"
    shared.mkdir()
    out = _outputs(tmp_path)
    with _stub_cluster(tmp_path, monkeypatch) as fake:
        submit_trainjob.python_func(
            cot=Dataset(name="cot", uri=str(cot_dir), metadata={"accepted": len(recs)}),
            prepared=Dataset(name="prepared", uri=str(prep_dir)),
            profile="tiny-cpu", base_model=str(base), use_lora=False, epochs=0.0, learning_rate=0.0, max_steps=2,
            shared_dir=str(shared), **CLUSTER_ARGS, **out)
    model, metrics, curves = out["model"], out["metrics"], out["curves"]
    _check_created_job(fake, "rner-sft-run-42")
    assert fake.argv[1:3] == ["-m", "reasoning_ner.training.sft"]
    assert f"--data {shared}/trainjobs/rner-sft-run-42/data/accepted.jsonl" in " ".join(fake.argv)
    assert AutoModelForCausalLM.from_pretrained(model.path) is not None
    assert json.loads((Path(model.path) / "lineage.json").read_text())["data"]["commit"] == "abc123"
    assert model.metadata["trainjob"] == f"{NS}/rner-sft-run-42" and model.metadata["steps"] == 2
    assert metrics.metadata["steps"] == 2
    assert "TrainJob ml/rner-sft-run-42" in Path(curves.path).read_text()
    assert (shared / "trainjobs" / "rner-sft-run-42" / "trainjob-result.json").is_file()


def test_grpo_component_trains_through_a_trainjob_end_to_end(tmp_path: Path, prepared_dir: Path,
                                                             monkeypatch: Any) -> None:
    """submit_grpo_trainjob as the pipeline runs it: the SFT model and the RL pool staged on the
    "shared volume", the TrainJob's own command (torchrun -m reasoning_ner.training.grpo ...) run on
    this CPU, and the policy it exports collected, with the lineage the SFT model carried."""
    from kfp.dsl import Dataset, Model
    from safetensors.torch import load_file

    from components.submit_grpo_trainjob.component import submit_grpo_trainjob
    from reasoning_ner.records import read_records, write_jsonl

    sft_model = _micro_base(tmp_path, prepared_dir)
    (sft_model / "lineage.json").write_text(json.dumps({"data": {"commit": "abc123"}, "sft": {"steps": 2}}))
    prep_dir = tmp_path / "prepared"
    write_jsonl(prep_dir / "data" / "conll2003" / "train.jsonl",
                read_records(prepared_dir / "conll2003" / "train.jsonl")[:64])
    shared = tmp_path / "shared"
    shared.mkdir()
    out = _outputs(tmp_path)
    with _stub_cluster(tmp_path, monkeypatch) as fake:
        submit_grpo_trainjob.python_func(
            sft_model=Model(name="sft", uri=str(sft_model)), prepared=Dataset(name="prepared", uri=str(prep_dir)),
            profile="tiny-ci", group_size=2, learning_rate=0.0, max_steps=1, use_lora=False, use_vllm=False,
            shared_dir=str(shared), vllm_runtime="reasoning-ner-grpo-vllm", vllm_gpus=1, **CLUSTER_ARGS, **out)
    model, metrics, curves = out["model"], out["metrics"], out["curves"]
    job = _check_created_job(fake, "rner-grpo-run-42")
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed", "no vLLM server role without vLLM"
    root = shared / "trainjobs" / "rner-grpo-run-42"
    argv = " ".join(fake.argv)
    assert fake.argv[1:3] == ["-m", "reasoning_ner.training.grpo"]
    assert f"--model {root}/sft-model --data {root}/data/conll2003/train.jsonl --out {root}/out" in argv
    assert "--set grpo.num_generations=2" in argv and "--set grpo.max_steps=1" in argv
    weights = load_file(Path(model.path) / "model.safetensors")
    start = load_file(sft_model / "model.safetensors")
    assert weights.keys() == start.keys()
    assert json.loads((Path(model.path) / "lineage.json").read_text())["data"]["commit"] == "abc123"
    assert model.metadata["trainjob"] == f"{NS}/rner-grpo-run-42" and model.metadata["vllm_server_role"] is False
    assert metrics.metadata["trainjob_seconds"] > 0
    assert "GRPO (TrainJob ml/rner-grpo-run-42" in Path(curves.path).read_text()
