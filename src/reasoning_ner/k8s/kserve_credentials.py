"""The S3 environment KServe's storage initializer gets, computed from a ServiceAccount and its Secrets.

A pure-Python copy of KServe's credential builder for S3, so tests (and ``rner preflight``) can tell
from the rendered or live objects where the storage initializer will download the model from,
without a cluster. Read from kserve/kserve at commit ``aaac4e294dae2c7b1aa1886447793f3aa1c30912``
(these files are unchanged since v0.20.0; KServe 0.21 is what the project runs):

* ``pkg/credentials/service_account_credentials.go``: ``CreateSecretVolumeAndEnvFromServiceAccount``
  and ``mountSecretCredential``; the storage-initializer injector
  (``pkg/webhook/admission/pod/storage_initializer_injector.go``) calls it with the predictor pod's
  ``serviceAccountName`` and the InferenceService's annotations;
* ``pkg/credentials/s3/s3_secret.go`` (``BuildSecretEnvs``), ``s3/s3_service_account.go``
  (``BuildServiceAccountEnvs``), ``s3/utils.go`` (``BuildS3EnvVars``, ``getEnvValue``,
  ``getEndpointConfiguration``), ``pkg/utils/utils.go`` (``MergeEnvs``);
* ``config/configmap/inferenceservice.yaml``: the ``credentials`` defaults (:data:`DEFAULT_S3_CONFIG`).

The rules, in KServe's order:

1. **ServiceAccount annotations count only with an IRSA role**: when the ServiceAccount carries
   ``eks.amazonaws.com/role-arn``, its ``serving.kserve.io/s3-*`` annotations become environment
   (no keys: the pod's web identity is the credential). Without that annotation they are ignored,
   so an endpoint annotated only on the ServiceAccount sends the storage initializer to AWS.
2. **The Secrets**: the InferenceService annotation ``serving.kserve.io/storageSecretName`` names the
   one Secret to use; otherwise every Secret in the ServiceAccount's ``secrets`` list, in order. A
   listed Secret that does not exist fails the pod's admission.
3. A Secret is an S3 Secret only when its data has the key ``s3SecretAccessKeyName``
   (``AWS_SECRET_ACCESS_KEY`` in the default config; other kinds, GCS, Azure, ..., are not modelled
   here and contribute nothing). It gives ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` as
   ``secretKeyRef`` to the configured key names, then the settings below.
4. Each setting comes from the object's annotation if present (even empty), else (Secrets only) from
   a data key of the variable's name, else from the config; it is emitted only when non-empty:
   endpoint (``s3-endpoint`` / ``S3_ENDPOINT``: an ``http(s)://`` prefix decides https, otherwise
   ``s3-usehttps`` / ``S3_USE_HTTPS`` does, https unless it is ``"0"``; gives ``S3_USE_HTTPS``,
   ``S3_ENDPOINT``, ``AWS_ENDPOINT_URL``), ``s3-verifyssl`` -> ``S3_VERIFY_SSL``,
   ``s3-useanoncredential`` -> ``awsAnonymousCredential``, ``s3-region`` -> ``AWS_DEFAULT_REGION``,
   ``s3-usevirtualbucket`` -> ``S3_USER_VIRTUAL_BUCKET``, ``s3-useaccelerate`` -> ``S3_USE_ACCELERATE``,
   ``s3-cabundle`` -> ``AWS_CA_BUNDLE``, ``s3-cabundle-configmap`` -> ``AWS_CA_BUNDLE_CONFIGMAP``.
   ``s3-usehttps`` is only read when an endpoint is set.
5. Secret variables are merged over the ServiceAccount's (``MergeEnvs``: a name already present
   gets the new ``value``, new names are appended), so a Secret's annotations win over IRSA's.

:func:`credential_env` returns the container env list exactly as KServe writes it;
:func:`storage_initializer_env` resolves it the way the kubelet does (``secretKeyRef`` -> the
decoded value), i.e. the process environment of the storage initializer.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Mapping

IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
STORAGE_SECRET_NAME_ANNOTATION = "serving.kserve.io/storageSecretName"
ANNOTATION_PREFIX = "serving.kserve.io/"

# Variable names (s3_secret.go).
AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
S3_ENDPOINT = "S3_ENDPOINT"
S3_USE_HTTPS = "S3_USE_HTTPS"
S3_VERIFY_SSL = "S3_VERIFY_SSL"

#: (annotation suffix, variable / Secret data key, S3Config field) in BuildS3EnvVars' order; the
#: endpoint (with s3-usehttps) comes first and is handled separately.
_SETTINGS = (
    ("s3-verifyssl", S3_VERIFY_SSL, "s3_verify_ssl"),
    ("s3-useanoncredential", "awsAnonymousCredential", "s3_use_anonymous_credential"),
    ("s3-region", AWS_DEFAULT_REGION, "s3_region"),
    ("s3-usevirtualbucket", "S3_USER_VIRTUAL_BUCKET", "s3_use_virtual_bucket"),  # sic: KServe's name
    ("s3-useaccelerate", "S3_USE_ACCELERATE", "s3_use_accelerate"),
    ("s3-cabundle", "AWS_CA_BUNDLE", "s3_ca_bundle"),
    ("s3-cabundle-configmap", "AWS_CA_BUNDLE_CONFIGMAP", "s3_ca_bundle_config_map"),
)


class CredentialError(ValueError):
    """The storage initializer pod would not start (admission or kubelet refuses it); says why."""


@dataclass(frozen=True)
class S3Config:
    """``credentials.s3`` of KServe's ``inferenceservice-config`` ConfigMap (empty = unset)."""

    s3_access_key_id_name: str = ""
    s3_secret_access_key_name: str = ""
    s3_endpoint: str = ""
    s3_use_https: str = ""
    s3_region: str = ""
    s3_verify_ssl: str = ""
    s3_use_virtual_bucket: str = ""
    s3_use_accelerate: str = ""
    s3_use_anonymous_credential: str = ""
    s3_ca_bundle_config_map: str = ""
    s3_ca_bundle: str = ""

    @property
    def access_key_id_name(self) -> str:
        return self.s3_access_key_id_name or "awsAccessKeyID"  # the Go default when the config is empty

    @property
    def secret_access_key_name(self) -> str:
        return self.s3_secret_access_key_name or "awsSecretAccessKey"


