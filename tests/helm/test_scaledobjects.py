"""templates/scaledobjects.yaml: our own KEDA ScaledObjects only with autoscaler external (exactly
the builder's), never with keda (KServe writes that one) or in Knative mode; one autoscaler per
Deployment over the whole release."""

from __future__ import annotations

import pytest

from reasoning_ner.k8s.inference_service import build_scaled_objects, check_single_autoscaler

from .chart_tools import EXAMPLES, load_values, render, settings_for, template_objects, validate

TEMPLATE = "templates/scaledobjects.yaml"
EXTERNAL = {"serving": {"autoscaler": "external", "scaling": {"maxReplicas": 4}}}


def test_external_renders_the_builders_scaled_objects() -> None:
    for values in [EXTERNAL, {"serving": {"autoscaler": "external", "transformer": {"enabled": False},
                                          "scaling": {"waitingRequestsQuery": "sum(q)", "maxReplicas": 2}}}]:
        assert template_objects(TEMPLATE, values) == build_scaled_objects(settings_for(values))


def test_targets_and_trigger() -> None:
    pred, trans = template_objects(TEMPLATE, EXTERNAL)
    assert pred["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "reasoning-ner-predictor"}
    trigger = pred["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "4"
    assert "vllm:num_requests_waiting" in trigger["metadata"]["query"]
    assert trans["spec"]["triggers"][0]["type"] == "cpu"


@pytest.mark.parametrize("values", [None, {"serving": {"autoscaler": "keda"}}, {"serving": {"mode": "knative"}}],
                         ids=["none", "keda", "knative"])
def test_no_scaled_object_unless_external(values) -> None:
    assert template_objects(TEMPLATE, values) == []


@pytest.mark.parametrize("values", [None, EXTERNAL, *(load_values(p) for p in EXAMPLES)],
                         ids=["defaults", "external", *(p.stem for p in EXAMPLES)])
def test_one_autoscaler_per_deployment(values) -> None:
    check_single_autoscaler(render(values))


def test_valid_against_the_keda_crd() -> None:
    assert validate(template_objects(TEMPLATE, EXTERNAL)) == []
