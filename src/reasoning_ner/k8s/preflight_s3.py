"""The preflight rows of the S3 side: the Secrets KServe and the pipeline read, and S3 reachability.

S3 is read with botocore using the environment KServe's storage initializer gets
(:func:`.kserve_credentials.storage_initializer_env` on the live ServiceAccount and its Secrets), so the
registry, DVC remote and served model are checked with the credentials and endpoint the pods use.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from .kserve_credentials import AWS_ENDPOINT_URL, IRSA_ANNOTATION, S3Config, secret_data, storage_initializer_env
from .preflight_base import PreflightBase, SkipRow, annotations_of, is_cluster_internal
from .preflight_target import PIPELINE_S3_KEYS, S3_ENDPOINT_ANNOTATION


def _split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return parts.netloc, parts.path.lstrip("/")


class S3Rows(PreflightBase):
    """The rows s3-secret, pipeline-s3-secret, served-model, registry and dvc-remote, and their S3 client."""

    # ------------------------------------------------------------- Secrets
    def _secret_fix(self, ns: str, name: str, keys: Iterable[str]) -> str:
        literals = " ".join(f"--from-literal={k}=..." for k in keys)
        return (f"kubectl -n {ns} create secret generic {name} {literals} --dry-run=client -o yaml | kubectl apply -f -")

    def _annotate_fix(self) -> str:
        t = self.t
        parts = []
        if t.s3_endpoint:
            parts.append(f"{S3_ENDPOINT_ANNOTATION}={t.s3_endpoint}")
        parts.append(f"serving.kserve.io/s3-usehttps={'1' if t.s3_use_https else '0'}")
        if t.s3_region:
            parts.append(f"serving.kserve.io/s3-region={t.s3_region}")
        return f"kubectl -n {t.serving_namespace} annotate secret {t.s3_secret} --overwrite " + " ".join(parts)

    def _storage_env(self) -> dict[str, str]:
        """The storage initializer's S3 environment from the live ServiceAccount and its Secrets (KServe's rules)."""
        if self._s3_env is not None:
            return self._s3_env
        t = self.t
        sa = self._serving_sa()
        if sa is None:
            raise SkipRow(f"ServiceAccount {t.serving_namespace}/{t.serving_service_account} does not exist (see its row)")
        secrets: dict[str, Any] = {}
        for ref in sa.get("secrets") or []:
            name = ref.get("name", "")
            obj = self._maybe(f"/api/v1/namespaces/{t.serving_namespace}/secrets/{name}")
            if obj is not None:
                secrets[name] = obj
        config = S3Config(s3_access_key_id_name=t.s3_access_key_id_key, s3_secret_access_key_name=t.s3_secret_access_key_key)
        self._s3_env = storage_initializer_env(sa, secrets, config=config)
        return self._s3_env

    def row_s3_secret(self) -> tuple:
        t = self.t
        if not t.s3_secret:
            raise SkipRow("no S3 Secret configured (serving.storage.s3SecretName is null: IRSA / workload identity)")
        ref = f"{t.serving_namespace}/{t.s3_secret}"
        secret = self._maybe(f"/api/v1/namespaces/{t.serving_namespace}/secrets/{t.s3_secret}")
        keys = (t.s3_access_key_id_key, t.s3_secret_access_key_key)
        if secret is None:
            return ("fail", f"Secret {ref} does not exist",
                    self._secret_fix(t.serving_namespace, t.s3_secret, keys) + " ; then " + self._annotate_fix())
        data = secret_data(secret)
        missing = [k for k in keys if not data.get(k)]
        if missing:
            return ("fail", f"Secret {ref} lacks the key(s) {', '.join(missing)} KServe reads "
                            "(serving.storage.s3AccessKeyIdKey / s3SecretAccessKeyKey)",
                    self._secret_fix(t.serving_namespace, t.s3_secret, keys))
        env = self._storage_env()  # what KServe derives from the live ServiceAccount and its Secrets
        got_url, got_region = env.get(AWS_ENDPOINT_URL), env.get("AWS_DEFAULT_REGION")
        problems = []
        if t.s3_endpoint:
            want_url = t.s3_endpoint if "://" in t.s3_endpoint else \
                ("https://" if t.s3_use_https else "http://") + t.s3_endpoint
            if got_url is None:
                problems.append(f"KServe derives no S3 endpoint from it, so the storage initializer goes to AWS S3, not "
                                f"{want_url}: the {S3_ENDPOINT_ANNOTATION} annotation must be on the Secret (KServe "
                                f"reads the ServiceAccount's annotations only with an {IRSA_ANNOTATION} role)")
            elif got_url.rstrip("/") != want_url.rstrip("/"):
                problems.append(f"the storage initializer gets AWS_ENDPOINT_URL={got_url} but serving.storage.s3Endpoint/"
                                f"s3UseHttps say {want_url} (KServe: https unless serving.kserve.io/s3-usehttps is \"0\")")
        if t.s3_region and got_region and got_region != t.s3_region:
            problems.append(f"the storage initializer gets region {got_region} but serving.storage.s3Region is {t.s3_region}")
        if problems:
            return "fail", f"Secret {ref}: " + "; ".join(problems), self._annotate_fix()
        where = got_url or "AWS S3 (no endpoint annotation)"
        return "ok", (f"{ref} has {', '.join(keys)}; the storage initializer gets {where}"
                      + (f", region {got_region}" if got_region else ""))

    def row_pipeline_s3_secret(self) -> tuple:
        t = self.t
        if not t.pipeline_s3_secret:
            raise SkipRow("no pipeline S3 Secret configured (secrets.s3.name)")
        ref = f"{t.kfp_namespace}/{t.pipeline_s3_secret}"
        secret = self._maybe(f"/api/v1/namespaces/{t.kfp_namespace}/secrets/{t.pipeline_s3_secret}")
        needed = PIPELINE_S3_KEYS if t.s3_endpoint else PIPELINE_S3_KEYS[:2]
        if secret is None:
            return ("fail", f"Secret {ref} does not exist: the pipeline's steps attach it as optional environment, so "
                            "fetch and promote would run without S3 credentials",
                    self._secret_fix(t.kfp_namespace, t.pipeline_s3_secret, needed))
        data = secret_data(secret)
        missing = [k for k in needed if not data.get(k)]
        if missing:
            why = " (the steps' S3 endpoint: http(s)://host:port)" if "AWS_ENDPOINT_URL" in missing else ""
            return ("fail", f"Secret {ref} lacks {', '.join(missing)}{why}",
                    self._secret_fix(t.kfp_namespace, t.pipeline_s3_secret, needed))
        return "ok", f"{ref} has {', '.join(k for k in PIPELINE_S3_KEYS if data.get(k))}"

    # ------------------------------------------------------------- S3
    def _s3_client(self, env: Mapping[str, str]) -> Any:
        """A botocore S3 client configured as kserve-storage configures its own (Storage._get_s3_client_kwargs)."""
        import botocore.session
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(connect_timeout=self.s3_timeout_s, read_timeout=self.s3_timeout_s * 2,
                        retries={"max_attempts": 1, "mode": "standard"})
        if env.get("awsAnonymousCredential", "").lower() == "true":
            config = config.merge(Config(signature_version=UNSIGNED))
        if env.get("S3_USER_VIRTUAL_BUCKET", "").lower() == "true":
            config = config.merge(Config(s3={"addressing_style": "virtual"}))
        region = env.get("AWS_DEFAULT_REGION") or "us-east-1"
        endpoint = self.t.s3_endpoint_override or env.get(AWS_ENDPOINT_URL) or f"https://s3.{region}.amazonaws.com"
        verify = env.get("S3_VERIFY_SSL", "").lower() not in ("0", "false")
        if self._s3 is None:  # one client for the three S3 rows (creating one loads botocore's models)
            self._s3 = botocore.session.Session().create_client(
                "s3", region_name=region, endpoint_url=endpoint, verify=verify, config=config,
                aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"))
        return self._s3

    def _s3_identity(self) -> dict[str, str]:
        t = self.t
        env = self._storage_env()
        if not env.get("AWS_ACCESS_KEY_ID") and env.get("awsAnonymousCredential", "").lower() != "true":
            sa = self._serving_sa() or {}
            if IRSA_ANNOTATION in annotations_of(sa):
                raise SkipRow(f"IRSA ({annotations_of(sa)[IRSA_ANNOTATION]}): the credentials are a web identity only the "
                               "serving pods get; `helm test` checks this from a pod")
            raise SkipRow(f"no S3 keys: ServiceAccount {t.serving_namespace}/{t.serving_service_account} lists no readable "
                           f"Secret with {t.s3_secret_access_key_key} (see the S3 Secret rows)")
        endpoint = self.t.s3_endpoint_override or env.get(AWS_ENDPOINT_URL)
        if endpoint and not self.in_cluster and is_cluster_internal(urlsplit(endpoint).netloc or endpoint):
            raise SkipRow(f"skipped: the S3 endpoint {endpoint} is a cluster-internal name; run this in the cluster "
                           "(`helm test`), or port-forward it and pass --s3-endpoint http://localhost:<port>")
        return env

    def _s3_check(self, uri: str, setting: str, must_have_objects: bool = False) -> tuple:
        t = self.t
        if not uri.startswith("s3://"):
            return ("fail", f"{uri!r} is not s3://: {'a pod cannot reach a local path' if '://' not in uri else 'only s3:// is served'}"
                            f" (the deploy step hands KServe s3:// URIs read with the chart's S3 Secret)",
                    f"set {setting} to s3://<bucket>/<prefix>")
        bucket, prefix = _split_s3(uri)
        env = self._s3_identity()
        endpoint = t.s3_endpoint_override or env.get(AWS_ENDPOINT_URL) or "AWS S3"
        secret_ref = f"Secret {t.serving_namespace}/{t.s3_secret}" if t.s3_secret else "the ServiceAccount's S3 Secret"
        import botocore.exceptions as bx

        try:
            answer = self._s3_client(env).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.SSLError,
                bx.ConnectionClosedError) as exc:
            source = (f"--s3-endpoint {t.s3_endpoint_override}" if t.s3_endpoint_override else
                      f"the {S3_ENDPOINT_ANNOTATION} annotation of {secret_ref}" if env.get(AWS_ENDPOINT_URL) else
                      f"AWS S3 ({secret_ref} has no {S3_ENDPOINT_ANNOTATION} annotation)")
            return ("fail", f"cannot reach {endpoint} (from {source}): {exc}",
                    self._annotate_fix() if t.s3_secret else "set the S3 endpoint annotation")
        except bx.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket", "404") or status == 404:
                return ("fail", f"bucket {bucket!r} does not exist at {endpoint} ({setting} = {uri})",
                        f"create it: aws --endpoint-url {endpoint} s3 mb s3://{bucket} (MinIO: mc mb <alias>/{bucket}), "
                        f"or set {setting}")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                        "ExpiredToken") or status == 403:
                return ("fail", f"{endpoint} refused the keys of {secret_ref} for bucket {bucket!r} ({code}): the keys "
                                f"are wrong or lack s3:ListBucket there",
                        self._secret_fix(t.serving_namespace, t.s3_secret or "<secret>",
                                         (t.s3_access_key_id_key, t.s3_secret_access_key_key)))
            if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
                return ("fail", f"bucket {bucket!r} is in another region than {env.get('AWS_DEFAULT_REGION')!r} ({code})",
                        self._annotate_fix() + " (with the bucket's region)")
            return "fail", f"{uri}: {code or status}: {exc}"
        except bx.BotoCoreError as exc:
            return "fail", f"{uri}: {type(exc).__name__}: {exc}"
        if answer.get("KeyCount", 0) == 0:
            if must_have_objects:
                return ("warn", f"bucket {bucket!r} is reachable with {secret_ref}, but nothing is at {uri} yet: the "
                                "predictor fails until a model is promoted there",
                        "run the pipeline (its deploy step sets the champion), or `rner promote` and point "
                        "serving.storage.storageUri at the copy")
            return "ok", f"bucket {bucket!r} reachable at {endpoint} with {secret_ref}; {uri} is empty (a first run fills it)"
        return "ok", f"{uri} reachable at {endpoint} with {secret_ref}"

    def row_served_model(self) -> tuple:
        uri = self.t.storage_uri
        if uri.startswith("pvc://"):
            raise SkipRow(f"{uri}: a PVC is not checked (only s3://)")
        return self._s3_check(uri, "serving.storage.storageUri", must_have_objects=True)

    def row_registry(self) -> tuple:
        uri = self.t.registry_uri
        if not uri:
            raise SkipRow("no registry URI given (--registry, or tests.preflight.registryUri in the chart)")
        return self._s3_check(uri.rstrip("/"), "the run parameter registry_uri (promotion.registry_uri)")

    def row_dvc_remote(self) -> tuple:
        remote = self.t.dvc_remote
        if not remote:
            raise SkipRow("no DVC remote given (--dvc-remote, or tests.preflight.dvcRemote in the chart)")
        return self._s3_check(remote.rstrip("/"), "the run parameter dvc_remote")
