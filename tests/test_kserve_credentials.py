"""reasoning_ner.k8s.kserve_credentials: KServe's S3 credential rules, on the cases of KServe's own tests.

The expectations are copied from kserve/kserve (commit aaac4e294dae2c7b1aa1886447793f3aa1c30912):
``pkg/credentials/service_account_credentials_test.go`` (TestS3CredentialBuilder,
TestS3ServiceAccountCredentialBuilder, with its test ConfigMap), ``pkg/credentials/s3/s3_secret_test.go``
(TestS3Secret) and ``s3/utils_test.go``; the chart-level use is in tests/helm/test_secret_s3.py.
"""

from __future__ import annotations

import base64

import pytest

from reasoning_ner.k8s.kserve_credentials import (
    DEFAULT_S3_CONFIG,
    CredentialError,
    S3Config,
    credential_env,
    resolve_env,
    s3_env_vars,
    secret_data,
    storage_initializer_env,
)

#: The ConfigMap of service_account_credentials_test.go.
UPSTREAM_TEST_CONFIG = S3Config(s3_access_key_id_name="awsAccessKeyID", s3_secret_access_key_name="awsSecretAccessKey",
                                s3_endpoint="s3.amazonaws.com", s3_use_https="1", s3_region="us-east-2",
                                s3_verify_ssl="1", s3_use_anonymous_credential="false")
IRSA = "arn:aws:iam::123456789012:role/s3access"
EP = "serving.kserve.io/s3-endpoint"


def sa(name: str = "default", secrets: tuple[str, ...] = (), annotations: dict[str, str] | None = None) -> dict:
    out: dict = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": "default"}}
    if annotations:
        out["metadata"]["annotations"] = annotations
    if secrets:
        out["secrets"] = [{"name": s, "namespace": "default"} for s in secrets]
    return out


