"""templates/configmap-dashboard.yaml: the Grafana dashboard (off by default): throughput, latency,
tokens, parse failures, queue depth, replicas and the Drift row, on metrics the service exports."""

from __future__ import annotations

import json


from .chart_tools import CHART, template_objects, validate
from .metrics import KUBE_STATE, VLLM, service_metrics, used_metrics
from .monitoring_schemas import promql_problems

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
    used = set().union(*(used_metrics(t["expr"]) for p in dash["panels"] for t in p.get("targets", [])))
    assert {"vllm:num_requests_waiting", "rner_parse_failures_total", "rner_tokens_total"} <= used
    exported = service_metrics()
    assert exported, "the NER service exports no metric (src/reasoning_ner/serving/prometheus.py)"
    assert used <= VLLM | KUBE_STATE | exported, f"unknown metrics: {sorted(used - (VLLM | KUBE_STATE | exported))}"


def test_file_is_valid_json_and_valid_configmap() -> None:
    json.loads((CHART / "files" / "dashboard.json").read_text())
    assert validate(template_objects(TEMPLATE, ON)) == []


def test_drift_row_shows_live_next_to_baseline() -> None:
    _, dash = dashboard()
    panels = dash["panels"]
    (row,) = [p for p in panels if p["type"] == "row" and p["title"] == "Drift"]
    drift = [p for p in panels if p["gridPos"]["y"] > row["gridPos"]["y"]]
    assert {p["title"] for p in drift} == {"Entity rate per label: live vs baseline", "Entity rate drift per label (live / baseline)",
                                           "Parse errors and ungrounded spans: live vs baseline", "Prompt length: live vs baseline"}
    # every drift panel sits below the row, and the row sits below every other panel
    assert all(p["gridPos"]["y"] < row["gridPos"]["y"] for p in panels if p is not row and p not in drift)
    exported = service_metrics()
    for panel in drift:
        used = set().union(*(used_metrics(t["expr"]) for t in panel["targets"]))
        assert used and used <= exported, (panel["title"], sorted(used - exported))
        assert any(m.startswith("rner_drift_baseline_") for m in used), f"{panel['title']} shows no baseline"
        assert all("$namespace" in t["expr"] and promql_problems(t["expr"]) == [] for t in panel["targets"]), panel["title"]
    by_title = {p["title"]: p for p in drift}
    per_label = by_title["Entity rate per label: live vs baseline"]["targets"]
    assert {"rner_drift_label_entities_total", "rner_drift_label_sentences_total"} <= used_metrics(per_label[0]["expr"])
    assert "{{label}}" in per_label[0]["legendFormat"] and "{{label}}" in per_label[1]["legendFormat"]
