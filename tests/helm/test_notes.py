"""templates/NOTES.txt: how to call the endpoint (curl and the openai client), the model served,
the pipeline registration, and warnings about missing Secrets (lookup against a stub API server)."""

from __future__ import annotations

from .chart_tools import NAMESPACE, RELEASE, chart, helm, render_files

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


def test_knative_uses_the_status_url() -> None:
    assert "jsonpath='{.status.url}'" in notes({"serving": {"mode": "knative"}})


def test_model_pipeline_and_run_account() -> None:
    text = notes()
    assert "serving s3://reasoning-ner/models/tiny-cpu/champion" in text
    assert 'registers pipeline "reasoning-ner" version\n"0.1.0"' in text
    assert "service account reasoning-ner-pipeline-runner" in text


def _api(secrets: set[str]):
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
        for s in secrets:
            if p == f"/api/v1/namespaces/{NAMESPACE}/secrets/{s}":
                return 200, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s, "namespace": NAMESPACE}}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
    return handler


def test_missing_secrets_are_named(stub_server) -> None:
    server = stub_server(_api({"reasoning-ner-s3", "reasoning-ner-hf"}))
    cfg = helm.Config(kube_apiserver=server.url, kube_token="t", namespace=NAMESPACE)
    try:
        text = cfg.render(chart(), {}, name=RELEASE, namespace=NAMESPACE, is_install=True)["reasoning-ner/" + NOTES]
    finally:
        cfg.close()
    assert "WARNING: Secret reasoning-ner-git not found in namespace reasoning-ner" in text
    assert "WARNING: Secret reasoning-ner-teacher not found" in text
    assert "reasoning-ner-s3 not found" not in text and "reasoning-ner-hf not found" not in text


def test_offline_render_has_no_secret_warnings() -> None:
    assert "WARNING" not in notes()
