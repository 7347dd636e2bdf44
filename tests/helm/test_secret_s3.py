"""templates/secret-s3.yaml and where KServe reads the S3 settings: rendered objects, KServe's rules, a real download.

The chart either creates the S3 Secret from values (``secrets.s3.create``, dev/MinIO) or names an
existing one; either way the ``serving.kserve.io/s3-*`` annotations must be on the Secret, because
KServe's credential builder reads them from a ServiceAccount only when it has an IRSA role. The
storage initializer's environment is derived from the rendered ServiceAccount and Secret with
:mod:`reasoning_ner.k8s.kserve_credentials` (KServe's rules, see tests/test_kserve_credentials.py),
and KServe's own storage code (``kserve-storage``, what the storage initializer runs) downloads the
rendered ``storageUri`` with exactly that environment from a real S3 API server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from reasoning_ner.k8s.serving_identity import build_s3_secret
from reasoning_ner.k8s.kserve_credentials import secret_data, storage_initializer_env

from .chart_tools import EXAMPLES, NAMESPACE, by_kind, load_values, one, render, settings_for, template_objects, validate

TEMPLATE = "templates/secret-s3.yaml"
KEYS = {"accessKeyId": "dev-access-key", "secretAccessKey": "dev-secret-key"}
CREATE = {"secrets": {"s3": {"create": True, **KEYS}}}
IRSA = "arn:aws:iam::123456789012:role/rner-serving"


def deep(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = deep(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def serving_objects(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """(the predictor's ServiceAccount, the Secrets of its namespace by name, the InferenceService)."""
    objs = render(values)
    isvc = one(objs, "InferenceService")
    sa = one(objs, "ServiceAccount", isvc["spec"]["predictor"]["serviceAccountName"])
    ns = isvc["metadata"]["namespace"]
    secrets = {o["metadata"]["name"]: o for o in by_kind(objs, "Secret") if o["metadata"]["namespace"] == ns}
    return sa, secrets, isvc


# ------------------------------------------------------------------------------------ the object


def test_not_created_by_default() -> None:
    assert template_objects(TEMPLATE) == []


def test_the_secret_is_the_builders_in_both_namespaces() -> None:
    for values in [None, *(load_values(p) for p in EXAMPLES), {"serving": {"storage": {"s3Region": None}}},
                   {"serving": {"storage": {"s3Endpoint": "https://s3.example.com", "s3UseHttps": False}}}]:
        merged = deep(values or {}, CREATE)
        docs = template_objects(TEMPLATE, merged)
        expected = build_s3_secret(settings_for(merged), KEYS["accessKeyId"], KEYS["secretAccessKey"])
        kfp_ns = merged.get("kfp", {}).get("namespace", "kubeflow")
        assert sorted(d["metadata"]["namespace"] for d in docs) == sorted({NAMESPACE, kfp_ns}), "serving + the runs'"
        for doc in docs:
            assert doc["metadata"]["name"] == expected["metadata"]["name"] == "reasoning-ner-s3"
            assert doc["metadata"]["annotations"] == expected["metadata"]["annotations"]
            assert secret_data(doc) == expected["stringData"]
    one_ns = template_objects(TEMPLATE, deep(CREATE, {"kfp": {"namespace": NAMESPACE}}))
    assert len(one_ns) == 1, "one copy when serving and the runs share a namespace"


def test_keys_and_what_the_pipeline_reads() -> None:
    (secret, _) = template_objects(TEMPLATE, CREATE)
    data = secret_data(secret)
    assert data == {"AWS_ACCESS_KEY_ID": "dev-access-key", "AWS_SECRET_ACCESS_KEY": "dev-secret-key",
                    "AWS_ENDPOINT_URL": "http://minio.minio.svc.cluster.local:9000", "AWS_DEFAULT_REGION": "us-east-1"}
    assert all(base64.b64decode(v) for v in secret["data"].values()), "data, base64 encoded"
    custom = template_objects(TEMPLATE, deep(CREATE, {"serving": {"storage": {
        "s3AccessKeyIdKey": "accesskey", "s3SecretAccessKeyKey": "secretkey"}}}))[0]
    assert {"accesskey", "secretkey"} <= set(secret_data(custom))


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE, CREATE)) == []


# ------------------------------------------------------------------------------------ KServe's rules


