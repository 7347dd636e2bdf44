"""templates/networkpolicy.yaml: exactly the builder's NetworkPolicies, plus the helm test's admission;
and what they allow, evaluated over pod and namespace labels (tests/helm/netpol.py): the gateways reach
the transformer but not the predictor, the transformer reaches the predictor, so the API key the
transformer checks cannot be bypassed."""

from __future__ import annotations

from typing import Any

import pytest

from reasoning_ner.k8s.inference_service import QUEUE_PROXY_PORTS, build_network_policies

from .chart_tools import EXAMPLES, NAMESPACE, load_values, one, render, settings_for, template_objects, validate
from .netpol import Pod, ingress_allowed, selects

TEMPLATE = "templates/networkpolicy.yaml"
NAME = "reasoning-ner"


def policies(values=None):
    return {o["metadata"]["name"]: o for o in template_objects(TEMPLATE, values)}


def test_ingress_policies_are_the_builders() -> None:
    for values in [None, *(load_values(p) for p in EXAMPLES),
                   {"serving": {"networkPolicy": {"gatewayNamespaces": ["gateway"], "prometheusPorts": [8080]}}},
                   {"serving": {"networkPolicy": {"prometheusPodLabels": None}}},
                   {"serving": {"networkPolicy": {"prometheusPodLabels": {"app.kubernetes.io/name": None, "team": "obs"}}}},
                   {"serving": {"mode": "knative"}},
                   {"serving": {"transformer": {"enabled": False}}}]:
        built = build_network_policies(settings_for(values))
        got = policies(values)
        assert [got[p["metadata"]["name"]] for p in built] == built
        expected = {f"{NAME}-ingress", f"{NAME}-predictor-ingress"} if settings_for(values).transformer.enabled \
            else {f"{NAME}-ingress"}
        assert {p["metadata"]["name"] for p in built} == expected


def test_only_ingress_is_restricted_per_component() -> None:
    got = policies()
    for name, component in ((f"{NAME}-ingress", "transformer"), (f"{NAME}-predictor-ingress", "predictor")):
        assert got[name]["spec"]["policyTypes"] == ["Ingress"]  # the storage initializer must reach S3
        assert got[name]["spec"]["podSelector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": NAME,
                                                                    "component": component}}
    alone = policies({"serving": {"transformer": {"enabled": False}}})
    assert alone[f"{NAME}-ingress"]["spec"]["podSelector"]["matchLabels"]["component"] == "predictor"
    assert f"{NAME}-predictor-ingress" not in alone


def test_helm_test_pod_is_admitted_to_the_component_it_calls() -> None:
    np = policies()[f"{NAME}-helm-test"]
    (rule,) = np["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": NAME,
                                                            "app.kubernetes.io/component": "helm-test"}}}]
    assert {p["port"] for p in rule["ports"]} == {8080, 8012}
    assert np["spec"]["podSelector"]["matchLabels"]["component"] == "transformer"
    alone = policies({"serving": {"transformer": {"enabled": False}}})[f"{NAME}-helm-test"]
    assert alone["spec"]["podSelector"]["matchLabels"]["component"] == "predictor"
    assert f"{NAME}-helm-test" not in policies({"tests": {"enabled": False}})


