"""templates/prometheusrule.yaml: the alert rules (off by default), on metrics the service exports;
the drift alerts compare live traffic with the served model's baseline gauges (docs/flywheel.md)."""

from __future__ import annotations


from .chart_tools import template_objects, validate
from .metrics import KUBE_STATE, VLLM, service_metrics, used_metrics

TEMPLATE = "templates/prometheusrule.yaml"
ON = {"monitoring": {"alerts": {"enabled": True, "errorRatio": 0.02, "additionalLabels": {"team": "nlp"}}}}
DRIFT = {"ReasoningNERParseErrorDrift", "ReasoningNERUngroundedDrift", "ReasoningNEREntityRateDrift",
         "ReasoningNERPromptLengthDrift"}


def rules(values=ON) -> dict[str, dict]:
    (rule,) = template_objects(TEMPLATE, values)
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_off_by_default() -> None:
    assert template_objects(TEMPLATE) == []


def test_alerts_and_thresholds() -> None:
    got = rules()
    assert set(got) == {"ReasoningNERHighErrorRate", "ReasoningNERHighLatency", "ReasoningNERParseFailures",
                        "ReasoningNERQueueBacklog", "ReasoningNERPredictorUnavailable"} | DRIFT
    assert got["ReasoningNERHighErrorRate"]["expr"].endswith("> 0.02")
    assert 'status=~"5.."' in got["ReasoningNERHighErrorRate"]["expr"]
    for r in got.values():
        assert r["for"] == ("30m" if r["alert"] in DRIFT else "10m") and r["labels"]["team"] == "nlp" and r["labels"]["inferenceservice"] == "reasoning-ner"
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


def test_drift_alerts_compare_live_rates_with_the_baseline_gauges() -> None:
    drift = {"enabled": True, "window": "2h", "pendingFor": "45m", "parseErrorFactor": 3, "parseErrorMargin": 0.01,
             "ungroundedFactor": 4, "ungroundedMargin": 0.2, "entityRateFactor": 2.5, "entityRateEpsilon": 0.1,
             "minLabelSentences": 50, "promptCharsShift": 0.3}
    got = rules({"monitoring": {"alerts": {"enabled": True, "drift": drift}}})
    baseline = {"ReasoningNERParseErrorDrift": "rner_drift_baseline_parse_error_rate",
                "ReasoningNERUngroundedDrift": "rner_drift_baseline_ungrounded_rate",
                "ReasoningNEREntityRateDrift": "rner_drift_baseline_entity_rate",
                "ReasoningNERPromptLengthDrift": "rner_drift_baseline_prompt_chars"}
    for alert, gauge in baseline.items():
        expr = got[alert]["expr"]
        assert gauge in used_metrics(expr) and "[2h]" in expr and got[alert]["for"] == "45m", alert
    assert got["ReasoningNERParseErrorDrift"]["expr"].endswith("* 3 + 0.01")
    assert got["ReasoningNERUngroundedDrift"]["expr"].endswith("* 4 + 0.2")
    entity = got["ReasoningNEREntityRateDrift"]
    # both directions, per label, smoothed, and only with enough traffic for that label
    assert entity["expr"].count("> 2.5") == 2 and entity["expr"].count("+ 0.1)") == 4
    assert entity["expr"].endswith(">= 50") and "sum by (label) (increase(rner_drift_label_sentences_total" in entity["expr"]
    assert "{{ $labels.label }}" in entity["annotations"]["summary"]
    assert got["ReasoningNERPromptLengthDrift"]["expr"].endswith("- 1) > 0.3")
    assert validate(template_objects(TEMPLATE, {"monitoring": {"alerts": {"enabled": True, "drift": drift}}})) == []


def test_drift_alerts_can_be_turned_off() -> None:
    got = rules({"monitoring": {"alerts": {"enabled": True, "drift": {"enabled": False}}}})
    assert not DRIFT & set(got) and "ReasoningNERParseFailures" in got
