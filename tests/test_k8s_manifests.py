"""The serving objects: builder content, refusals, schema validation, the committed kustomize tree.

CRD kinds are validated with jsonschema against the upstream CRDs in ../shared/k8s/crds (strict:
unknown fields are errors, CEL rules evaluated), core kinds with kubernetes_validate (Kubernetes
1.33, strict), and every overlay is rendered with the real ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from reasoning_ner.k8s import (
    OVERLAYS,
    ServingSettings,
    ServingSettingsError,
    build_inference_service,
    build_objects,
    build_s3_secret_placeholder,
    build_scaled_objects,
    check_single_autoscaler,
    generate_manifests,
    overlay_settings,
    stale_manifests,
)
from reasoning_ner.k8s.inference_service import predictor_args
from reasoning_ner.k8s.manifests import merge_patch_diff, render_manifests
from reasoning_ner.k8s.schema import ManifestValidationError, object_problems, validate_objects

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT.parent / "shared" / "k8s" / "crds"
MANIFESTS = REPO_ROOT / "manifests"
ALL = ["base", *OVERLAYS]
K8S_VERSION = "1.33"


@pytest.fixture(scope="module", autouse=True)
def _crds_present() -> None:
    if not (CRD_DIR / "serving.kserve.io_inferenceservices.yaml").is_file():
        pytest.fail(f"upstream CRDs not found at {CRD_DIR}")


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def isvc_of(name: str) -> dict[str, Any]:
    return by_kind(build_objects(overlay_settings(name)), "InferenceService")[0]


# ------------------------------------------------------------------------------------ validity


@pytest.mark.parametrize("overlay", ALL)
def test_every_rendered_object_is_valid(overlay: str) -> None:
    objs = build_objects(overlay_settings(overlay))
    validate_objects(objs, crd_dir=CRD_DIR, k8s_version=K8S_VERSION)
    kinds = sorted(o["kind"] for o in objs)
    expected = ["InferenceService", "NetworkPolicy", "NetworkPolicy", "ServiceAccount"]
    if overlay == "standard-external-keda":
        expected = sorted(expected + ["ScaledObject", "ScaledObject"])
    assert kinds == expected


def test_secret_placeholder_is_valid_and_holds_no_values() -> None:
    secret = build_s3_secret_placeholder(ServingSettings())
    validate_objects([secret], crd_dir=CRD_DIR, k8s_version=K8S_VERSION)
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_DEFAULT_REGION": "us-east-1"}
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "1"
    smoke = build_s3_secret_placeholder(overlay_settings("cpu-smoke"))
    assert smoke["stringData"]["AWS_ENDPOINT_URL"] == "http://minio.minio.svc.cluster.local:9000", "the pipeline's steps read it"
    assert smoke["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio.minio.svc.cluster.local:9000"


def test_the_crd_validator_is_real() -> None:
    """Deliberately wrong objects fail, each for the reason planted."""
    isvc = isvc_of("knative")
    cases = [
        (lambda o: o["spec"]["predictor"].__setitem__("minReplica", 1), "'minReplica' was unexpected"),
        (lambda o: o["spec"]["predictor"]["model"].__setitem__("storageURI", "s3://x/y"), "'storageURI' was unexpected"),
        (lambda o: o["spec"]["predictor"].__setitem__("scaleMetric", "gpu"), "'gpu' is not one of"),
        (lambda o: o["spec"]["predictor"].__setitem__("canaryTrafficPercent", "10"), "is not of type 'integer'"),
        (lambda o: o["spec"]["predictor"].__setitem__("minReplicas", 2**40), "is not a 'int32'"),
        (lambda o: o["spec"]["predictor"]["model"]["resources"]["limits"].__setitem__("cpu", [8]), "neither an integer nor a string"),
        (lambda o: o["spec"]["predictor"]["model"]["resources"]["limits"].__setitem__("memory", "48 GB"), "does not match"),
        (lambda o: o["spec"]["predictor"]["model"].pop("modelFormat") and o["spec"]["predictor"]["model"].__setitem__(
            "modelFormat", {"version": "1"}), "'name' is a required property"),
        (lambda o: o["spec"].pop("predictor"), "'predictor' is a required property"),
        (lambda o: o["metadata"].__setitem__("name", "Reasoning_NER"), "not a DNS-1123 subdomain"),
        (lambda o: o["metadata"]["annotations"].__setitem__("x", 1), "must map strings to strings"),
    ]
    for mutate, message in cases:
        bad = copy.deepcopy(isvc)
        mutate(bad)
        problems = object_problems(bad, crd_dir=CRD_DIR)
        assert any(message in p for p in problems), (message, problems)


def test_scaled_object_schema_and_cel_rule() -> None:
    so = build_scaled_objects(overlay_settings("standard-external-keda"))[0]
    assert object_problems(so, crd_dir=CRD_DIR) == []
    bad = copy.deepcopy(so)
    bad["spec"]["minReplicaCount"], bad["spec"]["maxReplicaCount"] = 5, 2
    assert any("minReplicaCount must be less than or equal to maxReplicaCount" in p for p in object_problems(bad, crd_dir=CRD_DIR))
    bad = copy.deepcopy(so)
    bad["spec"]["triggers"][0]["metadata"]["threshold"] = 4  # trigger metadata is a map of strings
    assert any("is not of type 'string'" in p for p in object_problems(bad, crd_dir=CRD_DIR))
    bad = copy.deepcopy(so)
    del bad["spec"]["scaleTargetRef"]
    assert any("'scaleTargetRef' is a required property" in p for p in object_problems(bad, crd_dir=CRD_DIR))


def test_core_kinds_are_validated_strictly() -> None:
    objs = build_objects(ServingSettings())
    sa, netpol = by_kind(objs, "ServiceAccount")[0], by_kind(objs, "NetworkPolicy")[0]
    bad_sa = copy.deepcopy(sa)
    bad_sa["automountToken"] = False
    assert any("'automountToken' was unexpected" in p for p in object_problems(bad_sa, k8s_version=K8S_VERSION))
    bad_np = copy.deepcopy(netpol)
    bad_np["spec"]["ingress"][0]["ports"][0]["port"] = [8080]
    assert object_problems(bad_np, k8s_version=K8S_VERSION)
    with pytest.raises(ManifestValidationError, match="ServiceAccount reasoning-ner-serving"):
        validate_objects([bad_sa], k8s_version=K8S_VERSION)


# ------------------------------------------------------------------------------------ content


def test_predictor_is_the_hf_runtime_with_vllm_for_qwen3_8b() -> None:
    model = isvc_of("base")["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "huggingface"} and model["runtime"] == "kserve-huggingfaceserver"
    assert model["image"] == "kserve/huggingfaceserver:v0.21.0-gpu" and "name" not in model
    assert model["args"][:2] == ["--backend=vllm", "--max_model_len=8192"]
    assert "--reasoning-parser=qwen3" in model["args"] and "--dtype=bfloat16" in model["args"]
    for section in ("requests", "limits"):
        assert model["resources"][section]["nvidia.com/gpu"] == 1
    startup = model["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60
    assert model["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    sc = model["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {m["mountPath"] for m in model["volumeMounts"]} == {"/tmp", "/cache"}
    env = {e["name"]: e["value"] for e in model["env"]}
    assert env["HF_HOME"].startswith("/cache") and env["HOME"] == "/cache" and env["HF_HUB_OFFLINE"] == "1"
    # Every container of every overlay has requests and limits and the hardened security context.
    for overlay in ALL:
        spec = isvc_of(overlay)["spec"]
        for c in [spec["predictor"]["model"], *spec["transformer"]["containers"]]:
            assert set(c["resources"]) == {"requests", "limits"}
            assert c["securityContext"]["readOnlyRootFilesystem"] is True and "privileged" not in c["securityContext"]


def test_vllm_only_flags_follow_the_backend() -> None:
    s = overlay_settings("cpu-smoke")
    args = predictor_args(s)
    assert args == ["--backend=huggingface", "--max_model_len=1024", "--dtype=float32", "--disable_log_requests"]
    model = isvc_of("cpu-smoke")["spec"]["predictor"]["model"]
    assert "nvidia.com/gpu" not in model["resources"]["limits"] and "tolerations" not in isvc_of("cpu-smoke")["spec"]["predictor"]
    two = ServingSettings(predictor={"gpus": 2, "reasoning_parser": "deepseek_r1", "extra_args": ["--enforce-eager"]})
    assert predictor_args(two)[-3:] == ["--max-num-seqs=64", "--tensor-parallel-size=2", "--enforce-eager"]
    assert "--reasoning-parser=deepseek_r1" in predictor_args(two)


def test_transformer_is_our_service_pointed_at_the_predictor() -> None:
    tr = isvc_of("base")["spec"]["transformer"]
    (c,) = tr["containers"]
    assert c["name"] == "kserve-container" and c["image"].startswith("ghcr.io/reasoning-ner/reasoning-ner-serve:")
    assert c["command"] == ["rner"] and c["args"][:4] == ["--profile", "qwen3-8b", "serve", "--backend=remote"]
    # KServe appends these three unless present; giving them keeps the manifest the whole truth.
    for flag in ("--model_name=", "--predictor_host=", "--http_port="):
        assert any(a.startswith(flag) for a in c["args"])
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}  # RNER_SERVE_MODEL_VERSION: valueFrom
    assert env["RNER_SERVE_REMOTE_URL"] == "http://reasoning-ner-predictor/openai/v1"
    assert env["RNER_SERVE_HOST"] == "0.0.0.0" and env["RNER_SERVE_BACKEND"] == "remote"
    no_tr = build_inference_service(ServingSettings(transformer={"enabled": False}))
    assert "transformer" not in no_tr["spec"]


def test_knative_mode_fields() -> None:
    isvc = isvc_of("knative")
    ann = isvc["metadata"]["annotations"]
    assert ann["serving.kserve.io/deploymentMode"] == "Knative" and "serving.kserve.io/autoscalerClass" not in ann
    assert ann["serving.kserve.io/enable-tag-routing"] == "true"
    p = isvc["spec"]["predictor"]
    assert (p["containerConcurrency"], p["scaleMetric"], p["scaleTarget"], p["timeout"]) == (64, "concurrency", 32, 600)
    assert p["annotations"]["serving.knative.dev/progress-deadline"] == "1800s"
    # Fields Knative's webhook refuses without extra feature flags are left out.
    assert not {"securityContext", "terminationGracePeriodSeconds", "deploymentStrategy", "autoScaling"} & set(p)
    zero = overlay_settings("knative").with_updates(scaling={"min_replicas": 0}, knative={"canary_traffic_percent": 10})
    zp = build_inference_service(zero)["spec"]["predictor"]
    assert zp["minReplicas"] == 0 and zp["canaryTrafficPercent"] == 10
    validate_objects([build_inference_service(zero)], crd_dir=CRD_DIR)


def test_standard_keda_is_kserve_managed() -> None:
    isvc = isvc_of("standard-keda")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    ext = metric["external"]
    assert ext["metric"]["backend"] == "prometheus" and "vllm:num_requests_waiting" in ext["metric"]["query"]
    assert 'namespace="reasoning-ner"' in ext["metric"]["query"] and 'pod=~"reasoning-ner-predictor-.*"' in ext["metric"]["query"]
    assert ext["target"] == {"type": "Value", "value": 4}  # KServe reads target.value as the KEDA threshold
    assert "scaleMetric" not in isvc["spec"]["predictor"]  # KServe's webhook refuses scaleMetric with KEDA
    assert isvc["spec"]["transformer"]["autoScaling"]["metrics"][0]["resource"]["target"]["type"] == "Utilization"


def test_standard_external_keda_has_one_autoscaler_per_deployment() -> None:
    objs = build_objects(overlay_settings("standard-external-keda"))
    isvc = by_kind(objs, "InferenceService")[0]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    assert "autoScaling" not in isvc["spec"]["predictor"]
    pred_so, tr_so = by_kind(objs, "ScaledObject")
    assert pred_so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "reasoning-ner-predictor"}
    trig = pred_so["spec"]["triggers"][0]
    assert trig["type"] == "prometheus" and trig["metadata"]["threshold"] == "4" and "vllm:num_requests_waiting" in trig["metadata"]["query"]
    assert tr_so["spec"]["scaleTargetRef"]["name"] == "reasoning-ner-transformer"
    # The same ScaledObjects next to a KServe-managed (keda) or default InferenceService are refused.
    for other in ("standard-keda", "base", "knative"):
        with pytest.raises(ServingSettingsError, match="autoscalerClass: external"):
            check_single_autoscaler([isvc_of(other), pred_so])
    with pytest.raises(ServingSettingsError, match="both scale Deployment reasoning-ner-predictor"):
        check_single_autoscaler([isvc, pred_so, {**pred_so, "metadata": {**pred_so["metadata"], "name": "second"}}])
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h", "namespace": "reasoning-ner"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "reasoning-ner-predictor"}}}
    with pytest.raises(ServingSettingsError, match="HorizontalPodAutoscaler h"):
        check_single_autoscaler([isvc_of("standard-keda"), hpa])


def test_storage_access_through_the_service_account() -> None:
    objs = build_objects(ServingSettings())
    sa = by_kind(objs, "ServiceAccount")[0]
    assert sa["secrets"] == [{"name": "reasoning-ner-s3"}] and sa["automountServiceAccountToken"] is False
    assert by_kind(objs, "InferenceService")[0]["spec"]["predictor"]["serviceAccountName"] == sa["metadata"]["name"]
    # KServe ignores s3-* annotations on a ServiceAccount without an IRSA role: they go on the Secret.
    smoke_sa = by_kind(build_objects(overlay_settings("cpu-smoke")), "ServiceAccount")[0]
    assert "annotations" not in smoke_sa["metadata"]
    irsa = ServingSettings(storage={"irsa_role_arn": "arn:aws:iam::123456789012:role/rner", "s3_secret_name": None},
                           image_pull_secrets=["ghcr-pull"])
    irsa_sa = by_kind(build_objects(irsa), "ServiceAccount")[0]
    assert irsa_sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/rner",
                                                  "serving.kserve.io/s3-usehttps": "1", "serving.kserve.io/s3-region": "us-east-1",
                                                  "serving.kserve.io/s3-verifyssl": "1"}
    assert "secrets" not in irsa_sa and irsa_sa["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    with pytest.raises(ValidationError, match="neither storage.s3_secret_name nor storage.irsa_role_arn"):
        ServingSettings(storage={"s3_endpoint": "minio:9000", "s3_secret_name": None})
    with pytest.raises(ValidationError, match="irsa_role_arn"):
        ServingSettings(storage={"irsa_role_arn": "my-role"})
    pvc = build_inference_service(ServingSettings(storage={"storage_uri": "pvc://rner-models/grpo/v3"}))
    assert pvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://rner-models/grpo/v3"


def test_network_policies_keep_the_predictor_behind_the_transformer() -> None:
    """The gateways reach the transformer only; the predictor's serving port only the transformer's pods;
    Prometheus's pods both (what the rules allow is evaluated in tests/helm/test_networkpolicy.py)."""
    front, predictor = by_kind(build_objects(ServingSettings()), "NetworkPolicy")
    isvc = {"serving.kserve.io/inferenceservice": "reasoning-ner"}
    assert front["metadata"]["name"] == "reasoning-ner-ingress"
    assert front["spec"]["podSelector"] == {"matchLabels": {**isvc, "component": "transformer"}}
    assert predictor["spec"]["podSelector"] == {"matchLabels": {**isvc, "component": "predictor"}}
    for np in (front, predictor):
        assert np["spec"]["policyTypes"] == ["Ingress"]
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    assert [r["from"] for r in front["spec"]["ingress"]] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}} for n in ("istio-system", "knative-serving", "kserve")],
        [prometheus],
    ]
    assert [r["from"] for r in predictor["spec"]["ingress"]] == [
        [{"podSelector": {"matchLabels": {**isvc, "component": "transformer"}}}], [prometheus]]
    knative = by_kind(build_objects(overlay_settings("knative")), "NetworkPolicy")[1]
    data_path = knative["spec"]["ingress"][1]
    assert [p["port"] for p in data_path["ports"]] == [8012, 8013, 9090]  # queue-proxy only, never 8080
    alone = by_kind(build_objects(ServingSettings(transformer={"enabled": False})), "NetworkPolicy")
    assert [np["spec"]["podSelector"]["matchLabels"]["component"] for np in alone] == ["predictor"]


