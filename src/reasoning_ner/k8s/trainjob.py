"""Multi-node SFT and GRPO as a Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``), plain dicts.

:func:`build_trainjob` turns one typed settings object, :class:`TrainJobSettings`, into the TrainJob
that runs stage 2 (``stage="sft"``) or stage 3 (``stage="grpo"``) on ``num_nodes`` x ``gpus_per_node``
GPUs with DeepSpeed ZeRO-3::

    accelerate launch --config_file /app/configs/accelerate/deepspeed_zero3.yaml \\
        --num_machines N --num_processes N*G --machine_rank $(PET_NODE_RANK) \\
        --main_process_ip $(PET_MASTER_ADDR) --main_process_port $(PET_MASTER_PORT) \\
        -m reasoning_ner.training.sft --profile P --data /shared/... --out /shared/... --no-progress

(or ``torchrun -m reasoning_ner.training.sft ...``, which reads the ``PET_*`` variables itself, for
DDP without DeepSpeed; GRPO runs ``-m reasoning_ner.training.grpo --profile P --model /shared/.../model
--data ... --out ...``). It imports neither the Kubernetes client nor jsonschema; the pipeline's
``submit_trainjob`` component creates and watches the object (``components/submit_trainjob``).

Facts the builder relies on (the CRD in ``shared/k8s/crds`` and Kubeflow Trainer's torch plugin):

* ``spec.runtimeRef`` names a (Cluster)TrainingRuntime; the default ``torch-distributed`` runtime has one
  replicated job ``node`` whose container ``node`` is the trainer. ``spec.trainer`` overrides its image,
  command, args, env, ``numNodes``, ``numProcPerNode`` and ``resourcesPerNode``.
* The torch plugin injects ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (the Job completion
  index), ``PET_MASTER_ADDR`` (``<name>-node-0-0.<name>``) and ``PET_MASTER_PORT`` (29500) into that
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

GRPO with server-mode vLLM rollouts runs the ``trl vllm-serve`` process as a role of the job; the runtime
with that role and why it is laid out so: :mod:`reasoning_ner.k8s.trainer_runtime`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from ..config import Config

from .trainer_runtime import (
    API_VERSION, DEFAULT_RUNTIME, GROUP, KIND, NAME_RE, QUANTITY_RE, RESERVED_ENV, TRAINER_CONTAINER, TRAINER_JOB,
    VLLM_CONTAINER, VLLM_JOB, VLLM_POD_SUFFIX, VLLMRuntimeSettings, _image, dns_label,
)

#: The ``runtimePatches`` entry this project owns (list-map key).
PATCH_MANAGER = "reasoning-ner.io/submit-trainjob"
#: Where the train-gpu image keeps the repository's configs (WORKDIR /app).
IMAGE_APP_DIR = "/app"
ACCELERATE_CONFIG = f"{IMAGE_APP_DIR}/configs/accelerate/deepspeed_zero3.yaml"
SHARED_VOLUME = "shared"
SHM_VOLUME = "dshm"
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
#: The image's non-root user (images/train-gpu/Dockerfile).
RUN_AS_USER = 1000
Stage = Literal["sft", "grpo"]
#: The argparse main each stage runs (``python -m``).
ENTRY_POINTS: dict[str, str] = {"sft": "reasoning_ner.training.sft", "grpo": "reasoning_ner.training.grpo"}


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
    runtime: str = Field(DEFAULT_RUNTIME, description="(Cluster)TrainingRuntime with a torch ML policy "
                         "(GRPO with a vLLM server role uses vllm.name instead).")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    # What to train
    stage: Stage = Field("sft", description="sft (stage 2) or grpo (stage 3, from model_dir).")
    profile: str = Field(description="Configuration profile (rner --profile).")
    data_files: list[str] = Field(min_length=1, description="Paths under shared_mount: CoT JSONL (sft), "
                                  "canonical training JSONL, the RL pool (grpo).")
    output_dir: str = Field(description="Output folder under shared_mount (model/, summary.json, checkpoints/).")
    base_model: str | None = Field(None, description="sft: Hub name or path; None = the profile's model.base_model.")
    model_dir: str | None = Field(None, description="grpo: the SFT model (a Hugging Face directory under "
                                  "shared_mount), the policy the trainers start from and the vLLM server loads.")
    vllm: VLLMRuntimeSettings = Field(
        default_factory=VLLMRuntimeSettings, description="grpo with server-mode vLLM: the runtime with the server "
        "role, as the chart installs it (multiNode.grpoRuntime).")
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
        return dns_label(v)

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
                 "lineage_file": [self.lineage_file] if self.lineage_file else [],
                 "model_dir": [self.model_dir] if self.model_dir else []}
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

    @model_validator(mode="after")
    def _stage_inputs(self) -> TrainJobSettings:
        if self.stage == "sft":
            if self.model_dir:
                raise ValueError("model_dir is a grpo setting; sft starts from base_model")
            return self
        if self.base_model:
            raise ValueError("base_model is an sft setting; stage grpo starts from model_dir (the SFT model)")
        if not self.model_dir:
            raise ValueError("stage grpo needs model_dir: the SFT model (a Hugging Face directory under shared_mount)")
        if self.vllm_role:
            _check_vllm_role(self)
        return self

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def vllm_role(self) -> bool:
        """GRPO whose rollouts come from a ``trl vllm-serve`` role of this job: server mode without
        ``grpo.vllm_server_base_url`` (a base URL names a server that runs elsewhere)."""
        if self.stage != "grpo":
            return False
        g = stage_config(self).grpo
        return g.use_vllm and g.vllm_mode == "server" and not g.vllm_server_base_url

    @property
    def vllm_server_url(self) -> str:
        """The server pod by its JobSet hostname: ``<name>-vllm-0-0`` in the subdomain ``<name>``."""
        return f"http://{self.name}-{VLLM_JOB}-0-0.{self.name}:{self.vllm.port}"


def stage_config(s: TrainJobSettings) -> Config:
    """The run's configuration as the pods resolve it (profile + overrides; no params.yaml)."""
    from ..config import resolve_config

    try:
        return resolve_config(profile=s.profile, overrides=list(s.overrides))
    except ValueError as exc:  # ConfigError names the key
        raise ValueError(f"profile {s.profile!r} with overrides {s.overrides}: {exc}") from exc


