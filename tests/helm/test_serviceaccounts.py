"""templates/serviceaccounts.yaml: the serving ServiceAccount (exactly the builder's), the pipeline
runner (in the runs' namespace, naming the pipeline's Secrets), the registration Job's and the
helm test's (no Kubernetes API token); every one lists the image pull Secrets. The S3 annotations
are on the ServiceAccount only with an IRSA role (KServe ignores them there otherwise)."""

from __future__ import annotations

from pipelines.reasoning_ner_pipeline import SECRETS
from reasoning_ner.k8s.serving_identity import build_service_account

from .chart_tools import EXAMPLES, load_values, settings_for, template_objects, validate

TEMPLATE = "templates/serviceaccounts.yaml"
IRSA = "arn:aws:iam::123456789012:role/rner-serving"


def sas(values=None):
    return {o["metadata"]["name"]: o for o in template_objects(TEMPLATE, values)}


def test_serving_service_account_is_the_builders() -> None:
    for values in [None, *(load_values(p) for p in EXAMPLES),
                   {"serving": {"storage": {"s3Endpoint": None, "s3Region": None, "s3SecretName": None}}},
                   {"serving": {"storage": {"irsaRoleArn": IRSA, "s3SecretName": None}}},
                   {"images": {"pullSecrets": ["ghcr-pull"]}},
                   {"images": {"pullSecrets": ["ghcr-pull"]}, "serving": {"imagePullSecrets": []}},
                   {"serving": {"imagePullSecrets": ["serving-pull"], "storage": {"irsaRoleArn": IRSA}}}]:
        got = sas(values)["reasoning-ner-serving"]
        assert got == build_service_account(settings_for(values)), values


def test_serving_service_account_names_the_s3_secret_and_carries_s3_annotations_only_with_irsa() -> None:
    sa = sas()["reasoning-ner-serving"]
    assert "annotations" not in sa["metadata"], "without IRSA KServe reads the s3-* annotations from the Secret"
    assert sa["secrets"] == [{"name": "reasoning-ner-s3"}]
    assert sa["automountServiceAccountToken"] is False
    irsa = sas({"serving": {"storage": {"irsaRoleArn": IRSA}}})["reasoning-ner-serving"]
    assert irsa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": IRSA,
                                               "serving.kserve.io/s3-endpoint": "minio.minio.svc.cluster.local:9000",
                                               "serving.kserve.io/s3-usehttps": "0",
                                               "serving.kserve.io/s3-region": "us-east-1",
                                               "serving.kserve.io/s3-verifyssl": "0"}


def test_every_service_account_that_pulls_an_image_lists_the_pull_secrets() -> None:
    got = sas({"images": {"pullSecrets": ["ghcr-pull"]}})
    assert sorted(got) == ["reasoning-ner-helm-test", "reasoning-ner-pipeline-runner", "reasoning-ner-registration",
                           "reasoning-ner-serving"]
    for name, sa in got.items():
        assert sa["imagePullSecrets"] == [{"name": "ghcr-pull"}], name
    assert all("imagePullSecrets" not in sa for sa in sas().values()), "none configured: none listed"
    own = sas({"images": {"pullSecrets": ["ghcr-pull"]}, "serving": {"imagePullSecrets": ["serving-pull"]}})
    assert own["reasoning-ner-serving"]["imagePullSecrets"] == [{"name": "serving-pull"}]
    assert own["reasoning-ner-pipeline-runner"]["imagePullSecrets"] == [{"name": "ghcr-pull"}]


def test_default_set_and_switches() -> None:
    assert sorted(sas()) == ["reasoning-ner-helm-test", "reasoning-ner-pipeline-runner", "reasoning-ner-registration",
                             "reasoning-ner-serving"]
    off = {"serving": {"storage": {"createServiceAccount": False}}, "tests": {"enabled": False},
           "serviceAccounts": {"pipelineRunner": {"create": False}, "registration": {"create": False}}}
    assert sas(off) == {}
    assert "reasoning-ner-registration" not in sas({"pipeline": {"register": {"enabled": False}}})


def test_pipeline_runner_lives_in_the_runs_namespace_and_names_the_pipelines_secrets() -> None:
    assert sas()["reasoning-ner-pipeline-runner"]["metadata"]["namespace"] == "kubeflow", "standalone KFP by default"
    profile = sas({"kfp": {"multiUser": True, "namespace": "team-nlp"}})["reasoning-ner-pipeline-runner"]
    assert profile["metadata"]["namespace"] == "team-nlp"
    sa = sas({"kfp": {"namespace": "kubeflow"}, "serviceAccounts": {"pipelineRunner": {
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/rner"}}}})["reasoning-ner-pipeline-runner"]
    assert sa["metadata"]["namespace"] == "kubeflow"
    assert [s["name"] for s in sa["secrets"]] == [SECRETS[k][0] for k in ("git", "s3", "teacher", "hf")]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/rner")


def test_custom_names() -> None:
    got = sas({"serviceAccounts": {"pipelineRunner": {"name": "runner"}, "registration": {"name": "registrar"}}})
    assert {"runner", "registrar"} <= set(got)


def test_registration_and_test_accounts_have_no_api_token() -> None:
    got = sas()
    for name in ("reasoning-ner-registration", "reasoning-ner-helm-test"):
        assert got[name]["automountServiceAccountToken"] is False


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE, {"images": {"pullSecrets": ["pull"]}})) == []
