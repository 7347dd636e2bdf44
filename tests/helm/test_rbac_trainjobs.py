"""templates/rbac-trainjobs.yaml: Kubeflow Trainer TrainJobs for multi-node training, only when enabled."""

from __future__ import annotations

from .chart_tools import render_error, template_objects, validate
from .rbac import allowed, assert_least_privilege

TEMPLATE = "templates/rbac-trainjobs.yaml"
ON = {"multiNode": {"enabled": True}}


def test_off_by_default() -> None:
    assert template_objects(TEMPLATE) == []


def test_create_get_watch_delete_trainjobs_only() -> None:
    role = {o["kind"]: o for o in template_objects(TEMPLATE, ON)}["Role"]
    assert_least_privilege(role)
    assert role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
                              "verbs": ["create", "get", "watch", "delete"]}]
    assert not allowed(role["rules"], "get", "trainer.kubeflow.org", "clustertrainingruntimes")


def test_namespaces() -> None:
    """The pipeline creates its TrainJobs in the run's own namespace (kfp.namespace), where the shared
    PVC is: the Role is there, and another multiNode.namespace is refused."""
    objs = {o["kind"]: o for o in template_objects(TEMPLATE, {**ON, "kfp": {"multiUser": True, "namespace": "team-nlp"}})}
    assert objs["Role"]["metadata"]["namespace"] == objs["RoleBinding"]["metadata"]["namespace"] == "team-nlp"
    assert objs["RoleBinding"]["subjects"][0] == {"kind": "ServiceAccount", "name": "reasoning-ner-pipeline-runner",
                                                  "namespace": "team-nlp"}
    default = {o["kind"]: o for o in template_objects(TEMPLATE, ON)}
    assert default["Role"]["metadata"]["namespace"] == "kubeflow"
    same = {o["kind"]: o for o in template_objects(TEMPLATE, {"multiNode": {"enabled": True, "namespace": "kubeflow"}})}
    assert same["Role"]["metadata"]["namespace"] == "kubeflow"
    assert "differs from kfp.namespace" in render_error({"multiNode": {"enabled": True, "namespace": "training"}})


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE, ON)) == []
