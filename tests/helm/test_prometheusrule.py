"""templates/prometheusrule.yaml: the alert rules (off by default), on metrics the service exports."""

from __future__ import annotations

import pytest

from .chart_tools import template_objects, validate
from .metrics import KUBE_STATE, VLLM, service_metrics, used_metrics

TEMPLATE = "templates/prometheusrule.yaml"
ON = {"monitoring": {"alerts": {"enabled": True, "errorRatio": 0.02, "additionalLabels": {"team": "nlp"}}}}


def rules(values=ON) -> dict[str, dict]:
    (rule,) = template_objects(TEMPLATE, values)
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_off_by_default() -> None:
    assert template_objects(TEMPLATE) == []


def test_alerts_and_thresholds() -> None:
    got = rules()
    assert set(got) == {"ReasoningNERHighErrorRate", "ReasoningNERHighLatency", "ReasoningNERParseFailures",
                        "ReasoningNERQueueBacklog", "ReasoningNERPredictorUnavailable"}
    assert got["ReasoningNERHighErrorRate"]["expr"].endswith("> 0.02")
    assert 'status=~"5.."' in got["ReasoningNERHighErrorRate"]["expr"]
    for r in got.values():
        assert r["for"] == "10m" and r["labels"]["team"] == "nlp" and r["labels"]["inferenceservice"] == "reasoning-ner"
        assert r["labels"]["severity"] in {"warning", "critical"} and r["annotations"]["summary"]
        assert 'namespace="reasoning-ner"' in r["expr"]


def test_scale_to_zero_is_not_an_outage() -> None:
    values = {**ON, "serving": {"mode": "knative", "scaling": {"minReplicas": 0}, "transformer": {"minReplicas": 0}}}
    assert "ReasoningNERPredictorUnavailable" not in rules(values)


def test_metric_names_exist() -> None:
    exported = service_metrics()
    used = set().union(*(used_metrics(r["expr"]) for r in rules().values()))
    assert used, "no metric found in the rules"
    assert exported, "the NER service exports no metric (src/reasoning_ner/serving/prometheus.py)"
    known = VLLM | KUBE_STATE | exported
    assert used <= known, f"unknown metrics: {sorted(used - known)}"


def test_structurally_valid() -> None:
    assert validate(template_objects(TEMPLATE, ON)) == []
