"""A small evaluator of NetworkPolicy ingress rules (networking.k8s.io/v1 semantics) over pod and
namespace labels, for asking "may this pod open this port on that pod?" of rendered policies.

Semantics implemented (the Kubernetes API reference, NetworkPolicySpec / NetworkPolicyPeer):
* a pod is isolated for ingress when a policy in its namespace selects it and lists ``Ingress`` in
  ``policyTypes`` (or has ``ingress`` rules and no ``policyTypes``); a pod no policy selects accepts
  everything;
* an isolated pod accepts a connection when at least one rule of at least one selecting policy
  admits it: policies and rules are ORed; a rule with no ``from`` admits every source and with no
  ``ports`` every port;
* a peer with only ``podSelector`` means pods of the policy's own namespace; with only
  ``namespaceSelector`` every pod of the matching namespaces; with both, the matching pods of the
  matching namespaces; ``ipBlock`` peers match no pod here (they are for addresses outside the
  cluster);
* a label selector's ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists, DoesNotExist) are
  ANDed; an empty selector matches everything;
* namespaces carry ``kubernetes.io/metadata.name: <name>`` (set by the API server) plus their labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    @property
    def ns_labels(self) -> dict[str, str]:
        return {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace}


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches ``labels`` (None or {} matches everything)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown operator {op!r}")
    return True


def _peer_admits(peer: dict[str, Any], policy_ns: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    if ns_sel is None:
        return source.namespace == policy_ns and selects(pod_sel, source.labels)
    return selects(ns_sel, source.ns_labels) and selects(pod_sel, source.labels)


def _port_admits(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        start, end = p["port"], p.get("endPort", p["port"])
        if not isinstance(start, int):
            raise ValueError(f"named ports are not evaluated here: {start!r}")
        if start <= port <= end:
            return True
    return False


def _isolates_ingress(policy: dict[str, Any]) -> bool:
    spec = policy["spec"]
    types = spec.get("policyTypes")
    return "Ingress" in types if types else True  # without policyTypes, Ingress is always implied


def ingress_allowed(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int, protocol: str = "TCP") -> bool:
    """May ``source`` open ``port`` on ``target`` under ``policies`` (every NetworkPolicy of the cluster)?"""
    selecting = [p for p in policies if p.get("kind") == "NetworkPolicy"
                 and p["metadata"].get("namespace") == target.namespace
                 and selects(p["spec"].get("podSelector"), target.labels) and _isolates_ingress(p)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            from_ok = not peers or any(_peer_admits(peer, policy["metadata"]["namespace"], source) for peer in peers)
            if from_ok and _port_admits(rule.get("ports"), port, protocol):
                return True
    return False
