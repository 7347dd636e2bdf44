"""templates/podmonitor.yaml: the scrape of the NER service's and vLLM's /metrics (off by default)."""

from __future__ import annotations

from .chart_tools import one, render, template_objects, validate
from .netpol import Pod, ingress_allowed

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
    # the NetworkPolicies admit Prometheus's pods to both components on that port
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    for component in ("transformer", "predictor"):
        target = Pod("reasoning-ner", {"serving.kserve.io/inferenceservice": "reasoning-ner", "component": component})
        assert ingress_allowed(policies, prometheus, target, ep["targetPort"]), component


def test_structurally_valid() -> None:
    assert validate(template_objects(TEMPLATE, ON)) == []
    bad = template_objects(TEMPLATE, {"monitoring": {"podMonitor": {"enabled": True, "interval": "10s",
                                                                    "scrapeTimeout": "30s"}}})
    assert any("exceeds interval" in p for p in validate(bad))
