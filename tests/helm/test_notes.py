"""templates/NOTES.txt: how to call the endpoint (curl and the openai client), the model served,
the pipeline registration, and warnings about missing Secrets and about an existing S3 Secret that
lacks the serving.kserve.io/s3-* annotations KServe reads from it (lookup against a stub API server)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from pipelines.reasoning_ner_pipeline import COMPILED
from reasoning_ner.images import content_version

from .chart_tools import NAMESPACE, RELEASE, chart, helm, render_files

KFP_NS = "kubeflow"
MINIO_ANNOTATIONS = {"serving.kserve.io/s3-endpoint": "minio.minio.svc.cluster.local:9000",
                     "serving.kserve.io/s3-usehttps": "0", "serving.kserve.io/s3-region": "us-east-1",
                     "serving.kserve.io/s3-verifyssl": "0"}
KEYS = {"AWS_ACCESS_KEY_ID": base64.b64encode(b"k").decode(), "AWS_SECRET_ACCESS_KEY": base64.b64encode(b"s").decode()}

NOTES = "templates/NOTES.txt"


def notes(values=None) -> str:
    return render_files(values)[NOTES]


def test_curl_and_openai_client() -> None:
    text = notes()
    assert "curl -s -H 'Content-Type: application/json'" in text
    assert f"http://{RELEASE}-transformer.{NAMESPACE}.svc.cluster.local/v1/models/{RELEASE}:predict" in text
    assert '"instances": [{"text":' in text and '"labels": ["person", "location"]' in text
    assert "from openai import OpenAI" in text and 'base_url="http://localhost:8080/openai/v1"' in text
    assert f'model="{RELEASE}"' in text
    assert f"helm test {RELEASE}" in text
    assert "port-forward svc/reasoning-ner-transformer" in text


def test_with_api_keys_the_calls_send_the_key() -> None:
    text = notes({"serving": {"transformer": {"auth": {"existingSecret": "ner-api-keys", "secretKey": "keys"}}}})
    assert "API_KEY=$(kubectl -n reasoning-ner get secret ner-api-keys -o go-template='{{index .data \"keys\" | base64decode}}'" in text
    assert text.count('-H "Authorization: Bearer $API_KEY"') == 2  # in-cluster and port-forward curls
    assert 'api_key=os.environ["API_KEY"]' in text and 'api_key="unused"' not in text
    assert "Bearer" not in notes() and 'api_key="unused"' in notes()
    knative = notes({"serving": {"mode": "knative", "transformer": {"auth": {"existingSecret": "ner-api-keys"}}}})
    assert '-H "Authorization: Bearer $API_KEY" "$URL/v1/models/reasoning-ner:predict"' in knative


def test_traffic_capture_and_drift_baseline_are_announced() -> None:
    assert "Traffic capture" not in notes() and "Drift baseline" not in notes()
    sink = notes({"serving": {"transformer": {"logger": {"enabled": True}, "driftBaseline": True}},
                  "flywheel": {"sink": {"enabled": True}}})
    assert "Traffic capture is ON (serving.transformer.logger, mode all)" in sink
    assert f"receives and returns to http://{RELEASE}-flywheel-sink.{NAMESPACE}.svc.cluster.local" in sink
    assert f"writes it to s3://reasoning-ner/traffic (kubectl -n {NAMESPACE} logs deploy/{RELEASE}-flywheel-sink)" in sink
    assert "rner data harvest --since" in sink
    assert "the transformer fetches s3://reasoning-ner/models/tiny-cpu/champion/drift_baseline.json" in sink
    external = notes({"serving": {"transformer": {"logger": {"enabled": True, "mode": "request", "url": "s3://traffic-bucket"}}}})
    assert "receives to s3://traffic-bucket." in external and "in-chart sink" not in external


def test_knative_uses_the_status_url() -> None:
    assert "jsonpath='{.status.url}'" in notes({"serving": {"mode": "knative"}})


def test_model_pipeline_and_run_account() -> None:
    text = notes()
    assert "serving s3://reasoning-ner/models/tiny-cpu/champion" in text
    assert f'registers pipeline "reasoning-ner" version\n"{content_version(COMPILED.read_text())}"' in text
    assert "in namespace kubeflow" in text and "backend >= 2.15.0" in text
    multi = notes({"multiNode": {"enabled": True}})
    assert "mount the ReadWriteMany PVC reasoning-ner-shared in kubeflow: keep the run parameter shared_pvc=reasoning-ner-shared" in multi
    assert "service account reasoning-ner-pipeline-runner" in text


def _api(secrets: set[str] | dict[str, dict[str, Any]], namespaces: tuple[str, ...] = (NAMESPACE, KFP_NS)):
    """A Kubernetes API with the namespace and ``secrets`` (name -> {annotations, data}) in ``namespaces``."""
    if not isinstance(secrets, dict):
        secrets = {s: {"annotations": MINIO_ANNOTATIONS, "data": KEYS} for s in secrets}

    def handler(method: str, path: str, headers: dict[str, str], body: bytes):
        p = path.split("?")[0]
        if p == "/api/v1":
            return 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "namespaces", "namespaced": False, "kind": "Namespace", "verbs": ["get"]},
                {"name": "secrets", "namespaced": True, "kind": "Secret", "verbs": ["get"]}]}
        if p == "/apis/serving.kserve.io/v1beta1":
            return 200, {"kind": "APIResourceList", "groupVersion": "serving.kserve.io/v1beta1", "resources": [
                {"name": "inferenceservices", "namespaced": True, "kind": "InferenceService", "verbs": ["get"]}]}
        if p == f"/api/v1/namespaces/{NAMESPACE}":
            return 200, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        for ns in namespaces:
            for s, content in secrets.items():
                if p == f"/api/v1/namespaces/{ns}/secrets/{s}":
                    return 200, {"apiVersion": "v1", "kind": "Secret", "data": content.get("data", {}), "metadata": {
                        "name": s, "namespace": ns, "annotations": content.get("annotations", {})}}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
    return handler


def _online_notes(stub_server, api, values: dict[str, Any] | None = None) -> str:
    server = stub_server(api)
    cfg = helm.Config(kube_apiserver=server.url, kube_token="t", namespace=NAMESPACE)
    try:
        return cfg.render(chart(), values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)["reasoning-ner/" + NOTES]
    finally:
        cfg.close()


def test_missing_secrets_are_named(stub_server) -> None:
    text = _online_notes(stub_server, _api({"reasoning-ner-s3", "reasoning-ner-hf"}))
    assert "WARNING: Secret reasoning-ner-git not found in namespace reasoning-ner" in text
    assert "WARNING: Secret reasoning-ner-git not found in namespace kubeflow" in text, "the runs' namespace too"
    assert "WARNING: Secret reasoning-ner-teacher not found" in text
    assert "reasoning-ner-s3 not found" not in text and "reasoning-ner-hf not found" not in text
    assert "differs from these values in the serving.kserve.io/s3-*" not in text, "an annotated S3 Secret is fine"
    only_serving = _online_notes(stub_server, _api({"reasoning-ner-s3"}, namespaces=(NAMESPACE,)))
    assert "WARNING: Secret reasoning-ner-s3 not found in namespace kubeflow" in only_serving


def test_an_s3_secret_without_kserves_annotations_is_named_with_the_fix(stub_server) -> None:
    """KServe reads the endpoint from the Secret: an unannotated one sends the storage initializer to AWS."""
    secrets = {"reasoning-ner-s3": {"annotations": {"serving.kserve.io/s3-usehttps": "0"}, "data": KEYS}}
    text = _online_notes(stub_server, _api(secrets))
    assert "WARNING: Secret reasoning-ner-s3 in namespace reasoning-ner differs from these values in the serving.kserve.io/s3-*" in text
    assert ("kubectl -n reasoning-ner annotate secret reasoning-ner-s3 --overwrite "
            "serving.kserve.io/s3-endpoint=minio.minio.svc.cluster.local:9000 serving.kserve.io/s3-region=us-east-1 "
            "serving.kserve.io/s3-verifyssl=0") in text, "only the missing or different ones"
    wrong = {"reasoning-ner-s3": {"annotations": {**MINIO_ANNOTATIONS, "serving.kserve.io/s3-endpoint": "s3.amazonaws.com"},
                                  "data": KEYS}}
    assert "serving.kserve.io/s3-endpoint=minio.minio.svc.cluster.local:9000\n" in _online_notes(stub_server, _api(wrong))
    no_keys = {"reasoning-ner-s3": {"annotations": MINIO_ANNOTATIONS, "data": {"accesskey": KEYS["AWS_ACCESS_KEY_ID"]}}}
    assert "has no key AWS_SECRET_ACCESS_KEY: KServe does not use it as S3 credentials" in _online_notes(
        stub_server, _api(no_keys))
    # The chart creates it (annotated): nothing to check at install time, and no "not found" either.
    created = _online_notes(stub_server, _api({}), {"secrets": {"s3": {"create": True, "accessKeyId": "a",
                                                                         "secretAccessKey": "b"}}})
    assert "reasoning-ner-s3 not found" not in created and "differs from these values in the serving.kserve.io" not in created
    assert "WARNING: Secret reasoning-ner-git not found" in created, "the lookups did run"


def test_offline_render_has_no_secret_warnings() -> None:
    assert "WARNING" not in notes()


def test_the_deploy_guides_annotate_command_is_what_the_chart_checks(stub_server) -> None:
    """docs/deploy.md step 3 annotates the Secret with exactly the annotations the default values check, so
    following it gives an install without the warning."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    step = guide[guide.index("**3."):guide.index("**4.")]
    documented = dict(re.findall(r"(serving\.kserve\.io/s3-[a-z]+)=(\S+)", step))
    assert documented == MINIO_ANNOTATIONS
    text = _online_notes(stub_server, _api({"reasoning-ner-s3": {"annotations": documented, "data": KEYS}}))
    assert "differs from these values" not in text and "annotate secret" not in text
