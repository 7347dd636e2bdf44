"""Kubeflow Trainer's API as this project uses it, and the TrainingRuntime of GRPO with a vLLM server role.

GRPO with server-mode vLLM rollouts (``grpo.use_vllm``, ``grpo.vllm_mode: server``, no
``grpo.vllm_server_base_url``): the ``trl vllm-serve`` process is a role of the job, not a process
inside a trainer pod. What the CRDs allow decides the layout:

* A TrainJob cannot add a replicated job, nor give one an image, command or resources: a runtime
  patch may only name replicated jobs and containers the runtime already has (Trainer's JobSet
  plugin refuses others) and patches containers' ``env``, ``volumeMounts`` and ``securityContext``
  only. So the role lives in a runtime this project ships, :func:`build_vllm_runtime` (rendered by
  the chart's ``templates/trainingruntime-grpo.yaml`` behind ``multiNode.grpoRuntime.enabled``): its
  JobSet has a ``vllm`` replicated job (one pod, the train-gpu image, ``vllm.gpus`` GPUs, a
  readiness probe on ``/health``) before ``node`` (the trainers, ancestor label ``trainer``).
* It is a namespaced ``TrainingRuntime`` in the TrainJobs' namespace: its spec is the same type as a
  ClusterTrainingRuntime's (identical schemas; ``reasoning_ner.k8s.schema`` validates it with that
  CRD), a TrainJob may reference one in its own namespace, and installing it needs no cluster-scoped
  rights.
* ``node`` has ``dependsOn: [{name: vllm, status: Ready}]`` (JobSet creates the trainers once the
  server pod is ready, i.e. its ``/health`` answers, however long the model takes to load), and
  ``successPolicy`` targets ``node`` only: the JobSet completes when the trainers do (the server never
  exits by itself) and JobSet then deletes the still-running server. A server that dies fails its Job
  (``backoffLimit: 0``) and so the TrainJob.
* The server's command is fixed in the runtime (``python -m reasoning_ner.training.vllm_server``),
  which execs the JSON command list the TrainJob puts in that container's env
  (:data:`~reasoning_ner.training.vllm_server.SERVE_COMMAND_ENV`, env being patchable on a container
  other than ``node``): :func:`~reasoning_ner.training.vllm_server.vllm_serve_command` stays the one
  place that builds the ``trl vllm-serve`` line, from the run's own profile and overrides.
* JobSet gives every pod the hostname ``<jobset>-<replicatedJob>-<jobIndex>-<podIndex>`` in the
  subdomain ``<jobset>`` (the JobSet and the TrainJob share the name; ``network.enableDNSHostnames``),
  the rule Trainer's ``PET_MASTER_ADDR`` uses too; the trainers get
  ``--set grpo.vllm_server_base_url=http://<name>-vllm-0-0.<name>:<port>`` and
  ``grpo.vllm_server_launch=false``, so the GRPO step's early health check names that URL.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
PLURAL = "trainjobs"
DEFAULT_RUNTIME = "torch-distributed"
#: The replicated job and container of the torch runtimes that run the trainer.
TRAINER_JOB = "node"
TRAINER_CONTAINER = "node"
#: Set by Trainer's torch plugin; refused in ``spec.trainer.env``.
RESERVED_ENV = frozenset({"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"})
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
#: Trainer's label that marks the replicated job ``spec.trainer`` applies to.
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
#: The replicated job and container of the vLLM rollout server (:func:`build_vllm_runtime`).
VLLM_JOB = "vllm"
VLLM_CONTAINER = "vllm"
#: The runtime's fixed server command: it execs the ``trl vllm-serve`` list the TrainJob passes in env.
VLLM_ENTRYPOINT = ["python", "-m", "reasoning_ner.training.vllm_server"]
#: JobSet names a pod ``<jobset>-<job>-<jobIndex>-<podIndex>-<5 random>`` and refuses more than 63 characters.
VLLM_POD_SUFFIX = f"-{VLLM_JOB}-0-0-abcde"



def dns_label(v: str) -> str:
    """``v`` if it is a DNS label (namespace, PVC and runtime names), else a ValueError naming it."""
    if len(v) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", v):
        raise ValueError(f"{v!r} is not a DNS label")
    return v


def _image() -> str:
    from ..images import image

    return image("train-gpu")



class VLLMRuntimeSettings(BaseModel):
    """The TrainingRuntime with a ``vllm`` server role beside the trainers (:func:`build_vllm_runtime`).

    The chart renders the same object from ``multiNode.grpoRuntime`` (:meth:`from_helm_values`); a
    GRPO TrainJob names it and must agree with its GPUs and port, so :class:`TrainJobSettings` holds
    these settings too (``vllm``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field("reasoning-ner-grpo-vllm", description="TrainingRuntime name, in the TrainJobs' namespace.")
    image: str = Field(default_factory=_image, description="Image of the server and the trainers (train-gpu).")
    gpus: int = Field(1, description="GPUs of the server pod (at least grpo.vllm_tensor_parallel_size).")
    port: int = Field(8000, ge=1, le=65535,
                      description="The server's HTTP port (grpo.vllm_server_port); probed on /health.")
    cpu: str = Field("8", description="CPU request and limit of the server pod.")
    memory: str = Field("64Gi", description="Memory request and limit of the server pod (the weights load through it).")
    accelerator_resource: str = Field("nvidia.com/gpu", description="Extended resource name of the server's GPUs.")

    @field_validator("name")
    @classmethod
    def _runtime_name(cls, v: str) -> str:
        return dns_label(v)

    @field_validator("gpus")
    @classmethod
    def _server_gpus(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"{v} GPUs: the vLLM server role needs a GPU of its own (without one, set "
                             "grpo.vllm_mode=colocate or grpo.use_vllm=false and use the torch-distributed runtime)")
        return v

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, v: str) -> str:
        if not QUANTITY_RE.match(v):
            raise ValueError(f"{v!r} is not a Kubernetes quantity")
        return v

    @classmethod
    def from_helm_values(cls, grpo_runtime: dict[str, Any], image: str) -> VLLMRuntimeSettings:
        """From the chart's ``multiNode.grpoRuntime`` section and its train-gpu image reference."""
        v = grpo_runtime["vllm"]
        return cls(name=grpo_runtime["name"], image=image, gpus=v["gpus"], port=v["port"], cpu=str(v["cpu"]),
                   memory=str(v["memory"]), accelerator_resource=v["gpuResourceName"])