#: What a default KServe install configures (config/configmap/inferenceservice.yaml).
DEFAULT_S3_CONFIG = S3Config(s3_access_key_id_name=AWS_ACCESS_KEY_ID, s3_secret_access_key_name=AWS_SECRET_ACCESS_KEY)


def secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data as the API server stores it: base64 ``data`` decoded, ``stringData`` merged over it."""
    out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    out.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return out


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _value(annotations: Mapping[str, str], data: Mapping[str, str] | None, suffix: str, data_key: str,
           default: str) -> str:
    """getEnvValue: the annotation if present (even empty), else the Secret data key, else the config."""
    key = ANNOTATION_PREFIX + suffix
    if key in annotations:
        return annotations[key]
    if data is not None and data_key in data:
        return data[data_key]
    return default


def s3_env_vars(annotations: Mapping[str, str], data: Mapping[str, str] | None,
                config: S3Config = DEFAULT_S3_CONFIG) -> list[dict[str, Any]]:
    """BuildS3EnvVars: the settings of one object (ServiceAccount: ``data=None``; Secret: its data)."""
    env: list[dict[str, Any]] = []
    endpoint = _value(annotations, data, "s3-endpoint", S3_ENDPOINT, config.s3_endpoint)
    if endpoint:
        endpoint = endpoint.strip()
        lower = endpoint.lower()
        if lower.startswith("https://"):
            use_https, host, url = "1", endpoint[8:], endpoint
        elif lower.startswith("http://"):
            use_https, host, url = "0", endpoint[7:], endpoint
        else:
            use_https = _value(annotations, data, "s3-usehttps", S3_USE_HTTPS, config.s3_use_https)
            host = endpoint
            url = ("http://" if use_https == "0" else "https://") + endpoint  # https unless explicitly "0"
        if use_https:
            env.append({"name": S3_USE_HTTPS, "value": use_https})
        env.append({"name": S3_ENDPOINT, "value": host})
        env.append({"name": AWS_ENDPOINT_URL, "value": url})
    for suffix, name, field in _SETTINGS:
        value = _value(annotations, data, suffix, name, getattr(config, field))
        if value:
            env.append({"name": name, "value": value})
    return env


def _merge(base: list[dict[str, Any]], overrides: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MergeEnvs: an existing name gets the override's ``value`` (its ``valueFrom`` stays), new names are appended."""
    base = [dict(e) for e in base]
    extra = []
    for override in overrides:
        for entry in base:
            if entry["name"] == override["name"]:
                entry["value"] = override.get("value", "")
                break
        else:
            extra.append(override)
    return base + extra


