"""Serving settings: the typed values of the InferenceService and its neighbours (chart values 1:1).

:class:`ServingSettings` is part of the configuration (``deploy.serving`` of a profile) and the one
input of the object builders in :mod:`reasoning_ner.k8s.inference_service`; it lives here so the
configuration never imports the cluster side. Field names are snake_case in Python and params.yaml,
camelCase as Helm values (:meth:`ServingSettings.to_helm_values`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")  # a Secret's data key
#: The Knative revision name ``<name>-transformer-00001`` must be a DNS label (63 characters).
MAX_NAME_LENGTH = 45
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # KServe's IsvcNameFmt
#: Kubernetes resource quantities (the pattern of the CRDs' int-or-string quantities).
QUANTITY_RE = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
GO_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
STORAGE_URI_RE = re.compile(r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^\s]*)?)$")
#: Where KServe's logger may post: an HTTP receiver (our payload sink) or a bucket (the blob-storage logger).
LOGGER_URL_RE = re.compile(r"^(https?://[^\s/]+(/[^\s]*)?|s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/?)$")
BLOCKED_ENV = {"PYTHONPATH"}  # KServe's admission webhook (pkg/validation/env_policy.go)


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


def _number_as_quantity(v: object) -> object:
    """A CPU quantity written as a number (`cpu: 4`, `--set ...cpuLimit=0.5`), which Kubernetes accepts, as its string."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class ResourceSettings(_Values):
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"

    # CPU may be a number as in Kubernetes (`cpu: 4`); a bare memory number means bytes, most likely a
    # forgotten unit (48 for 48Gi), so memory stays a string.
    @field_validator("cpu_request", "cpu_limit", mode="before")
    @classmethod
    def _number(cls, v: object) -> object:
        return _number_as_quantity(v)

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


class TransformerLoggerSettings(_Values):
    """KServe's payload logger on the transformer (docs/flywheel.md): off = the users' sentences never leave the pod."""

    enabled: bool = Field(False, description="Log what the NER service receives (and returns, mode all) as CloudEvents.")
    mode: Literal["all", "request"] = Field("all", description="all: requests and responses (the served entities are kept); "
                                            "request: sentences only.")
    url: str | None = Field(None, pattern=LOGGER_URL_RE.pattern,
                            description="http(s):// of the payload sink (`rner flywheel sink`), or s3://bucket for KServe's "
                            "blob-storage logger. None = the chart's in-chart sink (flywheel.sink.enabled).")
    storage_path: str = Field("/traffic", pattern=r"^/", description="s3:// url only: the blob-storage logger's prefix in the "
                              "bucket; credentials from the serving ServiceAccount (storage.service_account_name).")


#: The configuration's profiles (config/profiles.py, which imports this module; a test keeps the two equal).
ProfileName = Literal["tiny-cpu", "tiny-ci", "qwen3-1.7b", "qwen3-8b"]


class TransformerSettings(_Values):
    """Our NER service (``rner serve --backend remote``): prompt, parsing and grounding in front of the LLM."""

    enabled: bool = True
    image: str = Field(default_factory=_serve_image, description="The serve image (reasoning_ner.images).")
    profile: ProfileName = Field("qwen3-8b", description="`rner --profile` the service runs with (prompt layout).")
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
    logger: TransformerLoggerSettings = Field(default_factory=TransformerLoggerSettings)
    drift_baseline: bool = Field(
        False, description="Fetch the served model's drift_baseline.json (<storageUri>/drift_baseline.json, written by "
        "promotion) with KServe's storage initializer (STORAGE_URI, one object) and export it as rner_drift_baseline_* "
        "gauges, so the drift alerts have a reference. Needs a model promoted by this project: without the file the "
        "transformer's storage initializer fails.")


def _go_duration(v: str) -> str:
    parse_duration(v)
    return v


GoDuration = Annotated[str, AfterValidator(_go_duration)]  # Knative's annotations take Go durations


