"""templates/rbac-deploy.yaml: the deploy step's Role, bound to the pipeline-run ServiceAccount.

Beyond the rules themselves, the real deploy step (reasoning_ner.k8s.rollout) is run
against the stub KServe API server of tests/test_deploy.py for a Knative canary and a Standard
rollout, and every API request it sends must be allowed by the rendered Role.
"""

from __future__ import annotations

import pytest

from .chart_tools import NAMESPACE, RELEASE, template_objects, validate
from .rbac import allowed, assert_least_privilege, request_attributes

TEMPLATE = "templates/rbac-deploy.yaml"


def role_and_binding(values=None):
    objs = {o["kind"]: o for o in template_objects(TEMPLATE, values)}
    return objs["Role"], objs["RoleBinding"]


def test_rules_are_exactly_the_deploy_steps_needs() -> None:
    role, _ = role_and_binding()
    assert role["metadata"]["namespace"] == NAMESPACE
    assert_least_privilege(role)
    rules = role["rules"]
    for verb in ("get", "patch"):
        assert allowed(rules, verb, "serving.kserve.io", "inferenceservices", RELEASE)
    assert allowed(rules, "get", "apps", "deployments", f"{RELEASE}-predictor")
    for verb, group, resource, name in [("delete", "serving.kserve.io", "inferenceservices", RELEASE),
                                        ("patch", "serving.kserve.io", "inferenceservices", "another-isvc"),
                                        ("create", "serving.kserve.io", "inferenceservices", None),
                                        ("list", "serving.kserve.io", "inferenceservices", None),
                                        ("get", "apps", "deployments", "another-deployment"),
                                        ("patch", "apps", "deployments", f"{RELEASE}-predictor"),
                                        ("get", "", "secrets", None)]:
        assert not allowed(rules, verb, group, resource, name), (verb, resource, name)


def test_bound_to_the_pipeline_runner_in_the_runs_namespace() -> None:
    role, binding = role_and_binding({"kfp": {"namespace": "kubeflow"}})
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "reasoning-ner-pipeline-runner", "namespace": "kubeflow"}]
    assert binding["metadata"]["namespace"] == NAMESPACE  # the Role acts where the InferenceService is


def test_switches() -> None:
    assert template_objects(TEMPLATE, {"rbac": {"deploy": {"enabled": False}}}) == []
    assert template_objects(TEMPLATE, {"rbac": {"create": False}}) == []


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE)) == []


@pytest.mark.parametrize("scenario", ["knative-canary", "standard-rollout"])
def test_the_real_deploy_step_needs_nothing_more(scenario: str) -> None:
    from reasoning_ner.k8s.rollout import deploy
    from reasoning_ner.k8s.manifests import overlay_settings
    from tests.test_deploy import FakeKServe  # the deploy step's stub API server

    settings = overlay_settings("knative" if scenario == "knative-canary" else "base")
    with FakeKServe(settings) as fake:
        deploy("s3://reasoning-ner/models/v2", settings, NAMESPACE, canary_percent=10 if scenario == "knative-canary" else None,
               client=fake.client(), poll_interval_s=0.0, sleep=lambda s: None, probe=False)
    rules = role_and_binding()[0]["rules"]
    api = [a for r in fake.requests if (a := request_attributes(r["method"], r["path"]))]
    assert api, "the deploy step sent no API request"
    for verb, group, ns, resource, name in api:
        assert ns == NAMESPACE
        assert allowed(rules, verb, group, resource, name), f"{verb} {group}/{resource} {name} is not granted"
