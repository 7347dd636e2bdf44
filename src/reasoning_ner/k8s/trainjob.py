"""Multi-node SFT as a Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``): one builder, plain dicts.

:func:`build_trainjob` turns one typed settings object, :class:`TrainJobSettings`, into the TrainJob
that runs stage 2 on ``num_nodes`` x ``gpus_per_node`` GPUs with DeepSpeed ZeRO-3::

    accelerate launch --config_file /app/configs/accelerate/deepspeed_zero3.yaml \\
        --num_machines N --num_processes N*G --machine_rank $(PET_NODE_RANK) \\
        --main_process_ip $(PET_MASTER_ADDR) --main_process_port $(PET_MASTER_PORT) \\
        -m reasoning_ner.training.sft --profile P --data /shared/... --out /shared/... --no-progress

(or ``torchrun -m reasoning_ner.training.sft ...``, which reads the ``PET_*`` variables itself, for
DDP without DeepSpeed). It imports neither the Kubernetes client nor jsonschema; the pipeline's
``submit_trainjob`` component creates and watches the object (``components/submit_trainjob``).

Facts the builder relies on (the CRD in ``shared/k8s/crds`` and Kubeflow Trainer's torch plugin):

* ``spec.runtimeRef`` names a (Cluster)TrainingRuntime; the default ``torch-distributed`` runtime has one
  replicated job ``node`` whose container ``node`` is the trainer. ``spec.trainer`` overrides its image,
  command, args, env, ``numNodes``, ``numProcPerNode`` and ``resourcesPerNode``.
* The torch plugin injects ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (the Job completion
  index), ``PET_MASTER_ADDR`` (``<name>-node-0-0.<name>``) and ``PET_MASTER_PORT`` (29400) into that
  container and refuses them in ``spec.trainer.env`` (:data:`RESERVED_ENV`). The kubelet expands
  ``$(PET_NODE_RANK)`` etc. in command and args, so no shell is needed.
* Everything else about the pods (volumes and mounts, node selector, tolerations, service account,
  image pull Secrets, security context) goes through ``spec.runtimePatches``: a list keyed by
  ``manager`` whose ``trainingRuntimeSpec.template.spec.replicatedJobs[name=node].template.spec.template.spec``
  is a restricted pod spec (``volumes``, ``nodeSelector``, ``tolerations``, ``serviceAccountName``,
  ``imagePullSecrets``, ``securityContext``, and ``containers`` patches limited to ``env``,
  ``volumeMounts`` and ``securityContext``).
* ``metadata.name`` must be an RFC 1035 label of at most 63 characters (CRD validation rule).
* Data and outputs live on a shared ReadWriteMany PVC mounted at the same path in the submitting step
  and on every node: the component copies the step's input artifacts there, rank 0 writes the
  exported model there, and the component copies it back into the step's output artifact.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
PLURAL = "trainjobs"
DEFAULT_RUNTIME = "torch-distributed"
#: The replicated job and container of the torch runtimes that run the trainer.
TRAINER_JOB = "node"
TRAINER_CONTAINER = "node"
#: The ``runtimePatches`` entry this project owns (list-map key).
PATCH_MANAGER = "reasoning-ner.io/submit-trainjob"
#: Set by Trainer's torch plugin; refused in ``spec.trainer.env``.
RESERVED_ENV = frozenset({"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"})
#: Where the train-gpu image keeps the repository's configs (WORKDIR /app).
IMAGE_APP_DIR = "/app"
ACCELERATE_CONFIG = f"{IMAGE_APP_DIR}/configs/accelerate/deepspeed_zero3.yaml"
SHARED_VOLUME = "shared"
SHM_VOLUME = "dshm"
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
#: The image's non-root user (images/train-gpu/Dockerfile).
RUN_AS_USER = 1000


def _image() -> str:
    from ..images import image

    return image("train-gpu")


class TrainJobError(ValueError):
    """Settings that cannot make a valid TrainJob; the message names the field."""


class TrainJobSettings(BaseModel):
    """Everything the TrainJob depends on; see the module docstring for how each field is used."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(description="TrainJob name: an RFC 1035 label of at most 63 characters.")
    namespace: str = Field(description="Namespace of the TrainJob (the runtime, PVC and Secrets live there too).")
    num_nodes: int = Field(2, ge=1, description="Training nodes (pods).")
    gpus_per_node: int = Field(8, ge=1, description="GPUs and training processes per node.")
    launcher: Literal["accelerate", "torchrun"] = Field(
        "accelerate", description="accelerate + DeepSpeed ZeRO-3 (full fine-tuning, the paper) or plain torchrun (DDP).")
    accelerate_config: str = Field(ACCELERATE_CONFIG, description="accelerate config file inside the image.")
    image: str = Field(default_factory=_image, description="The train-gpu image (reasoning_ner.images).")
    runtime: str = Field(DEFAULT_RUNTIME, description="(Cluster)TrainingRuntime with a torch ML policy.")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    # What to train
    profile: str = Field(description="Configuration profile (rner --profile).")
    data_files: list[str] = Field(min_length=1, description="CoT JSONL files, paths under shared_mount.")
    output_dir: str = Field(description="Output folder under shared_mount (model/, summary.json, checkpoints/).")
    base_model: str | None = Field(None, description="Hub name or path; None = the profile's model.base_model.")
    overrides: list[str] = Field(default_factory=list, description="`--set key.path=value` configuration overrides.")
    lineage_file: str | None = Field(None, description="JSON lineage for the model card, under shared_mount.")
    # Where
    shared_pvc: str = Field(description="ReadWriteMany PVC holding data and outputs, mounted on every node.")
    shared_mount: str = Field("/shared", description="Mount path of shared_pvc (the same in the submitting step).")
    shm_size: str = Field("64Gi", description="Memory-backed /dev/shm for NCCL and data loaders.")
    # Environment
    secret_env: dict[str, tuple[str, str]] = Field(
        default_factory=lambda: {"HF_TOKEN": ("reasoning-ner-hf", "token")},
        description="env name -> (Secret, key); optional Secrets (a missing one does not block the pods).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra plain environment variables.")
    # Resources and placement
    accelerator_resource: str = Field("nvidia.com/gpu", description="Extended resource name of the GPUs.")
    cpu_per_node: str = "32"
    memory_per_node: str = "512Gi"
    node_selector: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    service_account: str | None = Field(None, description="Service account of the training pods.")
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="docker-registry Secrets for the training image (the submitting "
        "step passes its own pod's, which the run's ServiceAccount gave it).")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Trainer fails the job after this long.")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > 63 or not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not an RFC 1035 label of at most 63 characters (TrainJob name rule)")
        return v

    @field_validator("namespace", "shared_pvc")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if len(v) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", v):
            raise ValueError(f"{v!r} is not a DNS label")
        return v

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if len(name) > 253 or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name):
                raise ValueError(f"image pull Secret {name!r} is not a Secret name")
        return v

    @field_validator("cpu_per_node", "memory_per_node", "shm_size")
    @classmethod
    def _quantity(cls, v: str) -> str:
        if not QUANTITY_RE.match(v):
            raise ValueError(f"{v!r} is not a Kubernetes quantity")
        return v

    @field_validator("env", "secret_env")
    @classmethod
    def _env_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if not ENV_NAME_RE.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key in RESERVED_ENV:
                raise ValueError(f"{key} is set by Kubeflow Trainer's torch plugin and may not be set here")
        return v

    @model_validator(mode="after")
    def _paths_on_the_shared_volume(self) -> TrainJobSettings:
        mount = self.shared_mount.rstrip("/")
        if not self.shared_mount.startswith("/") or mount in ("", "/"):
            raise ValueError(f"shared_mount {self.shared_mount!r} must be an absolute folder other than /")
        paths = {"output_dir": [self.output_dir], "data_files": self.data_files,
                 "lineage_file": [self.lineage_file] if self.lineage_file else []}
        for field, values in paths.items():
            for p in values:
                if not p.startswith(mount + "/") or "/../" in p + "/":
                    raise ValueError(f"{field} {p!r} must be under shared_mount {mount}/ (every node must see it)")
        both = set(self.env) & set(self.secret_env)
        if both:
            raise ValueError(f"{sorted(both)} set both as plain env and from a Secret")
        for t in self.tolerations:
            unknown = set(t) - {"key", "operator", "value", "effect", "tolerationSeconds"}
            if unknown:
                raise ValueError(f"toleration {t} has unknown field(s) {sorted(unknown)}")
        return self

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node