def test_the_charts_own_pods_accept_no_ingress() -> None:
    got = policies()
    for component in ("pipeline-registration", "helm-test"):
        np = got[f"{NAME}-{component}-deny-ingress"]
        assert np["spec"] == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": NAME,
                                                              "app.kubernetes.io/component": component}},
                              "policyTypes": ["Ingress"]}
    objs = render()
    for kind, spec in (("Job", one(objs, "Job")["spec"]["template"]), ("Pod", one(objs, "Pod"))):
        labels = spec["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] in ("pipeline-registration", "helm-test"), kind
    off = policies({"tests": {"enabled": False}, "pipeline": {"register": {"enabled": False}}})
    assert sorted(off) == [f"{NAME}-ingress", f"{NAME}-predictor-ingress"]


def test_disabled() -> None:
    assert policies({"serving": {"networkPolicy": {"enabled": False}}}) == {}


def test_valid() -> None:
    for values in (None, {"serving": {"mode": "knative"}}, {"serving": {"networkPolicy": {"prometheusPodLabels": None}}}):
        assert validate(template_objects(TEMPLATE, values)) == []


# ------------------------------------------------------------------------------------ what they allow

#: KServe's pod labels (constants.InferenceServicePodLabelKey, constants.KServiceComponentLabel).
TRANSFORMER = Pod(NAMESPACE, {"serving.kserve.io/inferenceservice": NAME, "component": "transformer"})
PREDICTOR = Pod(NAMESPACE, {"serving.kserve.io/inferenceservice": NAME, "component": "predictor"})
GATEWAY = Pod("istio-system", {"app": "istio-ingressgateway", "istio": "ingressgateway"})
ACTIVATOR = Pod("knative-serving", {"app": "activator"})
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"})
GRAFANA = Pod("monitoring", {"app.kubernetes.io/name": "grafana"})
NEIGHBOUR = Pod(NAMESPACE, {"app": "notebook"})  # any other pod of the release namespace
STRANGER = Pod("team-b", {"app": "client"})
HELM_TEST = Pod(NAMESPACE, {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "helm-test"})
OTHER_ISVC = Pod(NAMESPACE, {"serving.kserve.io/inferenceservice": "other", "component": "transformer"})


def cluster(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [o for o in render(values) if o["kind"] == "NetworkPolicy"]


def test_the_evaluator_is_real() -> None:
    """The evaluator's semantics on hand-written policies (so the conclusions below rest on something)."""
    ns = NAMESPACE

    def pol(selector: dict[str, Any], ingress: list[dict[str, Any]] | None, types=("Ingress",)) -> dict[str, Any]:
        spec: dict[str, Any] = {"podSelector": selector}
        if types is not None:
            spec["policyTypes"] = list(types)
        if ingress is not None:
            spec["ingress"] = ingress
        return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": ns}, "spec": spec}

    target = Pod(ns, {"app": "x"})
    assert ingress_allowed([], STRANGER, target, 80)  # nothing selects it: open
    assert not ingress_allowed([pol({}, None)], NEIGHBOUR, target, 80)  # default deny
    assert ingress_allowed([pol({}, [{}])], STRANGER, target, 80)  # a rule without from/ports: everything
    same_ns = pol({"matchLabels": {"app": "x"}}, [{"from": [{"podSelector": {}}]}])
    assert ingress_allowed([same_ns], NEIGHBOUR, target, 1) and not ingress_allowed([same_ns], STRANGER, target, 1)
    both = pol({}, [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
                     "ports": [{"protocol": "TCP", "port": 8080, "endPort": 8090}]}])
    assert ingress_allowed([both], PROMETHEUS, target, 8085) and not ingress_allowed([both], PROMETHEUS, target, 8091)
    assert not ingress_allowed([both], GRAFANA, target, 8080) and not ingress_allowed([both], PROMETHEUS, target, 8080, "UDP")
    egress_only = pol({}, None, types=("Egress",))
    assert ingress_allowed([egress_only], STRANGER, target, 80)
    union = [pol({"matchLabels": {"app": "x"}}, []), pol({}, [{"from": [{"namespaceSelector": {}}]}])]
    assert ingress_allowed(union, STRANGER, target, 80)  # policies are ORed
    assert selects({"matchExpressions": [{"key": "component", "operator": "In", "values": ["predictor"]}]}, PREDICTOR.labels)
    assert not selects({"matchExpressions": [{"key": "component", "operator": "DoesNotExist"}]}, PREDICTOR.labels)
    other_ns = dict(pol({}, None), metadata={"name": "p", "namespace": "elsewhere"})
    assert ingress_allowed([other_ns], STRANGER, target, 80)  # a policy of another namespace selects nothing here


@pytest.mark.parametrize("mode", ["standard", "knative"])
def test_the_key_cannot_be_bypassed(mode: str) -> None:
    """The gateways reach the transformer (which checks the API key) but not the predictor's serving port;
    the transformer reaches the predictor; nothing else in or outside the namespace does."""
    pols = cluster({"serving": {"mode": mode}})
    # the front door: open to the gateways, on the serving port and Knative's queue-proxy
    for port in (8080, 8012):
        assert ingress_allowed(pols, GATEWAY, TRANSFORMER, port)
        assert ingress_allowed(pols, ACTIVATOR, TRANSFORMER, port)
    # the predictor's serving port: only the transformer
    assert ingress_allowed(pols, TRANSFORMER, PREDICTOR, 8080)
    assert ingress_allowed(pols, TRANSFORMER, PREDICTOR, 8012)
    for who in (GATEWAY, ACTIVATOR, NEIGHBOUR, STRANGER, HELM_TEST, GRAFANA, OTHER_ISVC):
        assert not ingress_allowed(pols, who, PREDICTOR, 8080), who
    # Knative's data path to a Knative predictor: the local gateway and the activator on the queue-proxy ports
    for port in QUEUE_PROXY_PORTS:
        assert ingress_allowed(pols, GATEWAY, PREDICTOR, port) is (mode == "knative")
        assert ingress_allowed(pols, ACTIVATOR, PREDICTOR, port) is (mode == "knative")
        assert not ingress_allowed(pols, NEIGHBOUR, PREDICTOR, port) and not ingress_allowed(pols, STRANGER, PREDICTOR, port)
    # scraping: Prometheus's pods, not the rest of its namespace
    for target in (TRANSFORMER, PREDICTOR):
        assert ingress_allowed(pols, PROMETHEUS, target, 8080)
        assert not ingress_allowed(pols, GRAFANA, target, 8080)
    # the transformer itself: gateways and the helm test, not the neighbours
    assert ingress_allowed(pols, HELM_TEST, TRANSFORMER, 8080)
    assert not ingress_allowed(pols, NEIGHBOUR, TRANSFORMER, 8080) and not ingress_allowed(pols, STRANGER, TRANSFORMER, 8080)


def test_without_a_transformer_the_predictor_is_the_front_door() -> None:
    pols = cluster({"serving": {"transformer": {"enabled": False}}})
    assert ingress_allowed(pols, GATEWAY, PREDICTOR, 8080) and ingress_allowed(pols, HELM_TEST, PREDICTOR, 8080)
    assert not ingress_allowed(pols, NEIGHBOUR, PREDICTOR, 8080)


def test_prometheus_pod_labels_null_admits_its_whole_namespace() -> None:
    pols = cluster({"serving": {"networkPolicy": {"prometheusPodLabels": None}}})
    assert ingress_allowed(pols, GRAFANA, PREDICTOR, 8080)
    assert not ingress_allowed(pols, GATEWAY, PREDICTOR, 8080)


def test_the_builders_policies_allow_the_same() -> None:
    """The kustomize tree / deploy step (builder) draw the same lines as the chart."""
    from reasoning_ner.k8s import overlay_settings

    for overlay in ("base", "knative", "cpu-smoke"):
        pols = build_network_policies(overlay_settings(overlay))
        transformer = Pod("reasoning-ner", TRANSFORMER.labels)
        predictor = Pod("reasoning-ner", PREDICTOR.labels)
        assert ingress_allowed(pols, GATEWAY, transformer, 8080)
        assert not ingress_allowed(pols, GATEWAY, predictor, 8080)
        assert ingress_allowed(pols, transformer, predictor, 8080)


def test_the_notes_in_cluster_curl_says_which_namespaces_the_policy_admits() -> None:
    """NOTES' in-cluster curl works from the namespaces it names, and adding a client's namespace as it says
    admits that client to the transformer's port (evaluated over the rendered policies)."""
    from .chart_tools import render_files

    client = Pod("team-apps", {"app": "caller"})
    notes = render_files()["templates/NOTES.txt"]
    assert "istio-system, knative-serving, kserve; for your own clients, add their namespace to" in notes
    assert not ingress_allowed(list(policies().values()), client, TRANSFORMER, 8080)
    opened = {"serving": {"networkPolicy": {"gatewayNamespaces": ["istio-system", "knative-serving", "kserve", "team-apps"]}}}
    assert ingress_allowed(list(policies(opened).values()), client, TRANSFORMER, 8080)
    assert not ingress_allowed(list(policies(opened).values()), client, PREDICTOR, 8080), "the API key stays in front"
    off = {"serving": {"networkPolicy": {"enabled": False}}}
    assert "the NetworkPolicy admits" not in render_files(off)["templates/NOTES.txt"]
