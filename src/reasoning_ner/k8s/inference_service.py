"""The one builder of the serving objects: InferenceService, ServiceAccount, NetworkPolicy, ScaledObjects.

Everything here is plain dicts built from one typed settings object, :class:`ServingSettings`, whose
fields map one to one onto the values of a Helm chart (:meth:`ServingSettings.to_helm_values` gives
them in the chart's camelCase). The same builder feeds the pipeline's deploy step
(:mod:`reasoning_ner.k8s.rollout`) and the committed kustomize tree (:mod:`reasoning_ner.k8s.manifests`).
It imports neither the Kubernetes client nor kserve.

Facts the builder relies on (checked against the KServe sources and the CRDs in ``shared/k8s/crds``):

* predictor = ``model`` with ``modelFormat: huggingface``: KServe picks the ``kserve-huggingfaceserver``
  ClusterServingRuntime, whose container already gets ``--model_name={{.Name}}`` (the InferenceService
  name); our args are appended. ``--max_model_len`` is KServe's own flag (same dest as vLLM's
  ``--max-model-len``), so it works with and without vLLM in the image; vLLM-only flags
  (``--reasoning-parser``, ``--gpu-memory-utilization``, ``--max-num-seqs``) are emitted only for the
  vLLM backend.
* ``predictor.model.name`` must stay empty (KServe's webhook refuses it in a standard predictor);
  ``PYTHONPATH`` may not be set in any container (webhook).
* KServe appends ``--model_name``, ``--predictor_host``, ``--http_port`` (and ``--workers`` when the
  transformer sets containerConcurrency) to a custom transformer unless an arg with that prefix is
  present; the builder passes all three itself so the manifest shows exactly what runs.
* Autoscaling: Knative mode scales with Knative's KPA (``containerConcurrency``, ``scaleMetric:
  concurrency``, ``scaleTarget``, ``minReplicas: 0`` = scale to zero) and is the only mode with
  ``canaryTrafficPercent``. Standard mode (``RawDeployment`` is the deprecated name) uses
  ``serving.kserve.io/autoscalerClass``: ``keda`` makes KServe write a ScaledObject from
  ``autoScaling.metrics`` (``type: External`` with ``backend: prometheus``, ``serverAddress``, ``query``
  and ``target.value``; ``PodMetric`` only supports an OpenTelemetry backend in this CRD), ``external``
  makes KServe create no autoscaler so our own ScaledObject is the only one, ``none`` = fixed replicas.
* S3 credentials reach the storage initializer through the predictor's service account: its
  ``secrets`` list names a Secret holding ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (the key names
  in KServe's default ``inferenceservice-config``), and KServe reads the ``serving.kserve.io/s3-*``
  annotations (endpoint, https, region, TLS verification) **from that Secret**; it reads them from the
  ServiceAccount only when the ServiceAccount carries an IRSA role (``eks.amazonaws.com/role-arn``).
  So :func:`build_s3_secret` carries them, and :func:`build_service_account` only with
  ``storage.irsa_role_arn`` (the rules: :mod:`reasoning_ner.k8s.kserve_credentials`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

# ------------------------------------------------------------------------------------ constants

KSERVE_GROUP = "serving.kserve.io"
ISVC_API_VERSION = "serving.kserve.io/v1beta1"
KEDA_API_VERSION = "keda.sh/v1alpha1"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
PROMETHEUS_SCRAPING = "serving.kserve.io/enable-prometheus-scraping"
TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
MODEL_VERSION_ANNOTATION = "reasoning-ner.io/model-version"
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"
S3_ANNOTATION_PREFIX = "serving.kserve.io/s3-"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"  # KServe's AwsIrsaAnnotationKey
SERVING_PORT = 8080
CONTAINER_NAME = "kserve-container"
#: KServe labels every pod with ``component: predictor|transformer`` (constants.KServiceComponentLabel).
COMPONENT_LABEL = "component"
#: Knative's queue-proxy: 8012 http, 8013 h2c, 9090 autoscaler metrics (the data path to a Knative predictor).
QUEUE_PROXY_PORTS = [8012, 8013, 9090]
#: Where the transformer mounts the API-key Secret (read-only; RNER_SERVE_API_KEYS_FILE points at the key's file).
API_KEYS_DIR = "/var/run/secrets/reasoning-ner/api-keys"
API_KEYS_VOLUME = "api-keys"
SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")  # a Secret's data key

#: The Knative revision name ``<name>-transformer-00001`` must be a DNS label (63 characters).
MAX_NAME_LENGTH = 45
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # KServe's IsvcNameFmt
#: Kubernetes resource quantities (the pattern of the CRDs' int-or-string quantities).
QUANTITY_RE = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
GO_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
STORAGE_URI_RE = re.compile(r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^\s]*)?)$")
BLOCKED_ENV = {"PYTHONPATH"}  # KServe's admission webhook (pkg/validation/env_policy.go)

DEFAULT_WAITING_QUERY = 'sum(vllm:num_requests_waiting{{namespace="{namespace}",pod=~"{name}-predictor-.*"}}) or vector(0)'


class ServingSettingsError(ValueError):
    """An invalid combination of serving settings; the message says what to change."""


def _serve_image() -> str:
    from ..images import image

    return image("serve")


# ------------------------------------------------------------------------------------ settings


class _Values(BaseModel):
    """Chart-shaped settings: snake_case in Python and params.yaml, camelCase as Helm values."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, alias_generator=to_camel,
                              validate_by_name=True, validate_by_alias=True)


class ProbeSettings(_Values):
    path: str = Field("/v2/health/ready", pattern=r"^/", description="HTTP GET path on the serving port.")
    period_seconds: int = Field(10, ge=1)
    timeout_seconds: int = Field(5, ge=1)
    failure_threshold: int = Field(3, ge=1)
    initial_delay_seconds: int = Field(0, ge=0)

    @property
    def budget_s(self) -> int:
        """Longest time the probe tolerates failures: initial delay + period x failure threshold."""
        return self.initial_delay_seconds + self.period_seconds * self.failure_threshold


