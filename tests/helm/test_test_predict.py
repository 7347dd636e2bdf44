"""templates/tests/test-predict.yaml: the `helm test` Pod, and its script (files/smoke_test.py) run
against a stub NER endpoint; templates/tests/preflight.yaml: the Pod's preflight (an init container
running `rner preflight --in-cluster` on the release's values) and its read-only Role, run end to end
as the Pod runs it against a TLS stub API server that enforces the rendered Roles, and the S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reasoning_ner.k8s.kfp_backend import MIN_KFP_BACKEND_VERSION
from reasoning_ner.k8s.preflight import target_from_values
from tests.test_preflight import FakeCluster, secret, serve_tls, tls  # noqa: F401  (tls is a fixture)
from tests.test_preflight import sa as service_account

from .chart_tools import CHART, by_kind, one, render, template_objects, validate
from .rbac import allowed, assert_least_privilege, request_attributes

TEMPLATE = "templates/tests/test-predict.yaml"
PREFLIGHT = "templates/tests/preflight.yaml"
SCRIPT = CHART / "files" / "smoke_test.py"


def pod(values=None) -> dict[str, Any]:
    (obj,) = template_objects(TEMPLATE, values)
    return obj


def env_of(obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in obj["spec"]["containers"][0]["env"]}


def test_is_a_helm_test_hook_with_its_own_account() -> None:
    obj = pod()
    assert obj["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert obj["spec"]["serviceAccountName"] == "reasoning-ner-helm-test"
    assert obj["spec"]["restartPolicy"] == "Never"
    assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "helm-test"  # admitted by the NetworkPolicy


def test_calls_v1_predict_with_a_sentence_and_labels() -> None:
    env = env_of(pod())
    assert env["PREDICT_URL"] == "http://reasoning-ner-transformer.reasoning-ner.svc.cluster.local/v1/models/reasoning-ner:predict"
    assert json.loads(env["LABELS"]) == ["person", "location"]
    assert env["SENTENCE"]
    custom = env_of(pod({"tests": {"url": "http://ner.example.com/", "labels": ["org"]}}))
    assert custom["PREDICT_URL"] == "http://ner.example.com/v1/models/reasoning-ner:predict"


def test_without_transformer_checks_the_predictor() -> None:
    env = env_of(pod({"serving": {"transformer": {"enabled": False}}}))
    assert env["CHECK"] == "ready"
    assert env["PREDICT_URL"] == "http://reasoning-ner-predictor.reasoning-ner.svc.cluster.local/v2/health/ready"


def test_sends_the_api_key_from_the_same_secret() -> None:
    """With serving.transformer.auth the Pod mounts the API-key Secret read-only and names its file."""
    obj = pod({"serving": {"transformer": {"auth": {"existingSecret": "ner-api-keys", "secretKey": "keys"}}}})
    assert env_of(obj)["API_KEY_FILE"] == "/var/run/secrets/reasoning-ner/api-keys/keys"
    (c,) = obj["spec"]["containers"]
    assert {"name": "api-keys", "mountPath": "/var/run/secrets/reasoning-ner/api-keys", "readOnly": True} in c["volumeMounts"]
    assert {"name": "api-keys", "secret": {"secretName": "ner-api-keys", "items": [{"key": "keys", "path": "keys"}]}} \
        in obj["spec"]["volumes"]
    assert validate([obj]) == []
    assert "API_KEY_FILE" not in env_of(pod())
    assert "api-keys" not in {v["name"] for v in pod()["spec"]["volumes"]}


def test_switch_and_valid() -> None:
    assert template_objects(TEMPLATE, {"tests": {"enabled": False}}) == []
    assert validate([pod()]) == []


# ------------------------------------------------------------------------------------ the script


def run_script(url: str, timeout: str = "10", **extra: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "PREDICT_URL": url, "SENTENCE": "Barack Obama was born in Hawaii.",
           "LABELS": '["person", "location"]', "TIMEOUT_SECONDS": timeout, "RETRY_DELAY_SECONDS": "0.05",
           **extra}
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def ner_endpoint(entities: list[dict[str, Any]], warmup: int = 0):
    state = {"calls": 0}

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        state["calls"] += 1
        if state["calls"] <= warmup:
            return 503, {"error": {"message": "model loading"}}
        request = json.loads(body)
        assert request == {"instances": [{"text": "Barack Obama was born in Hawaii.", "labels": ["person", "location"]}]}
        assert headers["content-type"] == "application/json" and path == "/v1/models/reasoning-ner:predict"
        return 200, {"predictions": [{"entities": entities, "ungrounded": [], "parse_error": None}]}

    return handler


def test_passes_when_an_entity_comes_back(stub_server) -> None:
    server = stub_server(ner_endpoint([{"text": "Barack Obama", "label": "person", "start": 0, "end": 12}]))
    proc = run_script(server.url + "/v1/models/reasoning-ner:predict")
    assert proc.returncode == 0 and "PASS: 1 entities: 'Barack Obama' (person)" in proc.stdout


def test_fails_without_entities(stub_server) -> None:
    proc = run_script(stub_server(ner_endpoint([])).url + "/v1/models/reasoning-ner:predict")
    assert proc.returncode == 1 and "no entity found" in proc.stdout


def test_waits_for_the_model(stub_server) -> None:
    server = stub_server(ner_endpoint([{"text": "Hawaii", "label": "location", "start": 25, "end": 31}], warmup=1))
    proc = run_script(server.url + "/v1/models/reasoning-ner:predict", timeout="30")
    assert proc.returncode == 0 and "waiting for" in proc.stdout


def test_client_errors_fail_at_once(stub_server) -> None:
    server = stub_server(lambda m, p, h, b: (422, {"error": {"message": "instances[0].labels: too short"}}))
    proc = run_script(server.url + "/v1/models/reasoning-ner:predict", timeout="60")
    assert proc.returncode == 1 and "HTTP 422" in proc.stdout and len(server.requests) == 1


def test_ready_check(stub_server) -> None:
    server = stub_server(lambda m, p, h, b: (200, {}))
    proc = run_script(server.url + "/v2/health/ready", CHECK="ready")
    assert proc.returncode == 0 and server.requests[0]["method"] == "GET"


# ------------------------------------------------------------------------------------ the preflight


def preflight_container(obj: dict[str, Any]) -> dict[str, Any]:
    (init,) = obj["spec"]["initContainers"]
    assert init["name"] == "preflight"
    return init


def test_preflight_runs_first_with_the_release_values_and_its_own_token() -> None:
    obj = pod()
    init = preflight_container(obj)
    assert init["command"] == ["rner", "preflight", "--in-cluster", "--values", "/preflight/values.json", "--chart", "",
                               "--release", "reasoning-ner", "--namespace", "reasoning-ner"]
    assert init["image"] == obj["spec"]["containers"][0]["image"]  # the CPU image, which has the package
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts["kube-api-access"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    # only the preflight container holds an API token; the Pod automounts none
    assert obj["spec"]["automountServiceAccountToken"] is False
    assert "kube-api-access" not in {m["name"] for m in obj["spec"]["containers"][0]["volumeMounts"]}
    volume = {v["name"]: v for v in obj["spec"]["volumes"]}["kube-api-access"]["projected"]["sources"]
    assert volume[0]["serviceAccountToken"]["expirationSeconds"] == 600
    assert {v["name"]: v for v in obj["spec"]["volumes"]}["preflight"]["configMap"]["name"] == "reasoning-ner-preflight"
    assert init["securityContext"]["readOnlyRootFilesystem"] is True and init["resources"]["limits"]["memory"] == "256Mi"
    off = pod({"tests": {"preflight": {"enabled": False}}})
    assert "initContainers" not in off["spec"] and "preflight" not in {v["name"] for v in off["spec"]["volumes"]}
    assert (obj["spec"]["activeDeadlineSeconds"], off["spec"]["activeDeadlineSeconds"]) == (300 + 120, 300 + 60)
    assert template_objects(PREFLIGHT, {"tests": {"preflight": {"enabled": False}}}) == []
    assert template_objects(PREFLIGHT, {"tests": {"enabled": False}}) == []


def roles(values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    objs = template_objects(PREFLIGHT, values)
    for binding in by_kind(objs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "reasoning-ner-helm-test", "namespace": "reasoning-ner"}]
        assert binding["roleRef"]["name"] == "reasoning-ner-helm-test-preflight"
    return {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role")}


def test_preflight_role_is_read_only_get_on_named_objects() -> None:
    got = roles({"kfp": {"namespace": "kubeflow"}})
    assert sorted(got) == ["kubeflow", "reasoning-ner"]
    for role in got.values():
        assert_least_privilege(role)
        for rule in role["rules"]:
            assert rule["verbs"] == ["get"] and rule["resourceNames"], rule  # never list, never every name
    serving, runs = got["reasoning-ner"]["rules"], got["kubeflow"]["rules"]
    assert allowed(serving, "get", "", "secrets", "reasoning-ner-s3")
    assert allowed(serving, "get", "", "serviceaccounts", "reasoning-ner-serving")
    assert allowed(serving, "get", "serving.kserve.io", "servingruntimes", "kserve-huggingfaceserver")
    assert not allowed(serving, "get", "", "secrets", "reasoning-ner-git")
    assert not allowed(serving, "list", "", "secrets")
    assert allowed(runs, "get", "", "serviceaccounts", "reasoning-ner-pipeline-runner")
    assert allowed(runs, "get", "", "secrets", "reasoning-ner-s3")
    assert not allowed(runs, "get", "serving.kserve.io", "servingruntimes", "kserve-huggingfaceserver")
    # one namespace: one Role with both ServiceAccounts
    (one_ns,) = roles({"kfp": {"namespace": "reasoning-ner"}}).values()
    assert allowed(one_ns["rules"], "get", "", "serviceaccounts", "reasoning-ner-pipeline-runner")
    assert roles({"rbac": {"create": False}}) == {}
    assert validate(template_objects(PREFLIGHT)) == []


EVERYTHING_NAMES = {"serving": {"name": "ner", "namespace": "serving-ns", "storage": {"serviceAccountName": "ner-sa"}},
                    "kfp": {"namespace": "kubeflow-user-example-com", "multiUser": True, "host": "http://kfp.example:8888"},
                    "serviceAccounts": {"pipelineRunner": {"name": "runs"}},
                    "tests": {"preflight": {"registryUri": "s3://models/registry", "skip": ["kfp"]}}}


@pytest.mark.parametrize("values", [None, {"kfp": {"namespace": "reasoning-ner"}}, EVERYTHING_NAMES,
                                    {"serving": {"predictor": {"runtime": None}}}],
                         ids=["defaults", "one-namespace", "names", "no-runtime"])
def test_the_pod_checks_exactly_what_the_chart_installed(values) -> None:
    """target_from_values on the ConfigMap's values (with the Pod's --release/--namespace) names the
    objects the chart renders: serving and runner ServiceAccounts, the S3 Secret, runtime, storageUri."""
    objs = render(values)
    obj = one(objs, "Pod")
    args = preflight_container(obj)["command"]
    config_map = one(objs, "ConfigMap", obj["spec"]["volumes"][-2]["configMap"]["name"])
    target = target_from_values(json.loads(config_map["data"]["values.json"]), release=args[args.index("--release") + 1],
                                namespace=args[args.index("--namespace") + 1])
    isvc = one(objs, "InferenceService")
    serving_sa = one(objs, "ServiceAccount", target.serving_service_account)
    assert serving_sa["metadata"]["namespace"] == target.serving_namespace == isvc["metadata"]["namespace"]
    assert isvc["spec"]["predictor"]["serviceAccountName"] == target.serving_service_account
    assert [s["name"] for s in serving_sa["secrets"]] == [target.s3_secret]
    runner = one(objs, "ServiceAccount", target.runner_service_account)
    assert runner["metadata"]["namespace"] == target.kfp_namespace
    assert target.pipeline_s3_secret in [s["name"] for s in runner["secrets"]]
    assert isvc["spec"]["predictor"]["model"].get("runtime") == target.runtime
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == target.storage_uri
    if values is EVERYTHING_NAMES:
        assert (target.kfp_host, target.registry_uri, target.skip) == ("http://kfp.example:8888", "s3://models/registry", ["kfp"])


def test_the_pods_preflight_passes_with_its_role_and_skips_the_cluster_wide_rows(tmp_path: Path, tls, s3_server, monkeypatch) -> None:
    """The init container's exact command, in-cluster (token, CA and namespace files; a TLS API server
    that grants only what the rendered Roles grant the helm-test ServiceAccount, plus discovery and
    /version as every cluster does), against the S3 server and a stub KFP API."""
    from typer.testing import CliRunner

    from reasoning_ner.cli import app

    bucket = s3_server.bucket("helm-test")
    s3_server.client().put_object(Bucket=bucket, Key="models/champion/config.json", Body=b"{}")
    with FakeCluster(kfp={"tag_name": MIN_KFP_BACKEND_VERSION, "multi_user": False}) as kfp:
        values = {"serving": {"storage": {"storageUri": f"s3://{bucket}/models/champion", "s3Endpoint": s3_server.host_port,
                                          "s3UseHttps": False, "s3Region": "us-east-1"}},
                  "kfp": {"namespace": "kubeflow", "host": kfp.url},
                  "tests": {"preflight": {"registryUri": f"s3://{bucket}/registry"}}}
        objs = render(values)
        obj = one(objs, "Pod")
        command = preflight_container(obj)["command"]
        (tmp_path / "preflight").mkdir()
        (tmp_path / "preflight" / "values.json").write_text(one(objs, "ConfigMap", "reasoning-ner-preflight")["data"]["values.json"])
        rules = {r["metadata"]["namespace"]: r["rules"] for r in by_kind(objs, "Role")
                 if r["metadata"]["name"] == "reasoning-ner-helm-test-preflight"}

        def allow(method: str, path: str) -> bool:
            if path == "/version" or path.startswith("/apis/serving.kserve.io/") and path.count("/") == 3:
                return True  # system:public-info-viewer and system:discovery
            attrs = request_attributes(method, path)
            if attrs is None:
                return False  # cluster-scoped: nothing granted
            verb, group, ns, resource, name = attrs
            return allowed(rules.get(ns, []), verb, group, resource, name)

        keys = {"AWS_ACCESS_KEY_ID": s3_server.access_key_id, "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key}
        serving_sa = one(objs, "ServiceAccount", "reasoning-ner-serving")
        annotations = {"serving.kserve.io/s3-endpoint": s3_server.host_port, "serving.kserve.io/s3-usehttps": "0"}
        objects = {
            "/version": {"gitVersion": "v1.33.1"},
            "/apis/serving.kserve.io/v1beta1": {"resources": [{"name": "inferenceservices"}]},
            "/apis/serving.kserve.io/v1alpha1": {"resources": [{"name": "servingruntimes"}, {"name": "clusterservingruntimes"}]},
            "/api/v1/namespaces/reasoning-ner": {}, "/api/v1/nodes": {"items": []},
            "/api/v1/namespaces/reasoning-ner/serviceaccounts/reasoning-ner-serving": serving_sa,
            "/api/v1/namespaces/kubeflow/serviceaccounts/reasoning-ner-pipeline-runner": service_account(
                "reasoning-ner-pipeline-runner", "kubeflow"),
            "/api/v1/namespaces/reasoning-ner/secrets/reasoning-ner-s3": secret("reasoning-ner-s3", "reasoning-ner", keys, annotations),
            "/api/v1/namespaces/kubeflow/secrets/reasoning-ner-s3": secret(
                "reasoning-ner-s3", "kubeflow", {**keys, "AWS_ENDPOINT_URL": s3_server.endpoint_url}),
        }
        root = tmp_path / "serviceaccount"
        root.mkdir()
        (root / "token").write_text("helm-test-token")
        (root / "ca.crt").write_bytes(tls["ca"])
        (root / "namespace").write_text("reasoning-ner")
        with serve_tls(FakeCluster(objects, token="helm-test-token", allow=allow), tls) as api:
            monkeypatch.setattr("reasoning_ner.k8s.kubeapi.SERVICE_ACCOUNT_DIR", root)
            monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
            monkeypatch.chdir(tmp_path)
            args = [a.replace("/preflight/values.json", str(tmp_path / "preflight" / "values.json")) for a in command[1:]]
            result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.output)["rows"]}
    ok = {"kube-api", "serving-sa", "runner-sa", "s3-secret", "pipeline-s3-secret", "served-model", "registry", "kfp", "kserve-crds"}
    assert {i for i, r in rows.items() if r["status"] == "ok"} == ok, rows
    assert rows["namespaces"]["detail"] == "skipped: needs get on namespaces"
    # No StorageClass needed without multiNode: the training workspace is an emptyDir.
    assert rows["storageclass"]["status"] == "skipped" and "emptyDir" in rows["storageclass"]["detail"]
    assert rows["gpu-training"]["detail"] == "skipped: needs list on nodes"
    assert "needs get on clusterservingruntimes.serving.kserve.io" in rows["kserve-runtime"]["detail"]
    assert rows["dvc-remote"]["status"] == rows["gpu-serving"]["status"] == "skipped"
    # every request the Pod sent to the API server was a read, with its own token
    assert {r["method"] for r in api.requests} == {"GET"}
    assert {r["auth"] for r in api.requests} == {"Bearer helm-test-token"}


def test_sends_the_first_key_as_a_bearer_token(stub_server, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotation: new key first\n\nnew-key-0123456789abcdef\nold-key-0123456789abcdef\n")
    ok = ner_endpoint([{"text": "Hawaii", "label": "location", "start": 25, "end": 31}])

    def locked(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if headers.get("authorization") != "Bearer new-key-0123456789abcdef":
            return 401, {"error": {"message": "authorization: the API key is not valid"}}
        return ok(method, path, headers, body)

    server = stub_server(locked)
    url = server.url + "/v1/models/reasoning-ner:predict"
    proc = run_script(url, API_KEY_FILE=str(keys))
    assert proc.returncode == 0 and "PASS" in proc.stdout and "new-key" not in proc.stdout + proc.stderr
    refused = run_script(url)  # no key: 401 fails at once, saying why
    assert refused.returncode == 1 and "HTTP 401 (the endpoint wants an API key" in refused.stdout
    keys.write_text("# nothing\n")
    empty = run_script(url, API_KEY_FILE=str(keys))
    assert empty.returncode == 1 and "FAIL: no API key to send" in empty.stdout
