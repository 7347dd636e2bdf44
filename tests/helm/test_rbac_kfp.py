"""templates/rbac-kfp.yaml: in multi-user Kubeflow, a RoleBinding to kubeflow-pipelines-edit in the
profile namespace for the run and registration ServiceAccounts (the KFP API authorizes their
projected tokens there)."""

from __future__ import annotations

from .chart_tools import template_objects, validate

TEMPLATE = "templates/rbac-kfp.yaml"
MULTI = {"kfp": {"multiUser": True, "namespace": "kubeflow-user-example-com"}}


def test_only_in_multi_user_mode() -> None:
    assert template_objects(TEMPLATE) == []


def test_binding() -> None:
    (binding,) = template_objects(TEMPLATE, MULTI)
    assert binding["kind"] == "RoleBinding"  # namespaced: never a ClusterRoleBinding
    assert binding["metadata"]["namespace"] == "kubeflow-user-example-com"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "kubeflow-pipelines-edit"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "reasoning-ner-pipeline-runner", "namespace": "kubeflow-user-example-com"},
        {"kind": "ServiceAccount", "name": "reasoning-ner-registration", "namespace": "reasoning-ner"},
    ]


def test_without_registration_and_custom_role() -> None:
    (binding,) = template_objects(TEMPLATE, {**MULTI, "pipeline": {"register": {"enabled": False}},
                                             "kfp": {**MULTI["kfp"], "editClusterRole": "kubeflow-edit"}})
    assert binding["roleRef"]["name"] == "kubeflow-edit"
    assert [s["name"] for s in binding["subjects"]] == ["reasoning-ner-pipeline-runner"]


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE, MULTI)) == []