def _secret_envs(name: str, secret: Mapping[str, Any], config: S3Config) -> list[dict[str, Any]]:
    """BuildSecretEnvs: the keys as secretKeyRef, then the Secret's own settings."""
    keys = [{"name": env_name, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
            for env_name, key in ((AWS_ACCESS_KEY_ID, config.access_key_id_name),
                                  (AWS_SECRET_ACCESS_KEY, config.secret_access_key_name))]
    return keys + s3_env_vars(_annotations(secret), secret_data(secret), config)


def credential_env(service_account: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any]], *,
                   config: S3Config = DEFAULT_S3_CONFIG,
                   isvc_annotations: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The S3 env entries KServe appends to the storage-initializer container.

    ``secrets`` maps Secret name -> Secret object (the ServiceAccount's namespace). Raises
    :class:`CredentialError` where KServe's webhook fails the pod (a named Secret is missing).
    """
    env: list[dict[str, Any]] = []
    if IRSA_ANNOTATION in _annotations(service_account):
        env += s3_env_vars(_annotations(service_account), None, config)
    override = (isvc_annotations or {}).get(STORAGE_SECRET_NAME_ANNOTATION)
    names = [override] if override is not None else [ref.get("name", "") for ref in service_account.get("secrets") or []]
    for name in names:
        secret = secrets.get(name)
        if secret is None:
            sa = (service_account.get("metadata") or {}).get("name", "")
            raise CredentialError(f"Secret {name!r} (listed by ServiceAccount {sa!r}) does not exist: KServe's webhook "
                                  "refuses the predictor pod")
        if config.secret_access_key_name in secret_data(secret):
            env = _merge(env, _secret_envs(name, secret, config))
    return env


def resolve_env(env: list[dict[str, Any]], secrets: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """What the kubelet makes of ``env``: values as is, ``secretKeyRef`` -> the Secret's decoded value."""
    out: dict[str, str] = {}
    for entry in env:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            out[entry["name"]] = entry.get("value", "")
            continue
        if "value" in entry:  # MergeEnvs can produce this with two S3 Secrets; the API server refuses it
            raise CredentialError(f"env {entry['name']} has both value and valueFrom: the pod is invalid")
        data = secret_data(secrets.get(ref["name"]) or {})
        if ref["key"] not in data:
            raise CredentialError(f"Secret {ref['name']!r} has no key {ref['key']!r} for {entry['name']}: the "
                                  "kubelet cannot start the storage initializer (CreateContainerConfigError)")
        out[entry["name"]] = data[ref["key"]]
    return out


def storage_initializer_env(service_account: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any]], *,
                            config: S3Config = DEFAULT_S3_CONFIG,
                            isvc_annotations: Mapping[str, str] | None = None) -> dict[str, str]:
    """The storage initializer's S3 environment, secret values decoded (see the module docstring)."""
    env = credential_env(service_account, secrets, config=config, isvc_annotations=isvc_annotations)
    return resolve_env(env, secrets)