def test_api_keys_from_an_existing_secret() -> None:
    s = ServingSettings(transformer={"auth": {"existing_secret": "ner-api-keys"}})
    tr = build_inference_service(s)["spec"]["transformer"]
    env = {e["name"]: e.get("value") for e in tr["containers"][0]["env"]}
    assert env["RNER_SERVE_API_KEYS_FILE"] == "/var/run/secrets/reasoning-ner/api-keys/api-keys"
    assert {"name": "api-keys", "secret": {"secretName": "ner-api-keys", "items": [{"key": "api-keys", "path": "api-keys"}]}} \
        in tr["volumes"]
    assert s.to_helm_values()["transformer"]["auth"] == {"existingSecret": "ner-api-keys", "secretKey": "api-keys"}
    validate_objects(build_objects(s), crd_dir=CRD_DIR, k8s_version=K8S_VERSION)
    with pytest.raises(ValidationError, match="transformer.auth needs transformer.enabled"):
        ServingSettings(transformer={"enabled": False, "auth": {"existing_secret": "ner-api-keys"}})
    with pytest.raises(ValidationError, match="existing_secret"):
        ServingSettings(transformer={"auth": {"existing_secret": "Not A Name"}})


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("values, message", [
    ({"mode": "standard", "knative": {"canary_traffic_percent": 10}}, "canary_traffic_percent is a Knative-mode feature"),
    ({"mode": "knative", "autoscaler": "keda"}, "needs mode 'standard'"),
    ({"mode": "knative", "autoscaler": "external"}, "needs mode 'standard'"),
    ({"mode": "standard", "autoscaler": "kpa"}, "Knative's autoscaler"),
    ({"mode": "RawDeployment"}, "deprecated KServe name; use 'standard'"),
    ({"mode": "standard", "scaling": {"min_replicas": 0}}, "scale to zero) needs mode 'knative'"),
    ({"scaling": {"min_replicas": 3, "max_replicas": 2}}, "max_replicas 2 < min_replicas 3"),
    ({"predictor": {"gpus": 0}}, "'vllm' needs predictor.gpus >= 1"),
    ({"predictor": {"backend": "huggingface", "gpus": 0}}, "reasoning_parser is a vLLM flag"),
    ({"predictor": {"env": {"PYTHONPATH": "/x"}}}, "KServe's admission webhook refuses"),
    ({"predictor": {"resources": {"cpu_request": "16", "cpu_limit": "8"}}}, "cpu_request 16 exceeds cpu_limit 8"),
    ({"predictor": {"resources": {"memory_request": "32 GB"}}}, "is not a Kubernetes quantity"),
    ({"mode": "knative", "knative": {"timeout_seconds": 60}}, "shorter than transformer.request_timeout_s"),
    ({"mode": "knative", "knative": {"progress_deadline": "600s"}}, "must exceed the predictor's startup probe budget"),
    ({"storage": {"storage_uri": "work/models/grpo"}}, "not deployable"),
    ({"storage": {"storage_uri": "gs://bucket/model"}}, "not deployable"),
    ({"storage": {"storage_uri": "s3://b/model"}}, "'b' is not an S3 bucket name (3-63 characters"),
    ({"storage": {"storage_uri": "s3://My_Bucket/model"}}, "'My_Bucket' is not an S3 bucket name"),
    ({"storage": {"storage_uri": "s3://bucket/a model"}}, "not deployable"),
    ({"name": "Reasoning_NER"}, "KServe's InferenceService name format"),
    ({"name": "a" * 46}, "longer than 45 characters"),
    ({"predictor": {"imagee": "x"}}, "Extra inputs are not permitted"),
])
def test_invalid_combinations_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServingSettings.model_validate(values)


