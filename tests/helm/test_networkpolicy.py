"""templates/networkpolicy.yaml: exactly the builder's NetworkPolicy, plus the helm test's admission."""

from __future__ import annotations

from reasoning_ner.k8s.inference_service import build_network_policy

from .chart_tools import EXAMPLES, load_values, one, render, settings_for, template_objects, validate

TEMPLATE = "templates/networkpolicy.yaml"


def policies(values=None):
    return {o["metadata"]["name"]: o for o in template_objects(TEMPLATE, values)}


def test_ingress_policy_is_the_builders() -> None:
    for values in [None, *(load_values(p) for p in EXAMPLES),
                   {"serving": {"networkPolicy": {"gatewayNamespaces": ["gateway"], "prometheusPorts": [8080]}}}]:
        assert policies(values)["reasoning-ner-ingress"] == build_network_policy(settings_for(values))


def test_only_ingress_is_restricted() -> None:
    np = policies()["reasoning-ner-ingress"]
    assert np["spec"]["policyTypes"] == ["Ingress"]  # the storage initializer must reach S3
    assert np["spec"]["podSelector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": "reasoning-ner"}}


def test_helm_test_pod_is_admitted_to_the_serving_port() -> None:
    np = policies()["reasoning-ner-helm-test"]
    (rule,) = np["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "reasoning-ner",
                                                            "app.kubernetes.io/component": "helm-test"}}}]
    assert {p["port"] for p in rule["ports"]} == {8080, 8012}
    assert "reasoning-ner-helm-test" not in policies({"tests": {"enabled": False}})


def test_the_charts_own_pods_accept_no_ingress() -> None:
    got = policies()
    for component in ("pipeline-registration", "helm-test"):
        np = got[f"reasoning-ner-{component}-deny-ingress"]
        assert np["spec"] == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "reasoning-ner",
                                                              "app.kubernetes.io/component": component}},
                              "policyTypes": ["Ingress"]}
    objs = render()
    for kind, spec in (("Job", one(objs, "Job")["spec"]["template"]), ("Pod", one(objs, "Pod"))):
        labels = spec["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] in ("pipeline-registration", "helm-test"), kind
    off = policies({"tests": {"enabled": False}, "pipeline": {"register": {"enabled": False}}})
    assert sorted(off) == ["reasoning-ner-ingress"]


def test_disabled() -> None:
    assert policies({"serving": {"networkPolicy": {"enabled": False}}}) == {}


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE)) == []
