"""The predictor's identity towards model storage: its ServiceAccount and the S3 Secret it names.

KServe's storage initializer reads the ``serving.kserve.io/s3-*`` annotations from the Secret, and
from the ServiceAccount only with an IRSA role (the rules: :mod:`reasoning_ner.k8s.kserve_credentials`).
Plain dicts from :class:`ServingSettings`, like the rest of :mod:`reasoning_ner.k8s.inference_service`.
"""

from __future__ import annotations

from typing import Any

from ..config.serving import ServingSettings, ServingSettingsError
from .kserve_credentials import IRSA_ANNOTATION
from .pod_parts import object_metadata

S3_ANNOTATION_PREFIX = "serving.kserve.io/s3-"


def s3_annotations(s: ServingSettings) -> dict[str, str]:
    st = s.storage
    out: dict[str, str] = {}
    if st.s3_endpoint:
        out[S3_ANNOTATION_PREFIX + "endpoint"] = st.s3_endpoint
    out[S3_ANNOTATION_PREFIX + "usehttps"] = "1" if st.s3_use_https else "0"
    if st.s3_region:
        out[S3_ANNOTATION_PREFIX + "region"] = st.s3_region
    out[S3_ANNOTATION_PREFIX + "verifyssl"] = "1" if st.s3_verify_ssl else "0"
    return out


def s3_endpoint_url(s: ServingSettings) -> str | None:
    """The endpoint as a URL (what botocore's AWS_ENDPOINT_URL wants), built as KServe builds it."""
    st = s.storage
    if not st.s3_endpoint:
        return None
    if st.s3_endpoint.lower().startswith(("http://", "https://")):
        return st.s3_endpoint
    return f"{'https' if st.s3_use_https else 'http'}://{st.s3_endpoint}"


def build_service_account(s: ServingSettings) -> dict[str, Any]:
    """The predictor's service account: names the S3 Secret, lists the pull Secrets; no API token.

    The S3 annotations go here only with an IRSA role: KServe ignores them on a ServiceAccount without
    ``eks.amazonaws.com/role-arn`` and reads them from the Secret (:func:`build_s3_secret`).
    """
    st = s.storage
    annotations = {IRSA_ANNOTATION: st.irsa_role_arn, **s3_annotations(s)} if st.irsa_role_arn else None
    sa: dict[str, Any] = {"apiVersion": "v1", "kind": "ServiceAccount",
                          "metadata": object_metadata(s, st.service_account_name, "serving-identity", annotations)}
    if st.s3_secret_name:
        sa["secrets"] = [{"name": st.s3_secret_name}]
    if s.image_pull_secrets:
        sa["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
    sa["automountServiceAccountToken"] = False
    return sa


def s3_secret_data(s: ServingSettings, access_key_id: str = "", secret_access_key: str = "") -> dict[str, str]:
    """The S3 Secret's keys: the two KServe reads (key names from the settings) plus what the pipeline's
    steps read as environment (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``; botocore, s3fs, dvc-s3)."""
    st = s.storage
    data = {st.s3_access_key_id_key: access_key_id, st.s3_secret_access_key_key: secret_access_key}
    url = s3_endpoint_url(s)
    if url:
        data["AWS_ENDPOINT_URL"] = url
    if st.s3_region:
        data["AWS_DEFAULT_REGION"] = st.s3_region
    return data


def build_s3_secret(s: ServingSettings, access_key_id: str = "", secret_access_key: str = "") -> dict[str, Any]:
    """The S3 Secret with the ``serving.kserve.io/s3-*`` annotations KServe's storage initializer reads."""
    if not s.storage.s3_secret_name:
        raise ServingSettingsError("storage.s3_secret_name is empty: there is no S3 Secret to describe")
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": object_metadata(s, s.storage.s3_secret_name, "serving-identity", s3_annotations(s)),
            "type": "Opaque",
            "stringData": s3_secret_data(s, access_key_id, secret_access_key)}


def build_s3_secret_placeholder(s: ServingSettings) -> dict[str, Any]:
    """The Secret's shape with empty keys: a template to fill out of band, never applied as is."""
    return build_s3_secret(s)