def _check_vllm_role(s: TrainJobSettings) -> None:
    """Refuse a server role that cannot work, naming the field (ValueError, so pydantic reports it)."""
    g = stage_config(s).grpo
    if g.vllm_tensor_parallel_size > s.vllm.gpus:
        raise ValueError(f"grpo.vllm_tensor_parallel_size {g.vllm_tensor_parallel_size} exceeds vllm.gpus "
                         f"{s.vllm.gpus}, the GPUs of the runtime's server pod (multiNode.grpoRuntime.vllm.gpus)")
    if g.vllm_server_port != s.vllm.port:
        raise ValueError(f"grpo.vllm_server_port {g.vllm_server_port} differs from vllm.port {s.vllm.port}, the port "
                         "the runtime's server container opens and probes (multiNode.grpoRuntime.vllm.port)")
    if len(s.name) + len(VLLM_POD_SUFFIX) > 63:
        raise ValueError(f"name {s.name!r} is too long for the vLLM server role: JobSet names its pod "
                         f"{s.name}{VLLM_POD_SUFFIX} and refuses more than 63 characters "
                         f"(at most {63 - len(VLLM_POD_SUFFIX)} for the name)")


# ------------------------------------------------------------------------------------------- builder


def training_args(s: TrainJobSettings) -> list[str]:
    """Arguments of ``python -m reasoning_ner.training.sft`` or ``.grpo`` (their argparse mains)."""
    if s.stage == "grpo":
        args = ["--profile", s.profile, "--model", str(s.model_dir), "--data", *s.data_files, "--out", s.output_dir]
    else:
        args = ["--profile", s.profile, "--data", *s.data_files, "--out", s.output_dir, "--no-progress"]
    if s.base_model:
        args += ["--base-model", s.base_model]
    if s.lineage_file:
        args += ["--lineage", s.lineage_file]
    for item in trainer_overrides(s):
        args += ["--set", item]
    return args