class ResourceSettings(_Values):
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit")
    @classmethod
    def _quantity(cls, v: str) -> str:
        if not QUANTITY_RE.match(v):
            raise ValueError(f"{v!r} is not a Kubernetes quantity (e.g. 500m, 4, 32Gi)")
        return v

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceSettings:
        for kind in ("cpu", "memory"):
            req, lim = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            if parse_quantity(req) > parse_quantity(lim):
                raise ValueError(f"{kind}_request {req} exceeds {kind}_limit {lim}")
        return self


class PredictorSettings(_Values):
    """KServe's Hugging Face runtime with the vLLM backend (the LLM that writes reasoning + answer)."""

    image: str = Field("kserve/huggingfaceserver:v0.21.0-gpu",
                       description="Runtime image, pinned by tag (-gpu = the CUDA/vLLM build; the plain tag is the CPU build).")
    runtime: str | None = Field("kserve-huggingfaceserver", description="ClusterServingRuntime name (None = KServe auto-selects by modelFormat).")
    model_format: str = "huggingface"
    backend: Literal["vllm", "huggingface"] = Field("vllm", description="--backend of the runtime.")
    max_model_len: int = Field(8192, ge=64, description="Context length (prompt + reasoning + answer).")
    reasoning_parser: str | None = Field("qwen3", description="vLLM --reasoning-parser (qwen3, deepseek_r1); vLLM backend only.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    gpu_memory_utilization: float = Field(0.90, gt=0, le=1)
    max_num_seqs: int | None = Field(64, ge=1, description="vLLM's concurrent sequences per replica.")
    extra_args: list[str] = Field(default_factory=list, description="Appended verbatim to the runtime args.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (overrides the defaults by name).")
    gpus: int = Field(1, ge=0, description="GPUs per replica (> 1 sets --tensor-parallel-size).")
    gpu_resource_name: str = "nvidia.com/gpu"
    resources: ResourceSettings = Field(default_factory=lambda: ResourceSettings(
        cpu_request="4", cpu_limit="8", memory_request="32Gi", memory_limit="48Gi"))
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=lambda: [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    # Cold start of an 8B model: image pull and the storage initializer's download run before the
    # container starts (they count against Knative's progress deadline, not the probes); the probes
    # cover weight loading, CUDA graph capture and KV-cache allocation.
    startup_probe: ProbeSettings = Field(default_factory=lambda: ProbeSettings(
        path="/v2/health/ready", period_seconds=10, timeout_seconds=5, failure_threshold=120))
    readiness_probe: ProbeSettings = Field(default_factory=lambda: ProbeSettings(
        path="/v2/health/ready", period_seconds=10, timeout_seconds=5, failure_threshold=3))
    liveness_probe: ProbeSettings = Field(default_factory=lambda: ProbeSettings(
        path="/v2/health/live", period_seconds=30, timeout_seconds=10, failure_threshold=5))
    cache_size_limit: str = Field("20Gi", description="emptyDir at /cache (HF, vLLM, Triton, torch caches).")
    tmp_size_limit: str = Field("4Gi", description="emptyDir at /tmp.")
    run_as_user: int = Field(1000, ge=1, description="UID of the runtime image's user (kserve images: 1000).")
    termination_grace_period_seconds: int = Field(300, ge=0, description="Standard mode: time to drain in-flight reasoning.")

    @field_validator("cache_size_limit", "tmp_size_limit")
    @classmethod
    def _quantity(cls, v: str) -> str:
        if not QUANTITY_RE.match(v):
            raise ValueError(f"{v!r} is not a Kubernetes quantity")
        return v


class TransformerAuthSettings(_Values):
    """API-key authentication of the NER service (serving/auth.py): off unless ``existing_secret`` is set."""

    existing_secret: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253,
                                        description="Secret (created beforehand, never by the chart) whose key secret_key "
                                        "holds the API keys, one per line; mounted read-only into the transformer. "
                                        "None = no authentication.")
    secret_key: str = Field("api-keys", pattern=SECRET_KEY_RE.pattern, max_length=253,
                            description="The key of existing_secret holding the API keys (several lines = several valid keys).")


class TransformerSettings(_Values):
    """Our NER service (``rner serve --backend remote``): prompt, parsing and grounding in front of the LLM."""

    enabled: bool = True
    image: str = Field(default_factory=_serve_image, description="The serve image (reasoning_ner.images).")
    profile: str = Field("qwen3-8b", description="`rner --profile` the service runs with (prompt layout).")
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment, e.g. RNER_SERVE_MAX_NEW_TOKENS.")
    request_timeout_s: int = Field(300, ge=1, description="RNER_SERVE_REQUEST_TIMEOUT_S: one request, reasoning included.")
    resources: ResourceSettings = Field(default_factory=lambda: ResourceSettings(
        cpu_request="500m", cpu_limit="2", memory_request="1Gi", memory_limit="2Gi"))
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    scale_target: int = Field(64, ge=1, description="Knative: in-flight requests per replica (soft target).")
    cpu_target_utilization: int = Field(70, ge=1, le=100, description="keda/external: CPU utilization target (%).")
    startup_probe: ProbeSettings = Field(default_factory=lambda: ProbeSettings(
        path="/v2/health/live", period_seconds=5, timeout_seconds=3, failure_threshold=24))
    # /v2/health/ready already debounces the upstream (3 failed probes 2 s apart, serving/health.py): two
    # failed kubelet probes 5 s apart then take the pod out of rotation, within about 20 s of the predictor dying.
    readiness_probe: ProbeSettings = Field(default_factory=lambda: ProbeSettings(
        path="/v2/health/ready", period_seconds=5, timeout_seconds=3, failure_threshold=2))
    liveness_probe: ProbeSettings = Field(default_factory=lambda: ProbeSettings(
        path="/v2/health/live", period_seconds=20, timeout_seconds=5, failure_threshold=3))
    run_as_user: int = Field(1000, ge=1)
    auth: TransformerAuthSettings = Field(default_factory=TransformerAuthSettings)


class ScalingSettings(_Values):
    """Predictor scaling. Which fields apply depends on the mode/autoscaler (see docs/deploy.md)."""

    min_replicas: int = Field(1, ge=0, description="0 = scale to zero (Knative mode only; opt-in).")
    max_replicas: int = Field(4, ge=1)
    # Knative (KPA)
    container_concurrency: int = Field(64, ge=0, description="Knative hard limit of in-flight requests per replica (0 = none).")
    scale_target: int = Field(32, ge=1, description="Knative soft target of in-flight requests per replica.")
    scale_down_delay: str = Field("10m", description="Knative: keep replicas this long after load drops (cold starts are minutes).")
    # KEDA (keda and external)
    prometheus_url: str = "http://prometheus-operated.monitoring.svc.cluster.local:9090"
    waiting_requests_target: int = Field(4, ge=1, description="vllm:num_requests_waiting per replica before scaling out.")
    waiting_requests_query: str | None = Field(None, description="PromQL; default sums vllm:num_requests_waiting over the predictor pods.")
    polling_interval_s: int = Field(15, ge=1, description="external: KEDA polling interval.")
    cooldown_period_s: int = Field(600, ge=0, description="external: KEDA cooldown.")
    scale_up_stabilization_s: int = Field(0, ge=0, le=3600)
    scale_down_stabilization_s: int = Field(600, ge=0, le=3600)
    # Standard-mode rollout of GPU pods: one extra pod at a time, never fewer than desired.
    rollout_max_surge: int = Field(1, ge=0)
    rollout_max_unavailable: int = Field(0, ge=0)

    @field_validator("scale_down_delay")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class KnativeSettings(_Values):
    timeout_seconds: int = Field(600, ge=1, description="Request timeout (Knative's max-revision-timeout-seconds must allow it).")
    progress_deadline: str = Field("1800s", description="serving.knative.dev/progress-deadline: a revision's whole cold start.")
    tag_routing: bool = Field(True, description="serving.kserve.io/enable-tag-routing: latest-/prev- URLs for canary checks.")
    canary_traffic_percent: int | None = Field(None, ge=0, le=100, description="Static canary share (the deploy step sets it per rollout).")

    @field_validator("progress_deadline")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class StorageSettings(_Values):
    storage_uri: str = Field("s3://reasoning-ner/models/champion",
                             description="The served model: s3://bucket/prefix or pvc://claim/path (the deploy step sets the champion).")
    service_account_name: str = "reasoning-ner-serving"
    create_service_account: bool = True
    s3_secret_name: str | None = Field("reasoning-ner-s3", description="Secret with the S3 keys and the serving.kserve.io/s3-* "
                                       "annotations, listed in the ServiceAccount's secrets (None with IRSA only).")
    irsa_role_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
                                      description="EKS IRSA role of the serving ServiceAccount (eks.amazonaws.com/role-arn); "
                                      "only then does KServe also read the s3-* annotations from the ServiceAccount.")
    s3_endpoint: str | None = Field(None, description="host:port of S3/MinIO (None = AWS).")
    s3_use_https: bool = True
    s3_region: str | None = "us-east-1"
    s3_verify_ssl: bool = True
    s3_access_key_id_key: str = Field("AWS_ACCESS_KEY_ID", description="Key in the Secret (KServe's credentials.s3.s3AccessKeyIDName).")
    s3_secret_access_key_key: str = Field("AWS_SECRET_ACCESS_KEY", description="Key in the Secret (credentials.s3.s3SecretAccessKeyName).")

    @field_validator("storage_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        validate_storage_uri(v)
        return v


class NetworkPolicySettings(_Values):
    enabled: bool = True
    gateway_namespaces: list[str] = Field(
        default_factory=lambda: ["istio-system", "knative-serving", "kserve"],
        description="Ingress gateway / Knative activator and autoscaler / KServe Gateway API namespaces.")
    prometheus_namespaces: list[str] = Field(default_factory=lambda: ["monitoring"])
    gateway_ports: list[int] = Field(default_factory=lambda: [8080, 8012, 8013, 9090],
                                     description="8080 serving, 8012/8013 queue-proxy http/h2c, 9090 queue-proxy autoscaler metrics.")
    prometheus_ports: list[int] = Field(default_factory=lambda: [8080, 9088, 9091],
                                        description="8080 /metrics (vLLM), 9088 KServe metric aggregation, 9091 queue-proxy user metrics.")
    prometheus_pod_labels: dict[str, str] | None = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"},
        description="Labels of the Prometheus pods in prometheus_namespaces (prometheus-operator's); /metrics shares port 8080 "
        "with the predict routes, so only these pods are admitted there. None or {} = every pod of those namespaces.")