# ------------------------------------------------------------------------------------------- builder


def training_args(s: TrainJobSettings) -> list[str]:
    """Arguments of ``python -m reasoning_ner.training.sft`` (its argparse main)."""
    args = ["--profile", s.profile, "--data", *s.data_files, "--out", s.output_dir, "--no-progress"]
    if s.base_model:
        args += ["--base-model", s.base_model]
    if s.lineage_file:
        args += ["--lineage", s.lineage_file]
    for item in s.overrides:
        args += ["--set", item]
    return args


def launcher_command(s: TrainJobSettings) -> list[str]:
    """The launcher part of the container command; ``$(PET_*)`` are expanded by the kubelet."""
    if s.launcher == "torchrun":
        # torchrun reads PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR/PORT itself.
        return ["torchrun"]
    return [
        "accelerate", "launch",
        "--config_file", s.accelerate_config,
        "--num_machines", str(s.num_nodes),
        "--num_processes", str(s.world_size),
        "--machine_rank", "$(PET_NODE_RANK)",
        "--main_process_ip", "$(PET_MASTER_ADDR)",
        "--main_process_port", "$(PET_MASTER_PORT)",
    ]


def trainer_env(s: TrainJobSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/home/rner"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
        {"name": "NCCL_DEBUG", "value": "WARN"},
    ]
    env = [e for e in env if e["name"] not in s.env] + [{"name": k, "value": v} for k, v in sorted(s.env.items())]
    for name, (secret, key) in sorted(s.secret_env.items()):
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}})
    return env


