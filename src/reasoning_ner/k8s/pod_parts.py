"""Container parts every serving object shares: probes, resources, the restricted security context, env lists."""

from __future__ import annotations

from typing import Any

from ..config.serving import ProbeSettings, ResourceSettings

SERVING_PORT = 8080


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
