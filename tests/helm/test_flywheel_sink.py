"""templates/flywheel-sink.yaml and the transformer's logger (issue 17, capture in the cluster).

Off by default nothing is rendered; on, the InferenceService's transformer logs to the in-chart sink
(equal to the builder's object with that URL), the sink's rendered container command really runs:
`rner` with the rendered args and env (the S3 keys resolved from the rendered S3 Secret) on
127.0.0.1, writing a POSTed request/response pair to the S3 server on 127.0.0.1. The schema and
rner.validate refuse bad values; the NetworkPolicy admits only the transformer.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from reasoning_ner.k8s.inference_service import build_inference_service
from reasoning_ner.k8s.pod_parts import flywheel_sink_url

from .chart_tools import CHART, NAMESPACE, by_kind, helm, one, render, render_error, serving_values, template_objects, validate
from .netpol import Pod, ingress_allowed

TEMPLATE = "templates/flywheel-sink.yaml"
NAME = "reasoning-ner"
SINK = f"{NAME}-flywheel-sink"
ON: dict[str, Any] = {"serving": {"transformer": {"logger": {"enabled": True}}}, "flywheel": {"sink": {"enabled": True}}}


def transformer(values: dict[str, Any] | None) -> dict[str, Any]:
    return one(render(values), "InferenceService")["spec"]["transformer"]


def builder_isvc(values: dict[str, Any]) -> dict[str, Any]:
    """The builder's object for ``values``, with the logger URL the chart fills in for its own sink."""
    from reasoning_ner.k8s.inference_service import ServingSettings

    serving = serving_values(values)
    logger = serving["transformer"]["logger"]
    if logger.get("enabled") and not logger.get("url"):
        logger["url"] = flywheel_sink_url(serving["name"], serving["namespace"])
    return build_inference_service(ServingSettings.from_helm_values(serving))


# ------------------------------------------------------------------------------------ off / on


def test_off_by_default_renders_nothing() -> None:
    assert "logger" not in transformer(None)
    assert template_objects(TEMPLATE) == []
    names = {o["metadata"]["name"] for o in render()}
    assert not any("flywheel" in n for n in names), names
    # the sink alone (no logger) still leaves the transformer unlogged
    assert "logger" not in transformer({"flywheel": {"sink": {"enabled": True}}})


@pytest.mark.parametrize("values", [
    ON,
    {**ON, "serving": {"transformer": {"logger": {"enabled": True, "mode": "request"}}}},
    {"serving": {"transformer": {"logger": {"enabled": True, "url": "http://collector.obs:8080/ner"}}}},
    {"serving": {"transformer": {"logger": {"enabled": True, "url": "s3://ner-traffic", "storagePath": "/logs"}},
                 "mode": "knative"}},
], ids=["in-chart-sink", "request-mode", "external-url", "blob-storage-knative"])
def test_logger_is_the_builders_and_crd_valid(values: dict[str, Any]) -> None:
    got = one(render(values), "InferenceService")
    assert got == builder_isvc(values)
    assert validate([got]) == []


def test_logger_points_at_the_in_chart_sink() -> None:
    logger = transformer(ON)["logger"]
    assert logger == {"mode": "all", "url": f"http://{SINK}.{NAMESPACE}.svc.cluster.local"}
    service = one(template_objects(TEMPLATE, ON), "Service", SINK)
    assert service["spec"]["ports"][0]["port"] == 80  # the URL carries no port
    # an explicit URL wins over the sink
    url = "http://elsewhere.obs/"
    assert transformer({**ON, "serving": {"transformer": {"logger": {"enabled": True, "url": url}}}})["logger"]["url"] == url


def test_blob_storage_logger_uses_the_serving_service_account() -> None:
    values = {"serving": {"transformer": {"logger": {"enabled": True, "url": "s3://ner-traffic"}},
                          "storage": {"serviceAccountName": "ner-sa"}}}
    assert transformer(values)["logger"]["storage"] == {
        "path": "/traffic", "parameters": {"type": "s3", "format": "json"}, "serviceAccountName": "ner-sa"}


