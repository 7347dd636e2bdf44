"""templates/configmap-dashboard.yaml: the Grafana dashboard (off by default): throughput, latency,
tokens, parse failures, queue depth and replicas, on metrics the service exports."""

from __future__ import annotations

import json

import pytest

from .chart_tools import CHART, template_objects, validate
from .metrics import KUBE_STATE, VLLM, service_metrics, used_metrics

TEMPLATE = "templates/configmap-dashboard.yaml"
ON = {"monitoring": {"dashboard": {"enabled": True}}}


def dashboard(values=ON) -> tuple[dict, dict]:
    (cm,) = template_objects(TEMPLATE, values, namespace="ml", name="ner")
    (text,) = cm["data"].values()
    return cm, json.loads(text)


def test_off_by_default() -> None:
    assert template_objects(TEMPLATE) == []


def test_sidecar_labels_and_folder() -> None:
    cm, _ = dashboard()
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "ReasoningNER"


def test_panels_cover_what_operators_need() -> None:
    _, dash = dashboard()
    titles = {p["title"] for p in dash["panels"]}
    assert {"Throughput", "Latency", "Tokens", "Parse failures", "Queue depth", "Replicas"} <= titles
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["namespace"]["query"] == "ml" and variables["isvc"]["query"] == "ner"
    assert "__NAMESPACE__" not in json.dumps(dash) and "__ISVC__" not in json.dumps(dash)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_metric_names_exist() -> None:
    _, dash = dashboard()
    used = set().union(*(used_metrics(t["expr"]) for p in dash["panels"] for t in p["targets"]))
    assert {"vllm:num_requests_waiting", "rner_parse_failures_total", "rner_tokens_total"} <= used
    exported = service_metrics()
    assert exported, "the NER service exports no metric (src/reasoning_ner/serving/prometheus.py)"
    assert used <= VLLM | KUBE_STATE | exported, f"unknown metrics: {sorted(used - (VLLM | KUBE_STATE | exported))}"


def test_file_is_valid_json_and_valid_configmap() -> None:
    json.loads((CHART / "files" / "dashboard.json").read_text())
    assert validate(template_objects(TEMPLATE, ON)) == []