class ServingSettings(_Values):
    """Everything the serving objects depend on; one field = one chart value."""

    name: str = Field("reasoning-ner", description="InferenceService name (and prefix of every object).")
    namespace: str = "reasoning-ner"
    mode: Literal["standard", "knative"] = Field("standard", description="serving.kserve.io/deploymentMode: Standard or Knative.")
    autoscaler: Literal["kpa", "none", "keda", "external"] | None = Field(
        None, description="knative: kpa; standard: none (fixed replicas), keda (KServe-managed) or external (our ScaledObject).")
    labels: dict[str, str] = Field(default_factory=lambda: {"app.kubernetes.io/part-of": "reasoning-ner"})
    prometheus_scraping: bool = True
    storage: StorageSettings = Field(default_factory=StorageSettings)
    image_pull_secrets: list[str] = Field(default_factory=list,
                                          description="docker-registry Secrets on the serving ServiceAccount (the "
                                          "transformer's image); the kubelet uses them for every pod of that account.")
    predictor: PredictorSettings = Field(default_factory=PredictorSettings)
    transformer: TransformerSettings = Field(default_factory=TransformerSettings)
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    knative: KnativeSettings = Field(default_factory=KnativeSettings)
    network_policy: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)

    @model_validator(mode="before")
    @classmethod
    def _defaults_and_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        mode = data.get("mode", "standard")
        if isinstance(mode, str) and mode.lower() in {"rawdeployment", "raw", "serverless"}:
            new = "standard" if mode.lower() != "serverless" else "knative"
            raise ValueError(f"mode {mode!r} is a deprecated KServe name; use {new!r}")
        if isinstance(mode, str):
            data["mode"] = mode.lower()
        if data.get("autoscaler") is None:
            data["autoscaler"] = "kpa" if data.get("mode") == "knative" else "none"
        return data

    @model_validator(mode="after")
    def _combinations(self) -> ServingSettings:
        problems = settings_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --------------------------------------------------------------- helpers
    def to_helm_values(self) -> dict[str, Any]:
        """The settings as Helm chart values (camelCase keys, JSON types)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_helm_values(cls, values: dict[str, Any]) -> ServingSettings:
        return cls.model_validate(values)

    def with_updates(self, **changes: Any) -> ServingSettings:
        """A validated copy with nested changes, e.g. ``with_updates(scaling={"min_replicas": 0})``."""
        data = self.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return type(self).model_validate(data)

    @property
    def predictor_deployment(self) -> str:
        """Name of the predictor's Deployment in Standard mode (the ScaledObject's target)."""
        return f"{self.name}-predictor"

    @property
    def transformer_deployment(self) -> str:
        return f"{self.name}-transformer"


def settings_problems(s: ServingSettings) -> list[str]:
    """Every invalid combination in ``s`` (empty when the settings are deployable)."""
    out: list[str] = []
    if not NAME_RE.match(s.name):
        out.append(f"name {s.name!r} must match {NAME_RE.pattern} (KServe's InferenceService name format)")
    if len(s.name) > MAX_NAME_LENGTH:
        out.append(f"name {s.name!r} is longer than {MAX_NAME_LENGTH} characters (Knative revision "
                   f"'<name>-transformer-00001' must be a 63-character DNS label)")
    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", s.namespace) or len(s.namespace) > 63:
        out.append(f"namespace {s.namespace!r} is not a DNS label")
    knative = s.mode == "knative"
    if knative and s.autoscaler != "kpa":
        out.append(f"autoscaler {s.autoscaler!r} needs mode 'standard': Knative mode scales with Knative's KPA "
                   "(containerConcurrency / scaleTarget); KEDA and external autoscalers act on Standard-mode Deployments")
    if not knative and s.autoscaler == "kpa":
        out.append("autoscaler 'kpa' is Knative's autoscaler; use mode 'knative', or 'none'/'keda'/'external' in Standard mode")
    if not knative and s.knative.canary_traffic_percent is not None:
        out.append("canary_traffic_percent is a Knative-mode feature (traffic split between revisions); "
                   "Standard mode rolls out directly")
    if s.scaling.max_replicas < s.scaling.min_replicas:
        out.append(f"scaling.max_replicas {s.scaling.max_replicas} < min_replicas {s.scaling.min_replicas}")
    if s.transformer.max_replicas < s.transformer.min_replicas:
        out.append(f"transformer.max_replicas {s.transformer.max_replicas} < min_replicas {s.transformer.min_replicas}")
    if not knative and s.scaling.min_replicas == 0:
        out.append("scaling.min_replicas 0 (scale to zero) needs mode 'knative': only Knative's activator holds "
                   "requests while a replica cold-starts, and a queue metric of zero pods never scales up")
    if not knative and s.transformer.enabled and s.transformer.min_replicas == 0:
        out.append("transformer.min_replicas 0 needs mode 'knative'")
    p = s.predictor
    if p.gpus == 0 and p.backend == "vllm":
        out.append("predictor.backend 'vllm' needs predictor.gpus >= 1; use backend 'huggingface' on CPU")
    if p.reasoning_parser and p.backend != "vllm":
        out.append("predictor.reasoning_parser is a vLLM flag; set it to null with backend 'huggingface'")
    for where, env in (("predictor.env", p.env), ("transformer.env", s.transformer.env)):
        blocked = sorted(BLOCKED_ENV & set(env))
        if blocked:
            out.append(f"{where} sets {blocked}, which KServe's admission webhook refuses")
    if s.transformer.auth.existing_secret and not s.transformer.enabled:
        out.append("transformer.auth needs transformer.enabled: the API keys are checked by the NER service; "
                   "the predictor (KServe's runtime) has no authentication of its own")
    if knative and s.transformer.enabled and s.knative.timeout_seconds < s.transformer.request_timeout_s:
        out.append(f"knative.timeout_seconds {s.knative.timeout_seconds} is shorter than transformer.request_timeout_s "
                   f"{s.transformer.request_timeout_s}: Knative would cut requests the service still waits for")
    if knative:
        deadline = parse_duration(s.knative.progress_deadline)
        if deadline <= p.startup_probe.budget_s:
            out.append(f"knative.progress_deadline {s.knative.progress_deadline} must exceed the predictor's startup probe "
                       f"budget ({p.startup_probe.budget_s}s), or Knative fails the revision before the probe gives up")
    st = s.storage
    if st.storage_uri.startswith("s3://") and st.s3_endpoint and not st.s3_secret_name and not st.irsa_role_arn:
        out.append("storage.s3_endpoint is set but neither storage.s3_secret_name nor storage.irsa_role_arn: KServe reads "
                   "the endpoint from the S3 Secret's annotations (from the ServiceAccount's only with an IRSA role), so "
                   "the storage initializer would go to AWS without keys")
    return out


# ------------------------------------------------------------------------------------ small parsers


def parse_quantity(q: str | int | float) -> float:
    """A Kubernetes quantity as a number (cores or bytes)."""
    if isinstance(q, (int, float)):
        return float(q)
    m = re.match(r"^([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)$", q)
    if not m:
        raise ValueError(f"{q!r} is not a quantity")
    num, suffix = float(m.group(1)), m.group(2)
    factors = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
               "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    if suffix not in factors:
        raise ValueError(f"{q!r} has an unknown suffix {suffix!r}")
    return num * factors[suffix]


def parse_duration(d: str) -> int:
    """Seconds of a simple Go duration such as ``1800s``, ``30m``, ``1h30m``."""
    m = GO_DURATION_RE.match(d)
    if not d or not m or not any(m.groups()):
        raise ValueError(f"{d!r} is not a duration like 600s, 10m or 1h")
    h, mi, s = (int(x) if x else 0 for x in m.groups())
    return h * 3600 + mi * 60 + s


def validate_storage_uri(uri: str) -> str:
    """Accept ``s3://bucket/prefix`` and ``pvc://claim/path``; explain anything else."""
    if not isinstance(uri, str) or not STORAGE_URI_RE.match(uri):
        raise ValueError(
            f"storage URI {uri!r} is not deployable: use s3://<bucket>/<prefix> (read by KServe's storage "
            "initializer with the service account's S3 credentials) or pvc://<claim>/<path>; a local path from "
            "the registry must be uploaded first")
    return uri