def build_vllm_runtime(rs: VLLMRuntimeSettings, namespace: str) -> dict[str, Any]:
    """The TrainingRuntime of GRPO with a vLLM server role (the module docstring says why each part).

    ``node`` is what Trainer's ``torch-distributed`` runtime has (the TrainJob sets its image, command,
    resources and node count); ``vllm`` is the server: one pod whose fixed command execs the TrainJob's
    ``trl vllm-serve`` command, ready when ``/health`` answers. The chart renders the same object.
    """
    server_resources = {"cpu": rs.cpu, "memory": rs.memory, rs.accelerator_resource: rs.gpus}
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingRuntime",
        "metadata": {"name": rs.name, "namespace": namespace,
                     # the Kubeflow SDK lists runtimes by framework; the torch plugin sets the PET_* env
                     "labels": {"trainer.kubeflow.org/framework": "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {"spec": {
                # the trainers reach the server by its pod hostname (JobSet's default, made explicit)
                "network": {"enableDNSHostnames": True},
                # the server never exits: the job is done when the trainers are
                "successPolicy": {"operator": "All", "targetReplicatedJobs": [TRAINER_JOB]},
                "replicatedJobs": [
                    {
                        "name": VLLM_JOB,
                        "replicas": 1,
                        "template": {"spec": {
                            "parallelism": 1,
                            "completions": 1,
                            "backoffLimit": 0,  # a crashed server fails the TrainJob instead of restarting unseen
                            "template": {"spec": {"containers": [{
                                "name": VLLM_CONTAINER,
                                "image": rs.image,
                                "command": list(VLLM_ENTRYPOINT),
                                "ports": [{"name": "http", "containerPort": rs.port}],
                                "readinessProbe": {"httpGet": {"path": "/health", "port": rs.port},
                                                   "periodSeconds": 10, "timeoutSeconds": 5},
                                "resources": {"requests": dict(server_resources), "limits": dict(server_resources)},
                            }]}},
                        }},
                    },
                    {
                        "name": TRAINER_JOB,
                        # trainers start once the server answers /health, however long loading takes
                        "dependsOn": [{"name": VLLM_JOB, "status": "Ready"}],
                        "template": {
                            "metadata": {"labels": {ANCESTOR_LABEL: "trainer"}},
                            "spec": {"template": {"spec": {
                                "containers": [{"name": TRAINER_CONTAINER, "image": rs.image}]}}},
                        },
                    },
                ],
            }},
        },
    }


# ---------------------------------------------------------------------------------------- status


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def phase(obj: dict[str, Any]) -> Literal["Complete", "Failed", "Suspended", "Running"]:
    """Terminal state from the TrainJob's conditions (``Complete`` / ``Failed`` with status True)."""
    conds = conditions(obj)
    for terminal in ("Failed", "Complete"):
        if conds.get(terminal, {}).get("status") == "True":
            return terminal  # type: ignore[return-value]
    if conds.get("Suspended", {}).get("status") == "True":
        return "Suspended"
    return "Running"


#: Python equivalents of the TrainJob CRD's CEL rules, for offline validation with
#: :func:`reasoning_ner.k8s.schema.crd_problems` (which refuses rules it cannot evaluate).
#: ``self == oldSelf`` (immutability) only applies to updates: always true for a new object.
CEL_RULES = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')":
        lambda o: bool(NAME_RE.match(str(o.get("metadata", {}).get("name", "")))),
    "size(self.metadata.name) <= 63": lambda o: len(str(o.get("metadata", {}).get("name", ""))) <= 63,
    "self == oldSelf": lambda o: True,
    "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')":
        lambda o: o == "" or bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://.+$", o)),
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']":
        lambda o: o in ("trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue"),
    "self >= 1": lambda o: o >= 1,
    "has(self.lastUpdatedTime)": lambda o: "lastUpdatedTime" in o,
}


def trainjob_problems(obj: dict[str, Any], crd_dir: str | None = None) -> list[str]:
    """Problems of a TrainJob against the upstream CRD (strict, CEL rules included); [] = valid."""
    from . import schema

    for rule, check in CEL_RULES.items():
        schema.CEL_RULES.setdefault(rule, check)
    return schema.crd_problems(obj, crd_dir)