def trainer_overrides(s: TrainJobSettings) -> list[str]:
    """``s.overrides``, plus, with a vLLM server role, where the trainers find it: its pod's hostname
    instead of a server each trainer pod would start itself (the profiles' ``vllm_server_launch``)."""
    if not s.vllm_role:
        return list(s.overrides)
    return [*s.overrides, "grpo.vllm_server_launch=false", f"grpo.vllm_server_base_url={s.vllm_server_url}"]


def vllm_server_command(s: TrainJobSettings) -> list[str]:
    """The server role's exact ``trl vllm-serve`` command: the single-node builder's, for the run's
    profile and overrides, bound to every interface (the trainers are other pods)."""
    from ..config import resolve_config
    from ..training.vllm_server import vllm_serve_command

    cfg = resolve_config(profile=s.profile, overrides=[*s.overrides, "grpo.vllm_server_bind_host=0.0.0.0"])
    return vllm_serve_command(cfg, str(s.model_dir))


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


def _vllm_job_patch(s: TrainJobSettings, labels: dict[str, str]) -> dict[str, Any]:
    """The server role's patch: the trainers' volumes, placement, identity and security, and the
    command its container execs (env is the one way a TrainJob can pass it, see the module docstring)."""
    import json

    from ..training.vllm_server import SERVE_COMMAND_ENV

    pod = _pod_patch(s)
    (container,) = pod["containers"]
    command = {"name": SERVE_COMMAND_ENV, "value": json.dumps(vllm_server_command(s))}
    pod["containers"] = [{**container, "name": VLLM_CONTAINER, "env": [*trainer_env(s), command]}]
    return {
        "name": VLLM_JOB,
        "template": {"spec": {"template": {
            "metadata": {"labels": {**labels, "app.kubernetes.io/component": "grpo-vllm"}},
            "spec": pod,
        }}},
    }


def build_trainjob(s: TrainJobSettings) -> dict[str, Any]:
    """The TrainJob for ``s`` (a plain dict, ready for the API server or ``yaml.safe_dump``)."""
    labels = {"app.kubernetes.io/name": "reasoning-ner", "app.kubernetes.io/component": s.stage,
              "app.kubernetes.io/managed-by": "reasoning-ner", **s.labels}
    role = s.vllm_role
    # Only the project's runtime has the server role; it lives beside the TrainJob (a TrainingRuntime).
    runtime_ref = ({"name": s.vllm.name, "apiGroup": GROUP, "kind": "TrainingRuntime"} if role
                   else {"name": s.runtime, "apiGroup": GROUP, "kind": s.runtime_kind})
    spec: dict[str, Any] = {
        "runtimeRef": runtime_ref,
        "trainer": {
            "image": s.image,
            "command": launcher_command(s),
            "args": ["-m", ENTRY_POINTS[s.stage], *training_args(s)],
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
            }, *([_vllm_job_patch(s, labels)] if role else [])]}}},
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


def trainjob_name(run_id: str, prefix: str = "rner-sft", max_len: int = 63) -> str:
    """A TrainJob name derived from a pipeline run id: deterministic (a retried step re-attaches)."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-") or "run"
    name = f"{prefix}-{slug}"[:max_len].rstrip("-")
    if not NAME_RE.match(name):
        raise TrainJobError(f"cannot make a TrainJob name from {run_id!r}")
    return name