def secret(name: str, annotations: dict[str, str] | None = None, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "annotations": annotations or {}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def ref(env: str, name: str, key: str) -> dict:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def val(name: str, value: str) -> dict:
    return {"name": name, "value": value}


def test_build_s3_secrets_envs() -> None:
    """TestS3CredentialBuilder "Build s3 secrets envs": the endpoint from the Secret's annotation,
    everything else from the config."""
    s = secret("s3-secret", {EP: "s3.aws.com"}, awsAccessKeyID="", awsSecretAccessKey="")
    env = credential_env(sa(secrets=("s3-secret",)), {"s3-secret": s}, config=UPSTREAM_TEST_CONFIG)
    assert env == [ref("AWS_ACCESS_KEY_ID", "s3-secret", "awsAccessKeyID"),
                   ref("AWS_SECRET_ACCESS_KEY", "s3-secret", "awsSecretAccessKey"),
                   val("S3_USE_HTTPS", "1"), val("S3_ENDPOINT", "s3.aws.com"), val("AWS_ENDPOINT_URL", "https://s3.aws.com"),
                   val("S3_VERIFY_SSL", "1"), val("awsAnonymousCredential", "false"), val("AWS_DEFAULT_REGION", "us-east-2")]


def test_build_s3_secrets_envs_with_protocol() -> None:
    """"Build s3 secrets envs with protocol": http:// in the endpoint decides https (0), verifyssl 0."""
    s = secret("s3-secret-with-protocol", {EP: "http://s3.aws.com", "serving.kserve.io/s3-verifyssl": "0"},
               awsAccessKeyID="", awsSecretAccessKey="")
    env = credential_env(sa("default-with-protocol", ("s3-secret-with-protocol",)), {"s3-secret-with-protocol": s},
                         config=UPSTREAM_TEST_CONFIG)
    assert env[2:] == [val("S3_USE_HTTPS", "0"), val("S3_ENDPOINT", "s3.aws.com"), val("AWS_ENDPOINT_URL", "http://s3.aws.com"),
                       val("S3_VERIFY_SSL", "0"), val("awsAnonymousCredential", "false"), val("AWS_DEFAULT_REGION", "us-east-2")]


def test_build_s3_service_account_envs_with_irsa() -> None:
    """TestS3ServiceAccountCredentialBuilder: with the IRSA role the ServiceAccount's annotations count."""
    account = sa(annotations={EP: "s3.aws.com", "serving.kserve.io/s3-useanoncredential": "true",
                              "eks.amazonaws.com/role-arn": IRSA})
    assert credential_env(account, {}, config=UPSTREAM_TEST_CONFIG) == [
        val("S3_USE_HTTPS", "1"), val("S3_ENDPOINT", "s3.aws.com"), val("AWS_ENDPOINT_URL", "https://s3.aws.com"),
        val("S3_VERIFY_SSL", "1"), val("awsAnonymousCredential", "true"), val("AWS_DEFAULT_REGION", "us-east-2")]
    with_protocol = sa(annotations={EP: "http://s3.aws.com", "serving.kserve.io/s3-useanoncredential": "true",
                                    "eks.amazonaws.com/role-arn": IRSA, "serving.kserve.io/s3-verifyssl": "0"})
    assert credential_env(with_protocol, {}, config=UPSTREAM_TEST_CONFIG)[:4] == [
        val("S3_USE_HTTPS", "0"), val("S3_ENDPOINT", "s3.aws.com"), val("AWS_ENDPOINT_URL", "http://s3.aws.com"),
        val("S3_VERIFY_SSL", "0")]


def test_service_account_annotations_without_irsa_are_ignored() -> None:
    """The chart's old layout: endpoint annotations on the ServiceAccount, none on the Secret. KServe
    gives the storage initializer the keys but no endpoint, so boto3 goes to AWS S3."""
    account = sa(secrets=("s3",), annotations={EP: "minio.minio.svc:9000", "serving.kserve.io/s3-usehttps": "0"})
    s = secret("s3", AWS_ACCESS_KEY_ID="minio", AWS_SECRET_ACCESS_KEY="minio123")
    env = storage_initializer_env(account, {"s3": s})
    assert env == {"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio123"}
    assert "AWS_ENDPOINT_URL" not in env and "S3_ENDPOINT" not in env
    # The same annotations on the Secret reach the storage initializer.
    annotated = secret("s3", {EP: "minio.minio.svc:9000", "serving.kserve.io/s3-usehttps": "0"},
                       AWS_ACCESS_KEY_ID="minio", AWS_SECRET_ACCESS_KEY="minio123")
    assert storage_initializer_env(sa(secrets=("s3",)), {"s3": annotated})["AWS_ENDPOINT_URL"] == "http://minio.minio.svc:9000"


def test_secret_annotations_win_over_irsa_ones() -> None:
    """MergeEnvs: the Secret's settings replace the ServiceAccount's values of the same name."""
    account = sa(secrets=("s3",), annotations={"eks.amazonaws.com/role-arn": IRSA, EP: "s3.us-west-2.amazonaws.com",
                                                "serving.kserve.io/s3-region": "us-west-2"})
    s = secret("s3", {EP: "http://minio:9000"}, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b")
    env = credential_env(account, {"s3": s})
    assert [e["name"] for e in env] == ["S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                                        "AWS_SECRET_ACCESS_KEY", "S3_USE_HTTPS"], "replaced in place, new ones appended"
    assert resolve_env(env, {"s3": s})["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert resolve_env(env, {"s3": s})["AWS_DEFAULT_REGION"] == "us-west-2", "the Secret sets no region: IRSA's stays"


def test_settings_from_secret_data_and_precedence() -> None:
    """s3_secret_test.go "S3SecretDataHttpsOverrideEnvs": S3_ENDPOINT / S3_USE_HTTPS / S3_VERIFY_SSL as
    data keys; an annotation (even empty) wins over the data, the data over the config."""
    data = {"S3_ENDPOINT": "s3.aws.com", "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0"}
    assert s3_env_vars({}, data, S3Config()) == [val("S3_USE_HTTPS", "0"), val("S3_ENDPOINT", "s3.aws.com"),
                                                 val("AWS_ENDPOINT_URL", "http://s3.aws.com"), val("S3_VERIFY_SSL", "0")]
    assert s3_env_vars({"serving.kserve.io/s3-verifyssl": ""}, data, S3Config(s3_verify_ssl="1"))[-1] == \
        val("AWS_ENDPOINT_URL", "http://s3.aws.com"), "an empty annotation suppresses the data and config value"
    assert s3_env_vars({"serving.kserve.io/s3-usehttps": "0"}, None, S3Config()) == [], "usehttps alone: no endpoint, nothing"
    # https unless explicitly "0": an unset usehttps gives an https URL but no S3_USE_HTTPS variable.
    assert s3_env_vars({EP: " minio:9000 "}, None, S3Config()) == [val("S3_ENDPOINT", "minio:9000"),
                                                                    val("AWS_ENDPOINT_URL", "https://minio:9000")]


def test_which_secrets_count() -> None:
    """Only a Secret with the configured secret-access-key key is S3; the ISVC annotation picks one Secret."""
    other = secret("gcs", **{"gcloud-application-credentials.json": "{}"})
    s3 = secret("s3", {EP: "minio:9000"}, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b")
    default_keys = secret("s3-default-keys", {EP: "minio:9000"}, awsAccessKeyID="a", awsSecretAccessKey="b")
    both = {"gcs": other, "s3": s3, "s3-default-keys": default_keys}
    assert credential_env(sa(secrets=("gcs",)), both) == []
    assert credential_env(sa(secrets=("s3-default-keys",)), both) == [], "the default install wants AWS_SECRET_ACCESS_KEY"
    assert credential_env(sa(secrets=("s3-default-keys",)), both, config=S3Config()) != [], "the Go default key names"
    picked = credential_env(sa(secrets=("gcs",)), both, isvc_annotations={"serving.kserve.io/storageSecretName": "s3"})
    assert picked[0] == ref("AWS_ACCESS_KEY_ID", "s3", "AWS_ACCESS_KEY_ID")
    assert DEFAULT_S3_CONFIG.access_key_id_name == "AWS_ACCESS_KEY_ID"


def test_what_stops_the_pod() -> None:
    with pytest.raises(CredentialError, match="Secret 'gone'.*does not exist"):
        credential_env(sa(secrets=("gone",)), {})
    half = secret("s3", AWS_SECRET_ACCESS_KEY="b")
    with pytest.raises(CredentialError, match="no key 'AWS_ACCESS_KEY_ID'.*CreateContainerConfigError"):
        storage_initializer_env(sa(secrets=("s3",)), {"s3": half})
    # Two S3 Secrets: MergeEnvs sets a value next to the first Secret's valueFrom, which the API refuses.
    a = secret("a", AWS_ACCESS_KEY_ID="1", AWS_SECRET_ACCESS_KEY="1")
    b = secret("b", AWS_ACCESS_KEY_ID="2", AWS_SECRET_ACCESS_KEY="2")
    with pytest.raises(CredentialError, match="both value and valueFrom"):
        storage_initializer_env(sa(secrets=("a", "b")), {"a": a, "b": b})


def test_string_data_is_merged_like_the_api_server() -> None:
    s = {"data": {"k": base64.b64encode(b"from-data").decode(), "x": base64.b64encode(b"1").decode()},
         "stringData": {"k": "from-stringData"}}
    assert secret_data(s) == {"k": "from-stringData", "x": "1"}
