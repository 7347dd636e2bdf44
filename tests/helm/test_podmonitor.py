"""templates/podmonitor.yaml: the scrape of the NER service's and vLLM's /metrics (off by default)."""

from __future__ import annotations

from .chart_tools import one, render, template_objects, validate

TEMPLATE = "templates/podmonitor.yaml"
ON = {"monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}}


def test_off_by_default() -> None:
    assert template_objects(TEMPLATE) == []


def test_selects_the_inference_service_pods_on_the_metrics_port() -> None:
    objs = render(ON)
    pm = one(objs, "PodMonitor")
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pm["spec"]["selector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": "reasoning-ner"}}
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["reasoning-ner"]}
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert (ep["targetPort"], ep["path"]) == (8080, "/metrics")
    assert pm["spec"]["podTargetLabels"] == ["component"]
    # the NetworkPolicy admits the Prometheus namespace on that port
    netpol = one(objs, "NetworkPolicy", "reasoning-ner-ingress")
    prom_rule = netpol["spec"]["ingress"][2]
    assert 8080 in [p["port"] for p in prom_rule["ports"]]


def test_structurally_valid() -> None:
    assert validate(template_objects(TEMPLATE, ON)) == []
    bad = template_objects(TEMPLATE, {"monitoring": {"podMonitor": {"enabled": True, "interval": "10s",
                                                                    "scrapeTimeout": "30s"}}})
    assert any("exceeds interval" in p for p in validate(bad))
