"""templates/rbac-run-executor.yaml: what a run's KFP driver/launcher and Argo executor need in the
runs' namespace, and nothing more."""

from __future__ import annotations

from .chart_tools import template_objects, validate
from .rbac import allowed, assert_least_privilege

TEMPLATE = "templates/rbac-run-executor.yaml"


def objs(values=None):
    return {o["kind"]: o for o in template_objects(TEMPLATE, values)}


def test_rules() -> None:
    role = objs()["Role"]
    assert_least_privilege(role)
    rules = role["rules"]
    for verb in ("create", "get", "delete"):  # the pipeline creates no PVC (an emptyDir workspace)
        assert not allowed(rules, verb, "", "persistentvolumeclaims", "run-abc-rner-workspace")
    assert allowed(rules, "create", "argoproj.io", "workflowtaskresults")
    assert allowed(rules, "get", "", "configmaps", "kfp-launcher")
    assert allowed(rules, "get", "", "secrets", "mlpipeline-minio-artifact")
    assert not allowed(rules, "get", "", "secrets", "reasoning-ner-s3")  # env from Secrets needs no RBAC
    assert not allowed(rules, "list", "", "secrets")
    assert not allowed(rules, "create", "", "pods")
    assert not allowed(rules, "get", "", "configmaps", "some-other-config")


def test_in_the_runs_namespace_bound_to_the_runner() -> None:
    got = objs({"kfp": {"namespace": "kubeflow"}, "rbac": {"runExecutor": {"artifactSecrets": ["minio-creds"]}}})
    assert got["Role"]["metadata"]["namespace"] == got["RoleBinding"]["metadata"]["namespace"] == "kubeflow"
    assert got["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "reasoning-ner-pipeline-runner",
                                               "namespace": "kubeflow"}]
    assert allowed(got["Role"]["rules"], "get", "", "secrets", "minio-creds")


def test_lists_can_be_emptied() -> None:
    role = objs({"rbac": {"runExecutor": {"configMaps": [], "artifactSecrets": []}}})["Role"]
    assert not any("configmaps" in r["resources"] or "secrets" in r["resources"] for r in role["rules"])


def test_switch_and_valid() -> None:
    assert template_objects(TEMPLATE, {"rbac": {"runExecutor": {"enabled": False}}}) == []
    assert validate(template_objects(TEMPLATE)) == []
