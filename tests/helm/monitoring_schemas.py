"""Structural schemas for the prometheus-operator kinds the chart renders (PodMonitor, PrometheusRule).

Their CRDs are not among the vendored ones in ../shared/k8s/crds, so these hand-written schemas
check what the chart uses, strictly (unknown fields are errors): the field names and types of
monitoring.coreos.com/v1 as documented by the prometheus-operator API reference, durations in
Prometheus' format, label names, and PromQL that at least parses as balanced expressions with
known metric names. They are deliberately narrower than the real CRDs: a field the chart starts
using must be added here, which is the point.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft7Validator

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"

_META = {"type": "object", "required": ["name", "namespace"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    "namespace": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
}, "additionalProperties": False}

_SELECTOR = {"type": "object", "properties": {
    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
}, "additionalProperties": False}

_RELABEL = {"type": "object", "properties": {
    "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": LABEL_NAME}},
    "targetLabel": {"type": "string"},
    "regex": {"type": "string"},
    "replacement": {"type": "string"},
    "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod",
                        "lowercase", "uppercase", "keepequal", "dropequal"]},
}, "additionalProperties": False}

POD_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _META,
        "spec": {"type": "object", "required": ["selector", "podMetricsEndpoints"], "properties": {
            "jobLabel": {"type": "string"},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "selector": _SELECTOR,
            "namespaceSelector": {"type": "object", "properties": {
                "matchNames": {"type": "array", "items": {"type": "string"}}}, "additionalProperties": False},
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {"type": "object", "properties": {
                "targetPort": {"type": ["integer", "string"]},
                "port": {"type": "string"},
                "path": {"type": "string", "pattern": "^/"},
                "scheme": {"enum": ["http", "https"]},
                "interval": {"type": "string", "pattern": DURATION},
                "scrapeTimeout": {"type": "string", "pattern": DURATION},
                "honorLabels": {"type": "boolean"},
                "relabelings": {"type": "array", "items": _RELABEL},
                "metricRelabelings": {"type": "array", "items": _RELABEL},
            }, "additionalProperties": False}},
        }, "additionalProperties": False},
    },
    "additionalProperties": False,
}

PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _META,
        "spec": {"type": "object", "required": ["groups"], "properties": {
            "groups": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["name", "rules"], "properties": {
                "name": {"type": "string", "minLength": 1},
                "interval": {"type": "string", "pattern": DURATION},
                "rules": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["expr"], "properties": {
                    "alert": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_]*$"},
                    "record": {"type": "string"},
                    "expr": {"type": "string", "minLength": 1},
                    "for": {"type": "string", "pattern": DURATION},
                    "labels": {"type": "object", "propertyNames": {"pattern": LABEL_NAME},
                               "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                }, "additionalProperties": False, "oneOf": [{"required": ["alert"]}, {"required": ["record"]}]}},
            }, "additionalProperties": False}},
        }, "additionalProperties": False},
    },
    "additionalProperties": False,
}

SCHEMAS = {"PodMonitor": POD_MONITOR, "PrometheusRule": PROMETHEUS_RULE}


def promql_problems(expr: str) -> list[str]:
    """Cheap PromQL sanity: balanced brackets and quotes, no template or printf leftovers, range
    windows that are durations, grouping clauses that list label names."""
    problems = []
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != pairs[ch]:
                problems.append(f"unbalanced {ch!r} in {expr!r}")
                break
    if stack or in_string:
        problems.append(f"unclosed bracket or string in {expr!r}")
    if "{{" in expr or "<no value>" in expr:
        problems.append(f"template leftover in {expr!r}")
    if "%!" in expr:  # Go's printf complaining about a verb and its argument (e.g. %d of a string)
        problems.append(f"printf error in {expr!r}")
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label matchers' strings may hold brackets
    for window in re.findall(r"\[([^\]]*)\]", bare):
        if not re.fullmatch(DURATION.strip("^$") + r"|\$__rate_interval|\$__interval|\$__range", window) or not window:
            problems.append(f"range [{window}] is not a Prometheus duration in {expr!r}")
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", bare):
        names = [n.strip() for n in grouping.split(",") if n.strip()]
        if not all(re.fullmatch(LABEL_NAME, n) for n in names):
            problems.append(f"bad label list ({grouping}) in {expr!r}")
    return problems


def monitoring_problems(obj: dict[str, Any]) -> list[str]:
    schema = SCHEMAS.get(obj.get("kind", ""))
    if schema is None:
        return [f"no structural schema for {obj.get('kind')}"]
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                for e in Draft7Validator(schema).iter_errors(obj)]
    if obj["kind"] == "PrometheusRule":
        for group in obj.get("spec", {}).get("groups", []):
            for rule in group.get("rules", []):
                problems += promql_problems(rule.get("expr", ""))
    if obj["kind"] == "PodMonitor":
        for ep in obj.get("spec", {}).get("podMetricsEndpoints", []):
            if "interval" in ep and "scrapeTimeout" in ep and _seconds(ep["scrapeTimeout"]) > _seconds(ep["interval"]):
                problems.append(f"scrapeTimeout {ep['scrapeTimeout']} exceeds interval {ep['interval']}")
    return problems


def _seconds(duration: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|y|w|d|h|m|s)", duration))
