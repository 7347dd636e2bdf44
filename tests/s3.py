"""Object storage as a real peer: moto's S3 HTTP API on 127.0.0.1, in a thread of the test process.

Clients reach it over real HTTP exactly as pods reach MinIO or S3 in a cluster: through the
variables the chart's S3 Secret gives them (:meth:`S3Server.env`). Like MinIO, the server checks
credentials: it has one IAM user whose access key is in :meth:`S3Server.env`, and any other key is
refused (``InvalidAccessKeyId``). Each test gets its own bucket names (:meth:`S3Server.bucket`), so
tests sharing the session's server never see each other's objects.
"""

from __future__ import annotations

import itertools
import logging
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

REGION = "us-east-1"
S3_FULL_ACCESS = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


class S3Server:
    """A started ``moto.server.ThreadedMotoServer`` bound to 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.host_port = f"{host}:{port}"
        self.endpoint_url = f"http://{self.host_port}"
        self._names = itertools.count()
        self.access_key_id, self.secret_access_key = self._create_user()

    def _create_user(self) -> tuple[str, str]:
        """One IAM user with full S3 rights; from then on every request must be signed with its key."""
        import json

        import boto3
        from moto import settings

        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name=REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="reasoning-ner")
        iam.put_user_policy(UserName="reasoning-ner", PolicyName="s3", PolicyDocument=json.dumps(S3_FULL_ACCESS))
        key = iam.create_access_key(UserName="reasoning-ner")["AccessKey"]
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # authenticate every request from now on
        return key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        self._server.stop()

    def env(self) -> dict[str, str]:
        """What the chart's S3 Secret (and KServe's credential builder) give a pod: keys, endpoint,
        region and plain http, as botocore, s3fs, dvc-s3 and kserve-storage read them."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "S3_USE_HTTPS": "0",
            "S3_VERIFY_SSL": "0",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def bucket(self, prefix: str = "rner", name: str | None = None) -> str:
        """Create a fresh bucket (or the bucket ``name``, which may exist already) and return its name."""
        if name is None:
            name = f"{prefix}-{next(self._names)}"
        elif name in {b["Name"] for b in self.client().list_buckets()["Buckets"]}:
            return name
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextmanager
def s3_env(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Put the server's variables into this process's environment (undone after the test) and drop
    fsspec's cached S3 filesystems, which would otherwise keep the previous test's credentials."""
    import fsspec

    env = server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    yield env
    fsspec.get_filesystem_class("s3").clear_instance_cache()