def test_scaled_objects_need_autoscaler_external() -> None:
    for settings in (ServingSettings(), overlay_settings("standard-keda"), overlay_settings("knative")):
        with pytest.raises(ServingSettingsError, match="autoscalerClass: external"):
            build_scaled_objects(settings)
    with pytest.raises(ValueError, match="not deployable"):
        build_inference_service(ServingSettings(), storage_uri="/models/grpo")


def test_settings_are_helm_values_one_to_one() -> None:
    for overlay in ALL:
        s = overlay_settings(overlay)
        values = s.to_helm_values()
        assert "maxModelLen" in values["predictor"] and "s3Endpoint" in values["storage"] and "networkPolicy" in values
        assert ServingSettings.from_helm_values(values) == s
        assert build_objects(ServingSettings.from_helm_values(yaml.safe_load(yaml.safe_dump(values)))) == build_objects(s)


# ------------------------------------------------------------------------------------ the committed tree


def test_committed_manifests_are_fresh() -> None:
    stale = stale_manifests(MANIFESTS)
    assert not stale, f"manifests/ is stale ({', '.join(stale)}); run `rner k8s manifests --out manifests`"


def test_generate_manifests_writes_exactly_the_render(tmp_path: Path) -> None:
    (tmp_path / "overlays" / "old").mkdir(parents=True)
    leftover = tmp_path / "overlays" / "old" / "kustomization.yaml"
    leftover.write_text(render_manifests()["base/kustomization.yaml"])  # a generated file that no longer belongs
    generate_manifests(tmp_path)
    assert stale_manifests(tmp_path) == [] and not leftover.exists()
    (tmp_path / "base" / "inference-service.yaml").write_text("# edited\n")
    assert stale_manifests(tmp_path) == ["base/inference-service.yaml (changed)"]