def test_lint_strict_is_clean_with_capture_on() -> None:
    report = helm.lint(str(CHART), ON, strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_sink_objects_are_valid_and_locked_down() -> None:
    objs = template_objects(TEMPLATE, ON)
    assert sorted(o["kind"] for o in objs) == ["Deployment", "Service", "ServiceAccount"]
    assert validate(objs) == []
    deploy = one(objs, "Deployment", SINK)
    assert deploy["spec"]["replicas"] == 1  # a request and its response must meet in one process
    pod = deploy["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == SINK
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert c["readinessProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["image"].startswith("ghcr.io/reasoning-ner/reasoning-ner-cpu:")  # has s3fs
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert one(objs, "Service")["spec"]["selector"] == selector
    assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()


def test_the_transformer_alone_reaches_the_sink() -> None:
    policies = [o for o in render(ON) if o["kind"] == "NetworkPolicy"]
    labels = one(template_objects(TEMPLATE, ON), "Deployment")["spec"]["template"]["metadata"]["labels"]
    sink = Pod(NAMESPACE, labels)
    trans = Pod(NAMESPACE, {"serving.kserve.io/inferenceservice": NAME, "component": "transformer"})
    predictor = Pod(NAMESPACE, {"serving.kserve.io/inferenceservice": NAME, "component": "predictor"})
    gateway = Pod("istio-system", {"app": "istio-ingressgateway"})
    assert ingress_allowed(policies, trans, sink, 8080)
    assert not ingress_allowed(policies, predictor, sink, 8080)
    assert not ingress_allowed(policies, gateway, sink, 8080)
    off = [o for o in render({**ON, "serving": {"networkPolicy": {"enabled": False}}}) if o["kind"] == "NetworkPolicy"]
    assert off == []


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(("values", "message"), [
    ({"serving": {"transformer": {"logger": {"enabled": True, "mode": "response"}}}}, "mode"),
    ({"serving": {"transformer": {"logger": {"enabled": True, "url": "ftp://x"}}}}, "url"),
    ({"flywheel": {"sink": {"retentionDays": 0}}}, "retentionDays"),
    ({"flywheel": {"sink": {"logRoot": "/var/traffic"}}}, "logRoot"),
    ({"flywheel": {"sink": {"flushRecords": 0}}}, "flushRecords"),
    ({"flywheel": {"sink": {"replicas": 2}}}, "replicas"),
], ids=["mode", "url", "retention", "log-root", "flush", "unknown-key"])
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


@pytest.mark.parametrize(("values", "message"), [
    ({"serving": {"transformer": {"logger": {"enabled": True}}}}, "needs a destination: set flywheel.sink.enabled"),
    ({"serving": {"transformer": {"enabled": False, "logger": {"enabled": True, "url": "s3://ner-traffic"}}}},
     "transformer.logger needs transformer.enabled"),
])
def test_bad_combinations_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


# ------------------------------------------------------------------------------------ the command, for real


def _resolve_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
    return env


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sink exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.3)
    raise AssertionError("the sink did not become healthy")


def test_the_rendered_command_runs_and_writes_a_record(s3_server, tmp_path: Path) -> None:
    from tests.serving_live import free_port
    from tests.test_flywheel_sink import V1_REQUEST, V1_RESPONSE, headers

    bucket = s3_server.bucket("traffic")
    values = {**ON, "flywheel": {"sink": {"enabled": True, "logRoot": f"s3://{bucket}/traffic", "flushRecords": 1,
                                          "optOutLabels": ["organization"]}},
              "serving": {"transformer": {"logger": {"enabled": True}},
                          "storage": {"s3Endpoint": s3_server.host_port, "s3UseHttps": False}},
              "secrets": {"s3": {"create": True, "accessKeyId": s3_server.access_key_id,
                                 "secretAccessKey": s3_server.secret_access_key}}}
    objs = render(values)
    secrets = {s["metadata"]["name"]: s["data"] for s in by_kind(objs, "Secret")}
    (c,) = one(objs, "Deployment", SINK)["spec"]["template"]["spec"]["containers"]
    env = _resolve_env(c, secrets)
    assert env["AWS_ENDPOINT_URL"] == s3_server.endpoint_url
    port = free_port()
    # The rendered command as is, but on loopback and a free port (house rule: tests bind 127.0.0.1).
    args = [a.replace("--host=0.0.0.0", "--host=127.0.0.1").replace("--port=8080", f"--port={port}") for a in c["args"]]
    assert args != c["args"] and "--host=127.0.0.1" in args
    exe = str(Path(sys.executable).with_name(c["command"][0]))
    env.update(HOME=str(tmp_path), PATH=os.environ.get("PATH", ""))
    proc = subprocess.Popen([exe, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        for kind, body in (("request", V1_REQUEST), ("response", V1_RESPONSE)):
            r = requests.post(url + "/", data=json.dumps(body), headers=headers(kind, "chart-e1"), timeout=10)
            assert r.status_code == 202
        assert requests.get(url + "/stats", timeout=5).json()["records"] == 1  # the organization sentence opted out
    finally:
        proc.send_signal(signal.SIGTERM)  # shutdown flushes what is buffered
        proc.wait(timeout=60)
    keys = s3_server.keys(bucket, "traffic/")
    assert keys and all(k.startswith("traffic/date=") and k.endswith(".jsonl") for k in keys), keys
    lines = [json.loads(line) for k in keys
             for line in s3_server.client().get_object(Bucket=bucket, Key=k)["Body"].read().decode().splitlines()]
    assert [r["text"] for r in lines] == ["Ada met Bob in Paris ."]
    assert lines[0]["entities"][0]["text"] == "Ada" and lines[0]["event_id"] == "chart-e1"