# ------------------------------------------------------------------------------------ builders


def _metadata(s: ServingSettings, name: str, component: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {**s.labels, "app.kubernetes.io/name": s.name, "app.kubernetes.io/component": component}
    meta: dict[str, Any] = {"name": name, "namespace": s.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _probe(p: ProbeSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"httpGet": {"path": p.path, "port": SERVING_PORT}}
    if p.initial_delay_seconds:
        out["initialDelaySeconds"] = p.initial_delay_seconds
    out.update({"periodSeconds": p.period_seconds, "timeoutSeconds": p.timeout_seconds, "failureThreshold": p.failure_threshold})
    return out


def _resources(r: ResourceSettings, gpus: int = 0, gpu_name: str = "nvidia.com/gpu") -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": r.cpu_request, "memory": r.memory_request}
    limits: dict[str, Any] = {"cpu": r.cpu_limit, "memory": r.memory_limit}
    if gpus:
        requests[gpu_name] = gpus
        limits[gpu_name] = gpus
    return {"requests": requests, "limits": limits}


def _container_security(uid: int) -> dict[str, Any]:
    # No `privileged` key: Knative's webhook refuses the field even when false (default is false).
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(defaults: dict[str, str], extra: dict[str, str]) -> list[dict[str, str]]:
    merged = dict(defaults)
    for key in sorted(extra):
        merged[key] = extra[key]
    return [{"name": k, "value": v} for k, v in merged.items()]


def predictor_args(s: ServingSettings) -> list[str]:
    p = s.predictor
    args = [f"--backend={p.backend}", f"--max_model_len={p.max_model_len}", f"--dtype={p.dtype}", "--disable_log_requests"]
    if p.backend == "vllm":
        if p.reasoning_parser:
            args.append(f"--reasoning-parser={p.reasoning_parser}")
        args.append(f"--gpu-memory-utilization={p.gpu_memory_utilization}")
        if p.max_num_seqs:
            args.append(f"--max-num-seqs={p.max_num_seqs}")
        if p.gpus > 1:
            args.append(f"--tensor-parallel-size={p.gpus}")
    return args + list(p.extra_args)


def predictor_env(s: ServingSettings) -> list[dict[str, str]]:
    defaults = {
        "HOME": "/cache",
        "XDG_CACHE_HOME": "/cache",
        "HF_HOME": "/cache/huggingface",
        "HF_HUB_OFFLINE": "1",  # the weights come from storageUri; never reach out to the Hub
        "VLLM_CACHE_ROOT": "/cache/vllm",
        "TRITON_CACHE_DIR": "/cache/triton",
        "TORCHINDUCTOR_CACHE_DIR": "/cache/torchinductor",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    return _env(defaults, s.predictor.env)


def transformer_args(s: ServingSettings) -> list[str]:
    # Global options (--profile) precede the command. The three KServe arguments are given explicitly so
    # KServe appends nothing: the short service name resolves in the pod's own namespace.
    return ["--profile", s.transformer.profile, "serve", "--backend=remote",
            f"--model_name={s.name}", f"--predictor_host={s.name}-predictor", f"--http_port={SERVING_PORT}",
            *s.transformer.extra_args]


def transformer_env(s: ServingSettings) -> list[dict[str, Any]]:
    defaults = {
        "HOME": "/tmp",
        "RNER_SERVE_BACKEND": "remote",
        "RNER_SERVE_HOST": "0.0.0.0",  # the pod's interface; the service's own default is loopback
        "RNER_SERVE_PORT": str(SERVING_PORT),
        "RNER_SERVE_MODEL_NAME": s.name,
        "RNER_SERVE_REMOTE_URL": f"http://{s.name}-predictor/openai/v1",
        "RNER_SERVE_REMOTE_MODEL": s.name,  # the runtime serves the model under the InferenceService name
        "RNER_SERVE_REQUEST_TIMEOUT_S": str(s.transformer.request_timeout_s),
    }
    if s.transformer.auth.existing_secret:  # the file of the mounted Secret, never the keys themselves
        defaults["RNER_SERVE_API_KEYS_FILE"] = api_keys_file(s)
    if s.mode == "knative" and s.scaling.min_replicas == 0:
        # A predictor that scales to zero: probing it every few seconds would keep it awake, so readiness is
        # the transformer's own (serving/health.py); Knative's activator holds requests during a cold start.
        defaults["RNER_SERVE_PROBE_UPSTREAM"] = "false"
    env: list[dict[str, Any]] = _env(defaults, s.transformer.env)
    if s.mode == "standard" and "RNER_SERVE_MODEL_VERSION" not in s.transformer.env:
        # The served version (V2 model_version) from the InferenceService's annotation, which KServe copies to the
        # pod template (so a new version also rolls the transformer). Knative refuses fieldRef unless the
        # cluster enables kubernetes.podspec-fieldref; there, set transformer.env.RNER_SERVE_MODEL_VERSION.
        env.append({"name": "RNER_SERVE_MODEL_VERSION",
                    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{MODEL_VERSION_ANNOTATION}']"}}})
    return env


def api_keys_file(s: ServingSettings) -> str:
    """The transformer's path of the API-key file (the Secret mounted whole, so the kubelet updates it)."""
    return f"{API_KEYS_DIR}/{s.transformer.auth.secret_key}"


def _pod_extras(s: ServingSettings, grace: int | None) -> dict[str, Any]:
    """Pod-level fields that only Standard mode gets (Knative's webhook masks pod securityContext and
    terminationGracePeriodSeconds unless the cluster enables extra feature flags)."""
    if s.mode == "knative":
        return {}
    out: dict[str, Any] = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}}
    if grace is not None:
        out["terminationGracePeriodSeconds"] = grace
    return out


def _waiting_query(s: ServingSettings) -> str:
    return s.scaling.waiting_requests_query or DEFAULT_WAITING_QUERY.format(namespace=s.namespace, name=s.name)


def _behavior(s: ServingSettings) -> dict[str, Any]:
    return {"scaleUp": {"stabilizationWindowSeconds": s.scaling.scale_up_stabilization_s},
            "scaleDown": {"stabilizationWindowSeconds": s.scaling.scale_down_stabilization_s}}


def build_predictor(s: ServingSettings, storage_uri: str) -> dict[str, Any]:
    p, sc = s.predictor, s.scaling
    model: dict[str, Any] = {"modelFormat": {"name": p.model_format}}
    if p.runtime:
        model["runtime"] = p.runtime
    model.update({
        "image": p.image,
        "storageUri": storage_uri,
        "args": predictor_args(s),
        "env": predictor_env(s),
        "resources": _resources(p.resources, p.gpus, p.gpu_resource_name),
        "securityContext": _container_security(p.run_as_user),
        "startupProbe": _probe(p.startup_probe),
        "readinessProbe": _probe(p.readiness_probe),
        "livenessProbe": _probe(p.liveness_probe),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "cache", "mountPath": "/cache"}],
    })
    pred: dict[str, Any] = {"serviceAccountName": s.storage.service_account_name,
                            "minReplicas": sc.min_replicas, "maxReplicas": sc.max_replicas}
    if s.mode == "knative":
        pred.update({"containerConcurrency": sc.container_concurrency, "scaleMetric": "concurrency",
                     "scaleTarget": sc.scale_target, "timeout": s.knative.timeout_seconds})
        if s.knative.canary_traffic_percent is not None:
            pred["canaryTrafficPercent"] = s.knative.canary_traffic_percent
        pred["annotations"] = {"serving.knative.dev/progress-deadline": s.knative.progress_deadline,
                               "autoscaling.knative.dev/scale-down-delay": sc.scale_down_delay}
    else:
        pred["deploymentStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": sc.rollout_max_surge, "maxUnavailable": sc.rollout_max_unavailable}}
        if s.autoscaler == "keda":
            pred["autoScaling"] = {
                "metrics": [{"type": "External", "external": {
                    "metric": {"backend": "prometheus", "serverAddress": sc.prometheus_url, "query": _waiting_query(s)},
                    "target": {"type": "Value", "value": sc.waiting_requests_target}}}],
                "behavior": _behavior(s),
            }
    pred.update(_pod_extras(s, p.termination_grace_period_seconds))
    if p.node_selector:
        pred["nodeSelector"] = dict(p.node_selector)
    if p.tolerations:
        pred["tolerations"] = [dict(t) for t in p.tolerations]
    pred["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": p.tmp_size_limit}},
                       {"name": "cache", "emptyDir": {"sizeLimit": p.cache_size_limit}}]
    pred["model"] = model
    return pred


