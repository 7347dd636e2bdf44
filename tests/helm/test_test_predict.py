"""templates/tests/test-predict.yaml: the `helm test` Pod, and its script (files/smoke_test.py) run
against a stub NER endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from .chart_tools import CHART, template_objects, validate

TEMPLATE = "templates/tests/test-predict.yaml"
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