class ScalingSettings(_Values):
    """Predictor scaling. Which fields apply depends on the mode/autoscaler (see docs/deploy.md)."""

    min_replicas: int = Field(1, ge=0, description="0 = scale to zero (Knative mode only; opt-in).")
    max_replicas: int = Field(4, ge=1)
    # Knative (KPA)
    container_concurrency: int = Field(64, ge=0, description="Knative hard limit of in-flight requests per replica (0 = none).")
    scale_target: int = Field(32, ge=1, description="Knative soft target of in-flight requests per replica.")
    scale_down_delay: GoDuration = Field("10m", description="Knative: keep replicas this long after load drops (cold starts are minutes).")
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


class KnativeSettings(_Values):
    timeout_seconds: int = Field(600, ge=1, description="Request timeout (Knative's max-revision-timeout-seconds must allow it).")
    progress_deadline: GoDuration = Field("1800s", description="serving.knative.dev/progress-deadline: a revision's whole cold start.")
    tag_routing: bool = Field(True, description="serving.kserve.io/enable-tag-routing: latest-/prev- URLs for canary checks.")
    canary_traffic_percent: int | None = Field(None, ge=0, le=100, description="Static canary share (the deploy step sets it per rollout).")


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
                   "(containerConcurrency / scaleTarget); KEDA and external autoscalers act on Standard-mode Deployments. With mode "
                   "'knative', set autoscaler 'kpa'")
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
    lg = s.transformer.logger
    if lg.enabled and not s.transformer.enabled:
        out.append("transformer.logger needs transformer.enabled: the logger belongs on the NER service, which sees "
                   "sentences, labels and entities (the predictor only rendered prompts)")
    if lg.enabled and not lg.url:
        out.append("transformer.logger.enabled needs transformer.logger.url: the payload sink's http://... (the chart's "
                   "flywheel.sink fills it in) or s3://bucket for KServe's blob-storage logger")
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
    bucket = re.match(r"^s3://([^/]*)", uri) if isinstance(uri, str) else None
    if bucket and not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket.group(1)):
        raise ValueError(f"storage URI {uri!r}: {bucket.group(1)!r} is not an S3 bucket name (3-63 characters: "
                         "lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit)")
    if not isinstance(uri, str) or not STORAGE_URI_RE.match(uri):
        raise ValueError(
            f"storage URI {uri!r} is not deployable: use s3://<bucket>/<prefix> (read by KServe's storage "
            "initializer with the service account's S3 credentials) or pvc://<claim>/<path>; a local path from "
            "the registry must be uploaded first")
    return uri


#: The cpu-smoke overlay: no GPU, the tiny local model from MinIO, the Hugging Face (transformers)
#: backend. Also the natural ``deploy.serving`` values of the tiny-cpu profile.
CPU_SMOKE_VALUES: dict[str, Any] = {
    "mode": "standard",
    "autoscaler": "none",
    "storage": {"storage_uri": "s3://reasoning-ner/models/tiny-cpu/champion",
                "s3_endpoint": "minio.minio.svc.cluster.local:9000", "s3_use_https": False, "s3_verify_ssl": False},
    "predictor": {
        "image": "kserve/huggingfaceserver:v0.21.0",
        "backend": "huggingface", "reasoning_parser": None, "dtype": "float32",
        "max_model_len": 1024, "max_num_seqs": None, "gpus": 0, "tolerations": [], "node_selector": {},
        "resources": {"cpu_request": "1", "cpu_limit": "2", "memory_request": "2Gi", "memory_limit": "4Gi"},
        "startup_probe": {"path": "/v2/health/ready", "period_seconds": 5, "timeout_seconds": 3, "failure_threshold": 60},
        "cache_size_limit": "2Gi", "tmp_size_limit": "1Gi", "termination_grace_period_seconds": 30,
    },
    "transformer": {"profile": "tiny-cpu", "request_timeout_s": 120,
                    "resources": {"cpu_request": "250m", "cpu_limit": "1", "memory_request": "512Mi", "memory_limit": "1Gi"}},
    "scaling": {"min_replicas": 1, "max_replicas": 1},
}
