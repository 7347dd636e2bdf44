"""Parts every serving object shares: metadata, probes, resources, the restricted security context, env lists."""

from __future__ import annotations

from typing import Any

from ..config.serving import ProbeSettings, ResourceSettings, ServingSettings

SERVING_PORT = 8080
#: Suffix of the chart's payload sink (Deployment, Service) after the InferenceService name.
FLYWHEEL_SINK_SUFFIX = "-flywheel-sink"


def probe(p: ProbeSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"httpGet": {"path": p.path, "port": SERVING_PORT}}
    if p.initial_delay_seconds:
        out["initialDelaySeconds"] = p.initial_delay_seconds
    out.update({"periodSeconds": p.period_seconds, "timeoutSeconds": p.timeout_seconds, "failureThreshold": p.failure_threshold})
    return out


def resources(r: ResourceSettings, gpus: int = 0, gpu_name: str = "nvidia.com/gpu") -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": r.cpu_request, "memory": r.memory_request}
    limits: dict[str, Any] = {"cpu": r.cpu_limit, "memory": r.memory_limit}
    if gpus:
        requests[gpu_name] = gpus
        limits[gpu_name] = gpus
    return {"requests": requests, "limits": limits}


def container_security(uid: int) -> dict[str, Any]:
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


def env_list(defaults: dict[str, str], extra: dict[str, str]) -> list[dict[str, str]]:
    merged = dict(defaults)
    for key in sorted(extra):
        merged[key] = extra[key]
    return [{"name": k, "value": v} for k, v in merged.items()]


def flywheel_sink_url(name: str, namespace: str) -> str:
    """The chart's in-chart payload sink as KServe's logger reaches it (its Service, port 80)."""
    return f"http://{name}{FLYWHEEL_SINK_SUFFIX}.{namespace}.svc.cluster.local"


def transformer_logger(s: ServingSettings) -> dict[str, Any] | None:
    """``spec.transformer.logger``, or None when logging is off (then nothing is rendered at all)."""
    lg = s.transformer.logger
    if not lg.enabled:
        return None
    out: dict[str, Any] = {"mode": lg.mode, "url": lg.url}
    if lg.url and lg.url.startswith("s3://"):
        # KServe's blob-storage logger: JSON objects under the path, keys from the ServiceAccount's S3 Secret.
        out["storage"] = {"path": lg.storage_path, "parameters": {"type": "s3", "format": "json"},
                          "serviceAccountName": s.storage.service_account_name}
    return out


def object_metadata(s: ServingSettings, name: str, component: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """Name, namespace, the settings' labels plus name/component, and ``annotations`` if any."""
    labels = {**s.labels, "app.kubernetes.io/name": s.name, "app.kubernetes.io/component": component}
    meta: dict[str, Any] = {"name": name, "namespace": s.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta
