"""templates/inferenceservice.yaml: the chart renders exactly the builder's InferenceService.

For the defaults, every example values file, every kustomize overlay's settings passed as
``serving: ServingSettings(...).to_helm_values()`` and a set of variations, the rendered object
equals ``build_inference_service(ServingSettings.from_helm_values(serving))``. So the chart, the
builder, the kustomize tree and the deploy step cannot drift apart. Also: ``helm upgrade`` keeps
the live model (``lookup`` against a stub API server), and the builder's refusals are the chart's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reasoning_ner.k8s import OVERLAYS, overlay_settings
from reasoning_ner.k8s.inference_service import build_inference_service

from .chart_tools import (
    EXAMPLES,
    NAMESPACE,
    RELEASE,
    chart,
    helm,
    load_values,
    one,
    parse_docs,
    render,
    render_error,
    settings_for,
    validate,
)

TEMPLATE = "templates/inferenceservice.yaml"

#: Variations over the defaults (merged by Helm): every branch of the template.
VARIATIONS: dict[str, dict[str, Any]] = {
    "knative-cpu": {"mode": "knative", "autoscaler": None},
    "knative-scale-to-zero-canary": {"mode": "knative", "scaling": {"minReplicas": 0, "maxReplicas": 3},
                                     "transformer": {"minReplicas": 0}, "knative": {"canaryTrafficPercent": 10,
                                                                                    "tagRouting": False}},
    "standard-keda-custom-query": {"autoscaler": "keda", "scaling": {"waitingRequestsQuery": "sum(x) or vector(0)",
                                                                     "maxReplicas": 3}},
    "gpu-tensor-parallel": {"predictor": {"backend": "vllm", "gpus": 2, "reasoningParser": "deepseek_r1",
                                          "gpuMemoryUtilization": 1, "maxNumSeqs": 128, "dtype": "bfloat16",
                                          "gpuResourceName": "amd.com/gpu",
                                          "nodeSelector": {"pool": "gpu"},
                                          "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
    "env-and-args": {"predictor": {"env": {"HOME": "/cache/home", "ZZ_EXTRA": "1", "AA_EXTRA": "x"},
                                   "extraArgs": ["--trust-remote-code", "--seed=7"]},
                     "transformer": {"env": {"RNER_SERVE_MAX_NEW_TOKENS": "2048", "HOME": "/tmp/home"},
                                     "extraArgs": ["--log-level=debug"]}},
    "no-transformer-no-runtime": {"transformer": {"enabled": False}, "predictor": {"runtime": None},
                                  "prometheusScraping": False},
    "probe-delays-and-names": {"name": "ner-a", "labels": {"team": "nlp"},
                               "predictor": {"startupProbe": {"initialDelaySeconds": 15},
                                             "livenessProbe": {"initialDelaySeconds": 5}},
                               "storage": {"storageUri": "pvc://models/tiny", "serviceAccountName": "sa-x"}},
    "transformer-image-pinned": {"transformer": {"image": "registry.example/ner@sha256:" + "a" * 64}},
    "model-version-pinned": {"transformer": {"env": {"RNER_SERVE_MODEL_VERSION": "v9"}}},
    "api-keys": {"transformer": {"auth": {"existingSecret": "ner-api-keys", "secretKey": "keys.txt"},
                                 "env": {"ZZ_EXTRA": "1"}}},
    "api-keys-knative": {"mode": "knative", "autoscaler": None, "transformer": {"auth": {"existingSecret": "ner-api-keys"}}},
    "logger-external-sink": {"transformer": {"logger": {"enabled": True, "mode": "request",
                                                        "url": "http://collector.obs.svc.cluster.local/ner"}}},
    "logger-blob-storage": {"transformer": {"logger": {"enabled": True, "url": "s3://ner-traffic", "storagePath": "/logs"}},
                            "storage": {"serviceAccountName": "sa-x"}},
    "drift-baseline": {"transformer": {"driftBaseline": True}, "storage": {"storageUri": "s3://reg/models/v3/"}},
    "drift-baseline-knative": {"mode": "knative", "autoscaler": None, "transformer": {"driftBaseline": True}},
}


def rendered_isvc(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return one(render(values), "InferenceService")


def assert_same_as_builder(values: dict[str, Any] | None) -> None:
    expected = build_inference_service(settings_for(values))
    got = rendered_isvc(values)
    assert got == expected, _diff(got, expected)


def _diff(got: Any, expected: Any, path: str = "") -> str:
    if isinstance(got, dict) and isinstance(expected, dict):
        for key in sorted(set(got) | set(expected)):
            if got.get(key, "<missing>") != expected.get(key, "<missing>"):
                return _diff(got.get(key, "<missing>"), expected.get(key, "<missing>"), f"{path}.{key}")
    return f"first difference at {path or '<root>'}:\n chart:   {got!r}\n builder: {expected!r}"


# ------------------------------------------------------------------------------------ equality


def test_defaults_render_the_builders_object() -> None:
    assert_same_as_builder(None)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_renders_the_builders_object(example: Path) -> None:
    assert_same_as_builder(load_values(example))


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_to_helm_values_of_every_overlay_renders_the_builders_object(overlay: str) -> None:
    """`serving: ServingSettings(...).to_helm_values()` is a valid value and gives the same object."""
    settings = overlay_settings(overlay)
    got = rendered_isvc({"serving": settings.to_helm_values()})
    assert got == build_inference_service(settings), _diff(got, build_inference_service(settings))


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_variations_render_the_builders_object(variation: str) -> None:
    assert_same_as_builder({"serving": VARIATIONS[variation]})


def test_the_equality_check_is_real() -> None:
    """A planted difference between the values the chart renders and the settings is detected."""
    values = {"serving": {"predictor": {"maxModelLen": 2048}}}
    got = rendered_isvc(values)
    other = build_inference_service(settings_for({"serving": {"predictor": {"maxModelLen": 4096}}}))
    assert got != other
    assert "--max_model_len=2048" in got["spec"]["predictor"]["model"]["args"]


# ------------------------------------------------------------------------------------ content


def test_modes_and_autoscalers() -> None:
    knative = rendered_isvc({"serving": {"mode": "knative"}})
    ann = knative["metadata"]["annotations"]
    assert ann["serving.kserve.io/deploymentMode"] == "Knative"
    assert "serving.kserve.io/autoscalerClass" not in ann
    assert knative["spec"]["predictor"]["scaleMetric"] == "concurrency"
    assert "deploymentStrategy" not in knative["spec"]["predictor"]
    assert "securityContext" not in knative["spec"]["predictor"]  # Knative's webhook refuses it
    keda = rendered_isvc({"serving": {"autoscaler": "keda", "scaling": {"maxReplicas": 4}}})
    assert keda["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    metric = keda["spec"]["predictor"]["autoScaling"]["metrics"][0]
    assert metric["type"] == "External" and metric["external"]["metric"]["backend"] == "prometheus"
    assert metric["external"]["metric"]["query"] == (
        'sum(vllm:num_requests_waiting{namespace="reasoning-ner",pod=~"reasoning-ner-predictor-.*"}) or vector(0)')
    assert keda["spec"]["transformer"]["autoScaling"]["metrics"][0]["resource"]["name"] == "cpu"
    external = rendered_isvc({"serving": {"autoscaler": "external", "scaling": {"maxReplicas": 4}}})
    assert external["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    assert "autoScaling" not in external["spec"]["predictor"]


def test_defaults_are_a_cpu_smoke_install() -> None:
    isvc = rendered_isvc()
    model = isvc["spec"]["predictor"]["model"]
    assert "--backend=huggingface" in model["args"]
    assert "nvidia.com/gpu" not in model["resources"]["limits"]
    assert "tolerations" not in isvc["spec"]["predictor"]
    assert isvc["spec"]["transformer"]["containers"][0]["image"] == "ghcr.io/reasoning-ner/reasoning-ner-serve:" + \
        chart().metadata["appVersion"]


def test_api_keys_come_from_the_mounted_secret() -> None:
    """transformer.auth: the Secret mounted read-only as a directory (no subPath, so rotation reaches the pod)
    and RNER_SERVE_API_KEYS_FILE naming the key's file; never a key in the env; off by default."""
    for values in ({"serving": VARIATIONS["api-keys"]}, {"serving": VARIATIONS["api-keys-knative"]}):
        isvc = rendered_isvc(values)
        tr = isvc["spec"]["transformer"]
        (c,) = tr["containers"]
        key = values["serving"]["transformer"]["auth"].get("secretKey", "api-keys")
        env = {e["name"]: e["value"] for e in c["env"] if "value" in e}  # + a valueFrom (model version)
        assert env["RNER_SERVE_API_KEYS_FILE"] == f"/var/run/secrets/reasoning-ner/api-keys/{key}"
        assert not [n for n in env if n.startswith("RNER_SERVE_API_KEYS") and n != "RNER_SERVE_API_KEYS_FILE"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "api-keys")
        assert mount == {"name": "api-keys", "mountPath": "/var/run/secrets/reasoning-ner/api-keys", "readOnly": True}
        volume = next(v for v in tr["volumes"] if v["name"] == "api-keys")
        assert volume == {"name": "api-keys", "secret": {"secretName": "ner-api-keys", "items": [{"key": key, "path": key}]}}
        assert "api-keys" not in {v["name"] for v in isvc["spec"]["predictor"]["volumes"]}  # the predictor never sees them
        assert validate([isvc]) == []
    plain = rendered_isvc()["spec"]["transformer"]
    assert "RNER_SERVE_API_KEYS_FILE" not in {e["name"] for e in plain["containers"][0]["env"]}
    assert [v["name"] for v in plain["volumes"]] == ["tmp"]


def test_security_and_resources_on_every_container() -> None:
    for values in (None, {"serving": {"mode": "knative"}}):
        spec = rendered_isvc(values)["spec"]
        containers = [spec["predictor"]["model"], *spec["transformer"]["containers"]]
        for c in containers:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
            assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
            assert set(c["resources"]) == {"requests", "limits"}
            assert {"/tmp"} <= {m["mountPath"] for m in c["volumeMounts"]}


def test_release_name_and_namespace_are_the_defaults() -> None:
    objs = render(name="ner-staging", namespace="ml")
    isvc = one(objs, "InferenceService")
    assert (isvc["metadata"]["name"], isvc["metadata"]["namespace"]) == ("ner-staging", "ml")
    assert isvc == build_inference_service(settings_for(None, name="ner-staging", namespace="ml"))
    # The serving objects in the release namespace; what the pipeline runs use in kfp.namespace (kubeflow).
    assert {o["metadata"]["namespace"] for o in objs} == {"ml", "kubeflow"}
    for kind, name in [("ServiceAccount", "reasoning-ner-serving"), ("NetworkPolicy", "ner-staging-ingress"),
                       ("Role", "ner-staging-deploy"), ("Job", "ner-staging-register-pipeline")]:
        assert one(objs, kind, name)["metadata"]["namespace"] == "ml"
    for kind, name in [("ServiceAccount", "ner-staging-pipeline-runner"), ("Role", "ner-staging-run-executor")]:
        assert one(objs, kind, name)["metadata"]["namespace"] == "kubeflow"


def test_rendered_object_is_valid_against_the_crd() -> None:
    for values in (None, {"serving": {"mode": "knative"}}, {"serving": VARIATIONS["gpu-tensor-parallel"]}):
        assert validate([rendered_isvc(values)]) == []


# ------------------------------------------------------------------------------------ refusals

#: values -> a fragment of the message; the builder's settings refuse the same values.
REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"mode": "knative", "autoscaler": "keda"}, "autoscaler 'keda' needs mode 'standard'"),
    ({"autoscaler": "kpa"}, "autoscaler 'kpa' is Knative's autoscaler"),
    ({"knative": {"canaryTrafficPercent": 10}}, "canary_traffic_percent is a Knative-mode feature"),
    ({"scaling": {"minReplicas": 0}}, "scaling.min_replicas 0 (scale to zero) needs mode 'knative'"),
    ({"scaling": {"minReplicas": 3, "maxReplicas": 2}}, "scaling.max_replicas 2 < min_replicas 3"),
    ({"transformer": {"minReplicas": 0}}, "transformer.min_replicas 0 needs mode 'knative'"),
    ({"predictor": {"backend": "vllm"}}, "predictor.backend 'vllm' needs predictor.gpus >= 1"),
    ({"predictor": {"reasoningParser": "qwen3"}}, "predictor.reasoning_parser is a vLLM flag"),
    ({"predictor": {"env": {"PYTHONPATH": "/x"}}}, "which KServe's admission webhook refuses"),
    ({"mode": "knative", "knative": {"timeoutSeconds": 60}}, "knative.timeout_seconds 60 is shorter than"),
    ({"mode": "knative", "knative": {"progressDeadline": "5m"}}, "must exceed the predictor's startup probe budget"),
    ({"storage": {"s3SecretName": None}}, "storage.s3_endpoint is set but neither storage.s3_secret_name nor storage.irsa_role_arn"),
    ({"transformer": {"enabled": False, "logger": {"enabled": True, "url": "s3://ner-traffic"}}},
     "transformer.logger needs transformer.enabled"),
    ({"predictor": {"resources": {"cpuRequest": "3"}}}, "cpu_request 3 exceeds cpu_limit 2"),
    ({"transformer": {"resources": {"memoryRequest": "2Gi"}}}, "memory_request 2Gi exceeds memory_limit 1Gi"),
    ({"transformer": {"enabled": False, "auth": {"existingSecret": "ner-api-keys"}}}, "transformer.auth needs transformer.enabled"),
]


@pytest.mark.parametrize("serving,message", REFUSALS, ids=[m[:40] for _, m in REFUSALS])
def test_the_chart_refuses_what_the_builder_refuses(serving: dict[str, Any], message: str) -> None:
    error = render_error({"serving": serving})
    assert message in error, error
    with pytest.raises((ValidationError, ValueError)) as exc:
        settings_for({"serving": serving})
    if "exceeds" not in message:  # the builder names the resource section differently
        assert message in str(exc.value)


def test_all_problems_are_reported_at_once() -> None:
    error = render_error({"serving": {"autoscaler": "kpa", "scaling": {"minReplicas": 0}}})
    assert "autoscaler 'kpa'" in error and "scale to zero" in error


def test_a_bad_release_name_is_refused() -> None:
    error = render_error({}, name="Reasoning.NER")
    assert "KServe's InferenceService name format" in error
    assert "longer than 45" in render_error({}, name="n" * 46)


# ------------------------------------------------------------------------------------ upgrade keeps the live model


LIVE_URI = "s3://reasoning-ner/models/grpo-20261201"


def _api(live: dict[str, Any] | None):
    """A stub Kubernetes API server: discovery for serving.kserve.io/v1beta1 and the live object."""
    isvc_path = f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{RELEASE}"

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        p = path.split("?")[0]
        if p == "/apis/serving.kserve.io/v1beta1":
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "serving.kserve.io/v1beta1",
                         "resources": [{"name": "inferenceservices", "singularName": "inferenceservice",
                                        "namespaced": True, "kind": "InferenceService",
                                        "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]}
        if p == isvc_path and live is not None:
            return 200, live
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}

    return handler


def _live_object(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the cluster holds after the deploy step promoted a model: the builder's object with the
    promoted URI and version annotation, plus server-side fields."""
    live = build_inference_service(settings_for(values), LIVE_URI, model_version="20261201T000000-abcdef12")
    live["metadata"].update({"uid": "1234", "resourceVersion": "42", "generation": 3})
    live["status"] = {"url": "http://reasoning-ner.reasoning-ner.example.com"}
    return live


def _render_against(server_url: str, values: dict[str, Any] | None = None, upgrade: bool = True) -> dict[str, Any]:
    cfg = helm.Config(kube_apiserver=server_url, kube_token="test-token", namespace=NAMESPACE)
    try:
        out = cfg.render(chart(), values or {}, name=RELEASE, namespace=NAMESPACE,
                         is_upgrade=upgrade, is_install=not upgrade)
    finally:
        cfg.close()
    return one(parse_docs(out[f"reasoning-ner/{TEMPLATE}"]), "InferenceService")


def test_upgrade_keeps_the_promoted_model(stub_server) -> None:
    server = stub_server(_api(_live_object()))
    isvc = _render_against(server.url)
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == LIVE_URI
    assert isvc["metadata"]["annotations"]["reasoning-ner.io/model-version"] == "20261201T000000-abcdef12"
    # exactly what the deploy step would build for the promoted model: nothing else moves
    assert isvc == build_inference_service(settings_for(None), LIVE_URI, model_version="20261201T000000-abcdef12")
    lookups = [r["path"] for r in server.requests]
    assert f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{RELEASE}" in \
        [p.split("?")[0] for p in lookups]


def test_upgrade_with_changed_settings_still_keeps_the_model(stub_server) -> None:
    server = stub_server(_api(_live_object()))
    values = {"serving": {"transformer": {"maxReplicas": 6}, "predictor": {"maxModelLen": 2048}}}
    isvc = _render_against(server.url, values)
    assert isvc["spec"]["transformer"]["maxReplicas"] == 6
    assert "--max_model_len=2048" in isvc["spec"]["predictor"]["model"]["args"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == LIVE_URI


def test_keep_live_model_off_applies_the_values(stub_server) -> None:
    server = stub_server(_api(_live_object()))
    isvc = _render_against(server.url, {"deploy": {"keepLiveModel": False}})
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://reasoning-ner/models/tiny-cpu/champion"
    assert "reasoning-ner.io/model-version" not in isvc["metadata"]["annotations"]
    assert not [r for r in server.requests if "inferenceservices" in r["path"]]  # no lookup of the model


def test_first_install_uses_the_values(stub_server) -> None:
    server = stub_server(_api(None))
    isvc = _render_against(server.url, upgrade=False)
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://reasoning-ner/models/tiny-cpu/champion"
    assert isvc == build_inference_service(settings_for(None))


def test_upgrade_fetches_the_drift_baseline_of_the_promoted_model(stub_server) -> None:
    """With serving.transformer.driftBaseline the transformer's STORAGE_URI follows the live model, not the values."""
    values = {"serving": {"transformer": {"driftBaseline": True}}}
    server = stub_server(_api(_live_object(values)))
    env = {e["name"]: e.get("value") for e in _render_against(server.url, values)["spec"]["transformer"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == f"{LIVE_URI}/drift_baseline.json"
    assert env["RNER_SERVE_DRIFT_BASELINE"] == "/mnt/models/drift_baseline.json"
    default_env = {e["name"] for e in rendered_isvc()["spec"]["transformer"]["containers"][0]["env"]}
    assert not {"STORAGE_URI", "RNER_SERVE_DRIFT_BASELINE"} & default_env, "off by default: no init container"


def test_offline_render_uses_the_values() -> None:
    """`helm template` (and this SDK's offline render) has no cluster: lookup is empty."""
    isvc = rendered_isvc({"serving": {"storage": {"storageUri": "s3://bucket/pinned"}}})
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/pinned"


def test_the_transformer_probes_the_truthful_endpoint_and_knows_the_model_version() -> None:
    """Readiness on /v2/health/ready (which follows the predictor, serving/health.py), no upstream probing when
    the predictor scales to zero, and the version from the annotation KServe copies to the pod."""
    (c,) = rendered_isvc()["spec"]["transformer"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {"name": "RNER_SERVE_MODEL_VERSION",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['reasoning-ner.io/model-version']"}}} in c["env"]
    assert not any(e["name"] == "RNER_SERVE_PROBE_UPSTREAM" for e in c["env"])
    (z,) = rendered_isvc({"serving": VARIATIONS["knative-scale-to-zero-canary"]})["spec"]["transformer"]["containers"]
    assert {"name": "RNER_SERVE_PROBE_UPSTREAM", "value": "false"} in z["env"]
    assert not any(e["name"] == "RNER_SERVE_MODEL_VERSION" for e in z["env"])  # Knative refuses fieldRef by default
