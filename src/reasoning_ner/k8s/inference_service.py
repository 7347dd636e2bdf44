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
  So :func:`.serving_identity.build_s3_secret` carries them, and :func:`.serving_identity.build_service_account`
  only with ``storage.irsa_role_arn`` (the rules: :mod:`reasoning_ner.k8s.kserve_credentials`).
"""

from __future__ import annotations

from typing import Any

from ..config.serving import ServingSettings, ServingSettingsError, validate_storage_uri
from ..flywheel.baseline import BASELINE_FILE, drift_baseline_uri
from .pod_parts import SERVING_PORT, container_security, env_list, object_metadata, probe, resources, transformer_logger
from .serving_identity import build_service_account

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
CONTAINER_NAME = "kserve-container"
#: KServe labels every pod with ``component: predictor|transformer`` (constants.KServiceComponentLabel).
COMPONENT_LABEL = "component"
#: Knative's queue-proxy: 8012 http, 8013 h2c, 9090 autoscaler metrics (the data path to a Knative predictor).
QUEUE_PROXY_PORTS = [8012, 8013, 9090]
#: Where the transformer mounts the API-key Secret (read-only; RNER_SERVE_API_KEYS_FILE points at the key's file).
API_KEYS_DIR = "/var/run/secrets/reasoning-ner/api-keys"
API_KEYS_VOLUME = "api-keys"


DEFAULT_WAITING_QUERY = 'sum(vllm:num_requests_waiting{{namespace="{namespace}",pod=~"{name}-predictor-.*"}}) or vector(0)'


# ------------------------------------------------------------------------------------ builders


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
    return env_list(defaults, s.predictor.env)


def transformer_args(s: ServingSettings) -> list[str]:
    # Global options (--profile) precede the command. The three KServe arguments are given explicitly so
    # KServe appends nothing: the short service name resolves in the pod's own namespace.
    return ["--profile", s.transformer.profile, "serve", "--backend=remote",
            f"--model_name={s.name}", f"--predictor_host={s.name}-predictor", f"--http_port={SERVING_PORT}",
            *s.transformer.extra_args]


#: Where KServe's storage initializer puts what a container's STORAGE_URI names.
MODEL_MOUNT = "/mnt/models"


def transformer_env(s: ServingSettings, storage_uri: str | None = None) -> list[dict[str, Any]]:
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
    if s.transformer.drift_baseline and storage_uri:
        # KServe injects its storage initializer into a custom transformer whose container sets STORAGE_URI
        # (CustomTransformer.GetStorageUri); one object, not the weights. The deploy step moves it with the model.
        defaults["STORAGE_URI"] = drift_baseline_uri(storage_uri)
        defaults["RNER_SERVE_DRIFT_BASELINE"] = f"{MODEL_MOUNT}/{BASELINE_FILE}"
    env: list[dict[str, Any]] = env_list(defaults, s.transformer.env)
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
        "resources": resources(p.resources, p.gpus, p.gpu_resource_name),
        "securityContext": container_security(p.run_as_user),
        "startupProbe": probe(p.startup_probe),
        "readinessProbe": probe(p.readiness_probe),
        "livenessProbe": probe(p.liveness_probe),
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


def build_transformer(s: ServingSettings, storage_uri: str | None = None) -> dict[str, Any]:
    t = s.transformer
    container = {
        "name": CONTAINER_NAME,
        "image": t.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["rner"],
        "args": transformer_args(s),
        "env": transformer_env(s, storage_uri),
        "resources": resources(t.resources),
        "securityContext": container_security(t.run_as_user),
        "startupProbe": probe(t.startup_probe),
        "readinessProbe": probe(t.readiness_probe),
        "livenessProbe": probe(t.liveness_probe),
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
    if (logger := transformer_logger(s)) is not None:
        tr["logger"] = logger
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
        spec["transformer"] = build_transformer(s, uri)
    return {"apiVersion": ISVC_API_VERSION, "kind": "InferenceService",
            "metadata": object_metadata(s, s.name, "inference", annotations), "spec": spec}


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
                "metadata": object_metadata(s, name, "network-policy"),
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
        "metadata": object_metadata(s, f"{s.name}-predictor-vllm-queue", "autoscaling"),
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
            "metadata": object_metadata(s, f"{s.name}-transformer-cpu", "autoscaling"),
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