def build_transformer(s: ServingSettings) -> dict[str, Any]:
    t = s.transformer
    container = {
        "name": CONTAINER_NAME,
        "image": t.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["rner"],
        "args": transformer_args(s),
        "env": transformer_env(s),
        "resources": _resources(t.resources),
        "securityContext": _container_security(t.run_as_user),
        "startupProbe": _probe(t.startup_probe),
        "readinessProbe": _probe(t.readiness_probe),
        "livenessProbe": _probe(t.liveness_probe),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    tr: dict[str, Any] = {"serviceAccountName": s.storage.service_account_name,
                          "minReplicas": t.min_replicas, "maxReplicas": t.max_replicas}
    if s.mode == "knative":
        tr.update({"scaleMetric": "concurrency", "scaleTarget": t.scale_target, "timeout": s.knative.timeout_seconds})
    else:
        if s.autoscaler == "keda":
            tr["autoScaling"] = {"metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": t.cpu_target_utilization}}}]}
    tr.update(_pod_extras(s, 30))
    tr["containers"] = [container]
    tr["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    auth = t.auth
    if auth.existing_secret:
        # Mounted as a directory (no subPath), so a Secret update reaches the running pod (rotation).
        container["volumeMounts"].append({"name": API_KEYS_VOLUME, "mountPath": API_KEYS_DIR, "readOnly": True})
        tr["volumes"].append({"name": API_KEYS_VOLUME, "secret": {
            "secretName": auth.existing_secret, "items": [{"key": auth.secret_key, "path": auth.secret_key}]}})
    return tr


def build_inference_service(s: ServingSettings, storage_uri: str | None = None,
                            model_version: str | None = None) -> dict[str, Any]:
    """The InferenceService for ``s`` serving ``storage_uri`` (default: ``s.storage.storage_uri``)."""
    uri = validate_storage_uri(storage_uri or s.storage.storage_uri)
    annotations = {DEPLOYMENT_MODE: "Knative" if s.mode == "knative" else "Standard"}
    if s.mode == "standard":
        annotations[AUTOSCALER_CLASS] = s.autoscaler or "none"
    if s.prometheus_scraping:
        annotations[PROMETHEUS_SCRAPING] = "true"
    if s.mode == "knative" and s.knative.tag_routing:
        annotations[TAG_ROUTING] = "true"
    if model_version:
        annotations[MODEL_VERSION_ANNOTATION] = model_version
    spec: dict[str, Any] = {"predictor": build_predictor(s, uri)}
    if s.transformer.enabled:
        spec["transformer"] = build_transformer(s)
    return {"apiVersion": ISVC_API_VERSION, "kind": "InferenceService",
            "metadata": _metadata(s, s.name, "inference", annotations), "spec": spec}


def s3_annotations(s: ServingSettings) -> dict[str, str]:
    st = s.storage
    out: dict[str, str] = {}
    if st.s3_endpoint:
        out[S3_ANNOTATION_PREFIX + "endpoint"] = st.s3_endpoint
    out[S3_ANNOTATION_PREFIX + "usehttps"] = "1" if st.s3_use_https else "0"
    if st.s3_region:
        out[S3_ANNOTATION_PREFIX + "region"] = st.s3_region
    out[S3_ANNOTATION_PREFIX + "verifyssl"] = "1" if st.s3_verify_ssl else "0"
    return out


def s3_endpoint_url(s: ServingSettings) -> str | None:
    """The endpoint as a URL (what botocore's AWS_ENDPOINT_URL wants), built as KServe builds it."""
    st = s.storage
    if not st.s3_endpoint:
        return None
    if st.s3_endpoint.lower().startswith(("http://", "https://")):
        return st.s3_endpoint
    return f"{'https' if st.s3_use_https else 'http'}://{st.s3_endpoint}"


def build_service_account(s: ServingSettings) -> dict[str, Any]:
    """The predictor's service account: names the S3 Secret, lists the pull Secrets; no API token.

    The S3 annotations go here only with an IRSA role: KServe ignores them on a ServiceAccount without
    ``eks.amazonaws.com/role-arn`` and reads them from the Secret (:func:`build_s3_secret`).
    """
    st = s.storage
    annotations = {IRSA_ANNOTATION: st.irsa_role_arn, **s3_annotations(s)} if st.irsa_role_arn else None
    sa: dict[str, Any] = {"apiVersion": "v1", "kind": "ServiceAccount",
                          "metadata": _metadata(s, st.service_account_name, "serving-identity", annotations)}
    if st.s3_secret_name:
        sa["secrets"] = [{"name": st.s3_secret_name}]
    if s.image_pull_secrets:
        sa["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
    sa["automountServiceAccountToken"] = False
    return sa


def s3_secret_data(s: ServingSettings, access_key_id: str = "", secret_access_key: str = "") -> dict[str, str]:
    """The S3 Secret's keys: the two KServe reads (key names from the settings) plus what the pipeline's
    steps read as environment (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``; botocore, s3fs, dvc-s3)."""
    st = s.storage
    data = {st.s3_access_key_id_key: access_key_id, st.s3_secret_access_key_key: secret_access_key}
    url = s3_endpoint_url(s)
    if url:
        data["AWS_ENDPOINT_URL"] = url
    if st.s3_region:
        data["AWS_DEFAULT_REGION"] = st.s3_region
    return data


def build_s3_secret(s: ServingSettings, access_key_id: str = "", secret_access_key: str = "") -> dict[str, Any]:
    """The S3 Secret with the ``serving.kserve.io/s3-*`` annotations KServe's storage initializer reads."""
    if not s.storage.s3_secret_name:
        raise ServingSettingsError("storage.s3_secret_name is empty: there is no S3 Secret to describe")
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": _metadata(s, s.storage.s3_secret_name, "serving-identity", s3_annotations(s)),
            "type": "Opaque",
            "stringData": s3_secret_data(s, access_key_id, secret_access_key)}


def build_s3_secret_placeholder(s: ServingSettings) -> dict[str, Any]:
    """The Secret's shape with empty keys: a template to fill out of band, never applied as is."""
    return build_s3_secret(s)


def build_network_policies(s: ServingSettings) -> list[dict[str, Any]]:
    """Ingress rules per component (KServe's ``component`` pod label); egress stays open (S3).

    * ``<name>-ingress``, the front door (the transformer; the predictor when there is none): the
      gateways (ingress gateway, Knative activator, Gateway API) on ``gateway_ports``, and Prometheus.
    * ``<name>-predictor-ingress`` (with a transformer): the transformer's pods on the serving port,
      Prometheus, and in Knative mode Knative's data path (local gateway, activator) on the
      queue-proxy ports only, never the serving port. So the API key the transformer checks cannot be
      bypassed by calling the predictor directly: in Standard mode no other pod reaches it; in Knative
      mode only through Knative's own hops (docs/serving.md, "Authentication", says what that leaves).
    """
    n = s.network_policy
    isvc = {ISVC_POD_LABEL: s.name}

    def ns_peers(names: list[str], pod_labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        peers = []
        for ns in names:
            peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
            if pod_labels:
                peer["podSelector"] = {"matchLabels": dict(pod_labels)}
            peers.append(peer)
        return peers

    def ports(numbers: list[int]) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": p} for p in numbers]

    def policy(name: str, component: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": _metadata(s, name, "network-policy"),
                "spec": {"podSelector": {"matchLabels": {**isvc, COMPONENT_LABEL: component}}, "policyTypes": ["Ingress"],
                         "ingress": rules}}

    prometheus = {"from": ns_peers(n.prometheus_namespaces, n.prometheus_pod_labels), "ports": ports(n.prometheus_ports)}
    gateways = {"from": ns_peers(n.gateway_namespaces), "ports": ports(n.gateway_ports)}
    if not s.transformer.enabled:
        return [policy(f"{s.name}-ingress", "predictor", [gateways, prometheus])]
    predictor_rules = [{"from": [{"podSelector": {"matchLabels": {**isvc, COMPONENT_LABEL: "transformer"}}}],
                        "ports": ports([SERVING_PORT, QUEUE_PROXY_PORTS[0]])}]
    if s.mode == "knative":
        predictor_rules.append({"from": ns_peers(n.gateway_namespaces), "ports": ports(QUEUE_PROXY_PORTS)})
    predictor_rules.append(prometheus)
    return [policy(f"{s.name}-ingress", "transformer", [gateways, prometheus]),
            policy(f"{s.name}-predictor-ingress", "predictor", predictor_rules)]


def build_scaled_objects(s: ServingSettings) -> list[dict[str, Any]]:
    """Our own KEDA ScaledObjects; only valid with ``autoscaler: external`` (KServe then makes none)."""
    if s.mode != "standard" or s.autoscaler != "external":
        raise ServingSettingsError(
            f"a separately written ScaledObject needs mode 'standard' with autoscaler 'external' "
            f"(serving.kserve.io/autoscalerClass: external); got mode {s.mode!r}, autoscaler {s.autoscaler!r}. "
            "With 'keda' KServe writes its own ScaledObject, with 'hpa' an HPA, and two autoscalers would fight "
            "over one Deployment")
    sc = s.scaling
    predictor = {
        "apiVersion": KEDA_API_VERSION, "kind": "ScaledObject",
        "metadata": _metadata(s, f"{s.name}-predictor-vllm-queue", "autoscaling"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.predictor_deployment},
            "minReplicaCount": sc.min_replicas,
            "maxReplicaCount": sc.max_replicas,
            "pollingInterval": sc.polling_interval_s,
            "cooldownPeriod": sc.cooldown_period_s,
            "fallback": {"failureThreshold": 3, "replicas": max(sc.min_replicas, 1), "behavior": "currentReplicasIfHigher"},
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(s)}},
            "triggers": [{"type": "prometheus", "name": "vllm-num-requests-waiting", "metricType": "AverageValue",
                          "metadata": {"serverAddress": sc.prometheus_url, "query": _waiting_query(s),
                                       "threshold": str(sc.waiting_requests_target)}}],
        },
    }
    out = [predictor]
    if s.transformer.enabled:
        t = s.transformer
        out.append({
            "apiVersion": KEDA_API_VERSION, "kind": "ScaledObject",
            "metadata": _metadata(s, f"{s.name}-transformer-cpu", "autoscaling"),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.transformer_deployment},
                "minReplicaCount": max(t.min_replicas, 1),  # KEDA's cpu scaler cannot scale to zero
                "maxReplicaCount": t.max_replicas,
                "triggers": [{"type": "cpu", "metricType": "Utilization",
                              "metadata": {"value": str(t.cpu_target_utilization)}}],
            },
        })
    return out