def _resources(s: TrainJobSettings) -> dict[str, Any]:
    limits = {"cpu": s.cpu_per_node, "memory": s.memory_per_node, s.accelerator_resource: s.gpus_per_node}
    requests = dict(limits)
    return {"requests": requests, "limits": limits}


def _pod_patch(s: TrainJobSettings) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": 0, "fsGroup": RUN_AS_USER,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [
            {"name": SHARED_VOLUME, "persistentVolumeClaim": {"claimName": s.shared_pvc}},
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": s.shm_size}},
        ],
        "containers": [{
            "name": TRAINER_CONTAINER,
            "volumeMounts": [
                {"name": SHARED_VOLUME, "mountPath": s.shared_mount.rstrip("/")},
                {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
            ],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }],
    }
    if s.node_selector:
        pod["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        pod["tolerations"] = [dict(t) for t in s.tolerations]
    if s.service_account:
        pod["serviceAccountName"] = s.service_account
    if s.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
    return pod


def build_trainjob(s: TrainJobSettings) -> dict[str, Any]:
    """The TrainJob for ``s`` (a plain dict, ready for the API server or ``yaml.safe_dump``)."""
    labels = {"app.kubernetes.io/name": "reasoning-ner", "app.kubernetes.io/component": "sft",
              "app.kubernetes.io/managed-by": "reasoning-ner", **s.labels}
    spec: dict[str, Any] = {
        "runtimeRef": {"name": s.runtime, "apiGroup": GROUP, "kind": s.runtime_kind},
        "trainer": {
            "image": s.image,
            "command": launcher_command(s),
            "args": ["-m", "reasoning_ner.training.sft", *training_args(s)],
            "env": trainer_env(s),
            "numNodes": s.num_nodes,
            "numProcPerNode": s.gpus_per_node,
            "resourcesPerNode": _resources(s),
        },
        "runtimePatches": [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": TRAINER_JOB,
                "template": {"spec": {"template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": _pod_patch(s),
                }}},
            }]}}},
        }],
    }
    if s.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = s.active_deadline_seconds
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": s.name, "namespace": s.namespace, "labels": labels},
        "spec": spec,
    }


def trainjob_name(run_id: str, prefix: str = "rner-sft") -> str:
    """A TrainJob name derived from a pipeline run id: deterministic (a retried step re-attaches)."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-") or "run"
    name = f"{prefix}-{slug}"[:63].rstrip("-")
    if not NAME_RE.match(name):
        raise TrainJobError(f"cannot make a TrainJob name from {run_id!r}")
    return name


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
