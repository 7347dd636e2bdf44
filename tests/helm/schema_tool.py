"""Builds charts/reasoning-ner/values.schema.json.

The `serving` section is generated from the pydantic model the builder uses
(``ServingSettings.model_json_schema(by_alias=True)``), tightened where the model checks values in
validators rather than in field constraints (quantities, durations, storage URIs, image references),
and loosened where the chart fills in a default (empty name, namespace, transformer image). The
chart's own sections are written out here. A test fails when the committed file differs from what
this module builds, so a new ServingSettings field cannot be forgotten in the chart's schema.

Regenerate with: ``.venv/bin/python -m tests.helm.schema_tool``
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "charts" / "reasoning-ner" / "values.schema.json"

QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
GO_DURATION = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
PROM_DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"
#: repository[:tag][@sha256:digest] with a tag or a digest; "latest" is not a pin.
IMAGE = r"^[a-z0-9]([-a-z0-9._/:]*[a-z0-9])?(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
#: ":latest" is refused by the templates with a clearer message than a schema `not` gives.
PINNED = {"anyOf": [{"pattern": r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{64})?$"},
                    {"pattern": r"@sha256:[a-f0-9]{64}$"}]}
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
DIGEST = r"^(sha256:[a-f0-9]{64})?$"


def _strip(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strip(v) for k, v in node.items() if k not in ("title", "default")}
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/$defs/", "#/definitions/")
    return out


def _image(description: str, allow_empty: bool = False) -> dict[str, Any]:
    pinned = {"type": "string", "pattern": IMAGE, **copy.deepcopy(PINNED)}
    if allow_empty:
        return {"description": description, "anyOf": [{"type": "string", "const": ""}, pinned]}
    return {"description": description, **pinned}


def serving_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `serving` property schema, its definitions) from ServingSettings."""
    from reasoning_ner.config.serving import STORAGE_URI_RE, ServingSettings

    raw = ServingSettings.model_json_schema(by_alias=True, mode="validation")
    defs = _strip(raw.pop("$defs"))
    serving = _strip(raw)
    props = serving["properties"]
    props["name"] = {"type": "string", "maxLength": 45, "pattern": r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$",
                     "description": "InferenceService name and prefix of every object; empty = the release name."}
    props["namespace"] = {"type": "string", "maxLength": 63, "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
                          "description": "Namespace of every object; empty = the release namespace."}
    props["labels"]["propertyNames"] = {"pattern": r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"}
    # CPU as Kubernetes takes it: a string or a number (`cpuLimit: 4`, `--set ...cpuLimit=4`); memory a
    # string (a bare number is bytes: a forgotten unit).
    for name in ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"):
        defs["ResourceSettings"]["properties"][name]["pattern"] = QUANTITY
    for name in ("cpuRequest", "cpuLimit"):
        defs["ResourceSettings"]["properties"][name].update(type=["string", "number"], minimum=0)
    pred = defs["PredictorSettings"]["properties"]
    for name in ("cacheSizeLimit", "tmpSizeLimit"):
        pred[name]["pattern"] = QUANTITY
    pred["image"] = _image(pred["image"]["description"])
    pred["env"]["propertyNames"] = {"pattern": ENV_NAME}
    pred["gpuResourceName"]["pattern"] = r"^([a-z0-9.-]+/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
    trans = defs["TransformerSettings"]["properties"]
    trans["image"] = _image("Image reference; empty = images.registry/images.serve.repository:tag[@digest].",
                            allow_empty=True)
    trans["env"]["propertyNames"] = {"pattern": ENV_NAME}
    storage = defs["StorageSettings"]["properties"]
    storage["storageUri"]["pattern"] = STORAGE_URI_RE.pattern
    storage["serviceAccountName"]["pattern"] = K8S_NAME
    # null = images.pullSecrets (the chart fills it in, like the transformer image)
    props["imagePullSecrets"] = {"description": props["imagePullSecrets"]["description"] + " null = images.pullSecrets.",
                                 "anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "string", "pattern": K8S_NAME}}]}
    defs["ScalingSettings"]["properties"]["scaleDownDelay"].update({"pattern": GO_DURATION, "minLength": 2})
    defs["ScalingSettings"]["properties"]["prometheusUrl"]["pattern"] = r"^https?://"
    defs["KnativeSettings"]["properties"]["progressDeadline"].update({"pattern": GO_DURATION, "minLength": 2})
    net = defs["NetworkPolicySettings"]["properties"]
    for name in ("gatewayPorts", "prometheusPorts"):
        net[name]["items"].update({"minimum": 1, "maximum": 65535})
    for name in ("gatewayNamespaces", "prometheusNamespaces"):
        net[name]["items"]["pattern"] = DNS_LABEL
    for branch in net["prometheusPodLabels"]["anyOf"]:
        if branch.get("type") == "object":
            branch["propertyNames"] = {"pattern": r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"}
    return serving, defs


def _obj(properties: dict[str, Any], description: str, required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": description, "additionalProperties": False,
                           "properties": properties}
    if required:
        out["required"] = required
    return out


def _str(description: str, **kw: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **kw}


def _int(description: str, **kw: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **kw}


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _labels(description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


def _resources(description: str) -> dict[str, Any]:
    pair = _obj({"cpu": _str("CPU.", pattern=QUANTITY), "memory": _str("Memory.", pattern=QUANTITY)}, "CPU and memory.",
                ["cpu", "memory"])
    return _obj({"requests": pair, "limits": copy.deepcopy(pair)}, description, ["requests", "limits"])


def chart_schema() -> dict[str, Any]:
    from reasoning_ner.k8s.preflight import ROW_IDS as PREFLIGHT_ROWS

    serving, defs = serving_schema()
    image = _obj({"repository": _str("Repository under images.registry.", pattern=r"^[a-z0-9]([-a-z0-9._/]*[a-z0-9])?$"),
                  "digest": _str("Optional sha256 digest.", pattern=DIGEST)}, "One project image.", ["repository"])
    properties = {
        "global": {"type": "object", "description": "Helm's global values (unused)."},
        "images": _obj({
            "registry": _str("Registry and path prefix.", minLength=1, pattern=r"^[a-z0-9]([-a-z0-9._:/]*[a-z0-9])?$"),
            "tag": _str("Tag; empty = appVersion.", pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"),
            "pullPolicy": {"enum": ["IfNotPresent", "Always", "Never"], "description": "Pull policy."},
            "pullSecrets": {"type": "array", "items": {"type": "string", "pattern": K8S_NAME},
                            "description": "Names of docker-registry Secrets."},
            "serve": image, "cpu": copy.deepcopy(image), "trainGpu": copy.deepcopy(image),
        }, "The project's images.", ["registry", "serve", "cpu", "trainGpu"]),
        "serving": serving,
        "deploy": _obj({"keepLiveModel": _bool("Keep the live storageUri on upgrade.")}, "Upgrade behaviour."),
        "servingRuntime": _obj({"enabled": _bool("Create the ServingRuntime."),
                                "shmSizeLimit": _str("/dev/shm size.", pattern=QUANTITY)}, "Runtime pin."),
        "secrets": _obj({
            **{k: _obj({"name": _str("Secret name.", pattern=K8S_NAME)}, f"The {k} Secret.", ["name"])
               for k in ("git", "teacher", "hf")},
            "s3": _obj({"name": _str("Secret name.", pattern=K8S_NAME),
                        "create": _bool("Create it from the two keys (dev/MinIO)."),
                        "accessKeyId": _str("Access key id (create only)."),
                        "secretAccessKey": _str("Secret access key (create only).")}, "The s3 Secret.", ["name"]),
            "warnIfMissing": _bool("Warn in NOTES.txt about missing Secrets."),
        }, "Names of existing Secrets (never values)."),
        "kfp": _obj({
            "host": _str("KFP API base URL.", pattern=r"^https?://[^\s/]+(/[^\s]*)?$"),
            "multiUser": _bool("Multi-user Kubeflow."),
            "namespace": _str("Runs' namespace: kubeflow (standalone) or the profile namespace (multi-user).",
                              maxLength=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"),
            "editClusterRole": _str("ClusterRole bound in multi-user mode.", pattern=K8S_NAME),
            "tokenAudience": _str("Audience of the projected token.", minLength=1),
            "tokenExpirationSeconds": _int("Lifetime of the projected token.", minimum=600, maximum=86400),
        }, "Kubeflow Pipelines."),
        "pipeline": _obj({
            "name": _str("Pipeline name.", minLength=1, maxLength=128),
            "description": _str("Description."),
            "versionName": _str("Version name; empty = appVersion.", maxLength=128),
            "shared": _bool("Register a shared pipeline in multi-user mode."),
            "register": _obj({
                "enabled": _bool("Run the registration Job."),
                "backoffLimit": _int("Job retries.", minimum=0, maximum=20),
                "activeDeadlineSeconds": _int("Job deadline.", minimum=60),
                "ttlSecondsAfterFinished": _int("Job TTL.", minimum=0),
                "waitSeconds": _int("Retry window for an unreachable API.", minimum=0),
                "quitIstioSidecar": _bool("Stop an Istio sidecar at the end."),
                "podAnnotations": _labels("Pod annotations."),
                "resources": _resources("Container resources."),
            }, "The registration Job."),
        }, "The compiled pipeline."),
        "refresh": _obj({
            "enabled": _bool("Register the refresh pipeline."),
            "name": _str("Refresh pipeline name.", minLength=1, maxLength=128),
            "description": _str("Description."),
            "schedule": _str("Cron of the recurring run (5 fields, or 6 with seconds first); empty = none.",
                             pattern=r"^(\S+(\s+\S+){4,5})?$"),
            "experiment": _str("Experiment of the recurring run.", minLength=1, maxLength=128),
            "parameters": {"type": "object", "description": "Run parameters of the recurring run."},
            "maxConcurrency": _int("Concurrent runs of the schedule.", minimum=1, maximum=10),
        }, "The refresh pipeline and its recurring run."),
        "serviceAccounts": _obj({
            k: _obj({"create": _bool("Create it."), "name": _str("Name; empty = default.", pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"),
                     "annotations": _labels("Annotations.")}, f"The {k} ServiceAccount.")
            for k in ("pipelineRunner", "registration")
        }, "ServiceAccounts of the chart's workloads."),
        "rbac": _obj({
            "create": _bool("Create the RBAC objects."),
            "deploy": _obj({"enabled": _bool("Create the deploy Role.")}, "Deploy step."),
            "runExecutor": _obj({
                "enabled": _bool("Create the executor Role."),
                "configMaps": {"type": "array", "items": {"type": "string", "pattern": K8S_NAME}, "description": "ConfigMaps."},
                "artifactSecrets": {"type": "array", "items": {"type": "string", "pattern": K8S_NAME}, "description": "Secrets."},
            }, "Run executor."),
        }, "RBAC."),
        "multiNode": _obj({"enabled": _bool("TrainJob RBAC and the shared PVC."),
                           "namespace": _str("TrainJob namespace; empty = kfp.namespace (the only allowed value).",
                                             pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"),
                           "sharedPvc": _obj({
                               "create": _bool("Create the PVC."),
                               "name": _str("PVC name (run parameter shared_pvc).", pattern=K8S_NAME, maxLength=253),
                               "storageClassName": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": K8S_NAME}],
                                                    "description": "A ReadWriteMany StorageClass; null = the cluster default."},
                               "size": _str("Requested size.", pattern=QUANTITY),
                           }, "The ReadWriteMany PVC of the TrainJob nodes.", ["name", "size"]),
                           "grpoRuntime": _obj({
                               "enabled": _bool("Create the TrainingRuntime (with multiNode.enabled)."),
                               "name": _str("TrainingRuntime name (TrainJobSettings.vllm.name).", pattern=DNS_LABEL,
                                            maxLength=63),
                               "vllm": _obj({
                                   "gpus": _int("GPUs of the server pod (>= grpo.vllm_tensor_parallel_size).", minimum=1),
                                   "gpuResourceName": _str("Extended resource name of the GPUs.",
                                                           pattern=r"^([a-z0-9.-]+/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"),
                                   "port": _int("HTTP port (grpo.vllm_server_port).", minimum=1, maximum=65535),
                                   "cpu": {"description": "CPU request and limit.",
                                           "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": QUANTITY}]},
                                   "memory": _str("Memory request and limit.", pattern=QUANTITY),
                               }, "The vLLM server pod.", ["gpus", "gpuResourceName", "port", "cpu", "memory"]),
                           }, "GRPO with a vLLM server role.", ["name", "vllm"])}, "Multi-node training."),
        "monitoring": _obj({
            "podMonitor": _obj({"enabled": _bool("Create the PodMonitor."), "labels": _labels("Extra labels."),
                                "interval": _str("Scrape interval.", pattern=PROM_DURATION),
                                "scrapeTimeout": _str("Scrape timeout.", pattern=PROM_DURATION)}, "PodMonitor."),
            "dashboard": _obj({"enabled": _bool("Create the dashboard ConfigMap."), "labels": _labels("Sidecar labels."),
                               "folder": _str("Grafana folder.")}, "Grafana dashboard."),
            "alerts": _obj({
                "enabled": _bool("Create the PrometheusRule."), "labels": _labels("Extra labels."),
                "additionalLabels": _labels("Labels on every alert."),
                "errorRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "5xx share."},
                "p95LatencySeconds": {"type": "number", "exclusiveMinimum": 0, "description": "p95 latency (s)."},
                "parseFailureRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "Parse failure share."},
                "queueDepth": _int("Waiting requests per replica.", minimum=1),
                "pendingFor": _str("Pending duration.", pattern=PROM_DURATION),
                "drift": _obj({
                    "enabled": _bool("Render the drift alerts."),
                    "window": _str("Rate window.", pattern=PROM_DURATION),
                    "pendingFor": _str("Pending duration.", pattern=PROM_DURATION),
                    "parseErrorFactor": {"type": "number", "minimum": 1, "description": "Parse-error rate factor over baseline."},
                    "parseErrorMargin": {"type": "number", "minimum": 0, "maximum": 1, "description": "Absolute parse-error margin."},
                    "ungroundedFactor": {"type": "number", "minimum": 1, "description": "Ungrounded rate factor over baseline."},
                    "ungroundedMargin": {"type": "number", "minimum": 0,
                                         "description": "Absolute ungrounded margin (spans per sentence)."},
                    "entityRateFactor": {"type": "number", "exclusiveMinimum": 1, "description": "Entity-rate factor either way."},
                    "entityRateEpsilon": {"type": "number", "exclusiveMinimum": 0, "description": "Smoothing of entity rates."},
                    "minLabelSentences": _int("Sentences per label and window before alerting.", minimum=1),
                    "promptCharsShift": {"type": "number", "exclusiveMinimum": 0, "description": "Relative prompt-length shift."},
                }, "Drift alerts against the evaluation-time baseline."),
            }, "PrometheusRule."),
        }, "Observability."),
        "tests": _obj({
            "enabled": _bool("Render the helm test."),
            "sentence": _str("Sentence.", minLength=1, maxLength=4000),
            "labels": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}, "description": "Labels."},
            "url": _str("Endpoint base URL; empty = the transformer Service.", pattern=r"^(https?://[^\s]+)?$"),
            "timeoutSeconds": _int("Retry window.", minimum=10),
            "resources": _resources("Container resources."),
            "preflight": _obj({
                "enabled": _bool("Run `rner preflight --in-cluster` in the test Pod."),
                "registryUri": _str("Registry URI checked with the S3 Secret; empty = not checked.", pattern=r"^(s3://[^\s]+)?$"),
                "dvcRemote": _str("DVC remote URL checked with the S3 Secret; empty = not checked.", pattern=r"^(s3://[^\s]+)?$"),
                "skip": {"type": "array", "uniqueItems": True, "items": {"enum": list(PREFLIGHT_ROWS)},
                         "description": "Check ids to skip."},
                "resources": _resources("Preflight container resources."),
            }, "The preflight in the test Pod."),
        }, "helm test."),
        "podSecurity": _obj({"runAsUser": _int("UID.", minimum=1), "runAsGroup": _int("GID.", minimum=1)},
                            "Security context of the chart's own pods."),
        "flywheel": _obj({"sink": _obj({
            "enabled": _bool("Deploy the payload sink and its Service."),
            "image": _image("Image reference; empty = images.cpu.", allow_empty=True),
            "logRoot": _str("Where the records go: s3://bucket/prefix.", pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?$"),
            "retentionDays": _int("Days logged partitions are kept.", minimum=1),
            "optOutLabels": {"type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                             "description": "Labels whose sentences are never written."},
            "pairTimeoutS": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds a request waits for its response."},
            "flushRecords": _int("Records buffered before a part is written.", minimum=1),
            "flushSeconds": {"type": "number", "exclusiveMinimum": 0, "description": "Longest buffering time (s)."},
            "terminationGracePeriodSeconds": _int("Shutdown grace (the last flush).", minimum=1),
            "resources": _resources("Container resources."),
        }, "The in-chart payload sink (rner flywheel sink).")}, "The improvement loop's capture."),
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "reasoning-ner chart values",
        "description": "Generated by tests/helm/schema_tool.py; the serving section comes from "
                       "reasoning_ner.k8s.inference_service.ServingSettings.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "definitions": defs,
    }


def render() -> str:
    return json.dumps(chart_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