def build_objects(s: ServingSettings, storage_uri: str | None = None) -> list[dict[str, Any]]:
    """Every object of one deployment, in apply order."""
    objs: list[dict[str, Any]] = []
    if s.storage.create_service_account:
        objs.append(build_service_account(s))
    if s.network_policy.enabled:
        objs.extend(build_network_policies(s))
    objs.append(build_inference_service(s, storage_uri))
    if s.autoscaler == "external":
        objs.extend(build_scaled_objects(s))
    check_single_autoscaler(objs)
    return objs


# ------------------------------------------------------------------------------------ cross-object checks


def _isvc_deployments(isvc: dict[str, Any]) -> dict[str, str]:
    name = isvc["metadata"]["name"]
    deps = {f"{name}-predictor": "predictor"}
    if isvc.get("spec", {}).get("transformer"):
        deps[f"{name}-transformer"] = "transformer"
    return deps


def check_single_autoscaler(objects: list[dict[str, Any]]) -> None:
    """Refuse object sets where two autoscalers would drive one Deployment.

    A KEDA ScaledObject or HPA aimed at an InferenceService's Deployment is allowed only when that
    InferenceService runs in Standard mode with ``serving.kserve.io/autoscalerClass: external``, and only
    one of them per Deployment.
    """
    owners: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objects:
        if obj.get("kind") == "InferenceService":
            ns = obj["metadata"].get("namespace", "")
            for dep in _isvc_deployments(obj):
                owners[(ns, dep)] = obj
    claimed: dict[tuple[str, str], str] = {}
    for obj in objects:
        kind = obj.get("kind")
        if kind == "ScaledObject":
            ref = obj.get("spec", {}).get("scaleTargetRef", {})
        elif kind == "HorizontalPodAutoscaler":
            ref = obj.get("spec", {}).get("scaleTargetRef", {})
        else:
            continue
        if ref.get("kind", "Deployment") != "Deployment":
            continue
        ns = obj["metadata"].get("namespace", "")
        key = (ns, ref.get("name", ""))
        who = f"{kind} {obj['metadata']['name']}"
        if key in claimed:
            raise ServingSettingsError(f"{who} and {claimed[key]} both scale Deployment {key[1]}: one autoscaler per Deployment")
        claimed[key] = who
        isvc = owners.get(key)
        if isvc is None:
            continue
        ann = isvc["metadata"].get("annotations", {})
        mode, cls = ann.get(DEPLOYMENT_MODE, ""), ann.get(AUTOSCALER_CLASS, "")
        if mode not in ("Standard", "RawDeployment") or cls != "external":
            raise ServingSettingsError(
                f"{who} scales Deployment {key[1]} of InferenceService {isvc['metadata']['name']}, whose "
                f"deploymentMode is {mode or 'unset'!r} and autoscalerClass {cls or 'unset'!r}: a separately written "
                "autoscaler needs deploymentMode Standard and serving.kserve.io/autoscalerClass: external, "
                "or KServe's own autoscaler and this one fight over the replicas")