def test_the_storage_initializer_gets_the_configured_endpoint_not_aws() -> None:
    sa, secrets, _ = serving_objects(CREATE)
    env = storage_initializer_env(sa, secrets)
    assert env == {"AWS_ACCESS_KEY_ID": "dev-access-key", "AWS_SECRET_ACCESS_KEY": "dev-secret-key",
                   "S3_USE_HTTPS": "0", "S3_ENDPOINT": "minio.minio.svc.cluster.local:9000",
                   "AWS_ENDPOINT_URL": "http://minio.minio.svc.cluster.local:9000", "S3_VERIFY_SSL": "0",
                   "AWS_DEFAULT_REGION": "us-east-1"}


def test_an_existing_secret_annotated_as_documented_gives_the_same_environment() -> None:
    """Production: the Secret exists (secrets.s3.create false); the user annotates it as docs/helm.md says."""
    sa, _, _ = serving_objects({})
    own = build_s3_secret(settings_for({}), "dev-access-key", "dev-secret-key")
    created_sa, created, _ = serving_objects(CREATE)
    assert storage_initializer_env(sa, {own["metadata"]["name"]: own}) == storage_initializer_env(created_sa, created)


def test_annotations_only_on_the_service_account_without_irsa_give_no_endpoint() -> None:
    """The chart's former layout (KServe upstream: BuildServiceAccountEnvs runs only with the IRSA
    annotation): the storage initializer gets the keys and no endpoint, i.e. AWS S3."""
    sa, secrets, _ = serving_objects(CREATE)
    sa = copy.deepcopy(sa)
    secret = copy.deepcopy(secrets["reasoning-ner-s3"])
    sa["metadata"]["annotations"], secret["metadata"]["annotations"] = secret["metadata"]["annotations"], {}
    env = storage_initializer_env(sa, {"reasoning-ner-s3": secret})
    assert not {"AWS_ENDPOINT_URL", "S3_ENDPOINT", "S3_USE_HTTPS", "S3_VERIFY_SSL"} & set(env), env
    assert env["AWS_ACCESS_KEY_ID"] == "dev-access-key", "the keys still come (and are sent to AWS)"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1", "KServe falls back to the Secret's AWS_DEFAULT_REGION data key"


def test_irsa_without_a_secret_reads_the_service_accounts_annotations() -> None:
    values = {"serving": {"storage": {"irsaRoleArn": IRSA, "s3SecretName": None}}}
    sa, secrets, _ = serving_objects(values)
    assert secrets == {} and sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == IRSA
    env = storage_initializer_env(sa, secrets)
    assert env["AWS_ENDPOINT_URL"] == "http://minio.minio.svc.cluster.local:9000"
    assert "AWS_ACCESS_KEY_ID" not in env, "the web identity is the credential"


# ------------------------------------------------------------------------------------ a real download


def test_kserve_storage_downloads_the_rendered_storage_uri_from_the_rendered_endpoint(s3_server, tmp_path: Path) -> None:
    bucket = s3_server.bucket("models")
    files = {"config.json": b'{"model_type": "tiny"}', "tokenizer/vocab.txt": b"[PAD]\nObama\n"}
    for key, body in files.items():
        s3_server.client().put_object(Bucket=bucket, Key=f"reasoning-ner/v7/{key}", Body=body)
    values = {"serving": {"storage": {"storageUri": f"s3://{bucket}/reasoning-ner/v7", "s3Endpoint": s3_server.host_port,
                                      "s3UseHttps": False, "s3VerifySsl": False, "s3Region": "us-east-1"}},
              "secrets": {"s3": {"create": True, "accessKeyId": s3_server.access_key_id,
                                 "secretAccessKey": s3_server.secret_access_key}}}
    sa, secrets, isvc = serving_objects(values)
    env = storage_initializer_env(sa, secrets)
    assert env["AWS_ENDPOINT_URL"] == s3_server.endpoint_url
    # The storage initializer's process: only what KServe injects (no credentials of this process).
    out = tmp_path / "mnt-models"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from kserve_storage import Storage; Storage.download(sys.argv[1], sys.argv[2])",
         isvc["spec"]["predictor"]["model"]["storageUri"], str(out)],
        env={**env, "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true",
             "S3_MAX_ATTEMPTS": "1"},
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