def test_overlays_are_minimal_patches() -> None:
    files = render_manifests()
    knative_patch = yaml.safe_load(files["overlays/knative/inference-service.patch.yaml"])
    assert knative_patch["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] is None  # null deletes
    assert "model" not in knative_patch["spec"]["predictor"]  # the runtime container is unchanged
    assert merge_patch_diff({"a": 1, "b": {"c": 1}}, {"b": {"c": 2}, "d": []}) == {"a": None, "b": {"c": 2}, "d": []}
    assert "overlays/standard-external-keda/scaled-objects.yaml" in files
    assert "base/s3-credentials.secret.example.yaml" in files
    assert "overlays/cpu-smoke/s3-credentials.secret.example.yaml" in files, "MinIO's annotations differ from the base's"
    assert "overlays/knative/s3-credentials.secret.example.yaml" not in files
    assert "s3-credentials" not in files["base/kustomization.yaml"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed on this machine")
@pytest.mark.parametrize("overlay", ALL)
def test_kustomize_renders_exactly_the_builder_output(overlay: str) -> None:
    path = MANIFESTS / ("base" if overlay == "base" else f"overlays/{overlay}")
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    validate_objects(docs, crd_dir=CRD_DIR, k8s_version=K8S_VERSION)
    check_single_autoscaler(docs)
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(docs, key=key) == sorted(build_objects(overlay_settings(overlay)), key=key)


def test_transformer_readiness_probing_and_model_version_env() -> None:
    """The transformer's readiness follows the predictor (serving/health.py) except when the predictor
    scales to zero; its V2 model_version comes from the InferenceService annotation (Standard mode)."""
    def env_of(s: ServingSettings) -> dict[str, Any]:
        (c,) = build_inference_service(s)["spec"]["transformer"]["containers"]
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}

    (c,) = isvc_of("base")["spec"]["transformer"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready" and c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    base = env_of(overlay_settings("base"))
    assert "RNER_SERVE_PROBE_UPSTREAM" not in base  # default: probe the predictor
    assert base["RNER_SERVE_MODEL_VERSION"] == {"fieldRef": {"fieldPath": "metadata.annotations['reasoning-ner.io/model-version']"}}
    pinned = env_of(ServingSettings(transformer={"env": {"RNER_SERVE_MODEL_VERSION": "v9"}}))
    assert pinned["RNER_SERVE_MODEL_VERSION"] == "v9"
    knative = overlay_settings("knative")
    assert "RNER_SERVE_PROBE_UPSTREAM" not in env_of(knative) and "RNER_SERVE_MODEL_VERSION" not in env_of(knative)
    zero = env_of(knative.with_updates(scaling={"min_replicas": 0}))
    assert zero["RNER_SERVE_PROBE_UPSTREAM"] == "false"
    validate_objects([build_inference_service(knative.with_updates(scaling={"min_replicas": 0}))], crd_dir=CRD_DIR)
