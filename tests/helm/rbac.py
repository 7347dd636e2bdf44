"""A small RBAC evaluator for the chart's Roles: is (verb, group, resource, name) allowed?"""

from __future__ import annotations

import re
from typing import Any


def allowed(rules: list[dict[str, Any]], verb: str, group: str, resource: str, name: str | None = None) -> bool:
    for rule in rules:
        if group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
            continue
        if verb not in rule.get("verbs", []):
            continue
        names = rule.get("resourceNames")
        if names and (name is None or name not in names):
            continue
        return True
    return False


_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<resource>[^/?]+)(?:/(?P<name>[^/?]+))?")


def request_attributes(method: str, path: str) -> tuple[str, str, str, str, str | None] | None:
    """(verb, group, namespace, resource, name) of a namespaced API request; None for non-API paths."""
    m = _PATH.match(path)
    if not m:
        return None
    name = m.group("name")
    verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch", "PUT": "update",
            "DELETE": "delete"}[method]
    return verb, m.group("group") or "", m.group("ns"), m.group("resource"), name


def assert_least_privilege(role: dict[str, Any]) -> None:
    for rule in role["rules"]:
        assert "*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []), rule
        assert "*" not in rule.get("apiGroups", []), rule
        assert not {"escalate", "bind", "impersonate"} & set(rule.get("verbs", [])), rule
