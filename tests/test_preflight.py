"""`rner preflight` against a stub Kubernetes API server, a stub KFP API and the real S3 server.

* :class:`FakeCluster` is a Kubernetes API on 127.0.0.1 (plain HTTP, or TLS with :func:`tls_files`)
  holding plain objects by path; it answers 403 for the paths a test forbids (or that RBAC rules
  refuse, for the `helm test` Pod's Role), 401 without the expected bearer token, 404 otherwise.
* The S3 rows talk to the moto S3 server of tests/s3.py, which refuses unknown keys like MinIO.
* The access layer is tested on its own: kubeconfig (token, token file, client certificate over a
  real TLS handshake that requires it, exec plugin scripts printing an ExecCredential, merged
  KUBECONFIG files, errors naming the field) and in-cluster config (temp files for the token, CA and
  namespace; the token is re-read after a rotation).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from reasoning_ner.k8s import kubeapi
from reasoning_ner.k8s.kubeapi import ClusterAccess, KubeConfigError, load_in_cluster, load_kubeconfig, resource_of
from reasoning_ner.k8s.preflight import (
    DEFAULT_GPU_TOLERATIONS,
    MIN_KFP_BACKEND_VERSION,
    ROW_IDS,
    GpuPool,
    PreflightTarget,
    dvc_default_remote,
    run_preflight,
    target_from_config,
    target_from_values,
    tolerates,
    training_pool,
)
from tests.stubs import Reply, StubAPIServer, k8s_status

SERVING_NS, KFP_NS = "ml", "kubeflow"
SERVING_SA, RUNNER_SA, SECRET = "reasoning-ner-serving", "reasoning-ner-pipeline-runner", "reasoning-ner-s3"
RUNTIME = "kserve-huggingfaceserver"


# ------------------------------------------------------------------------------------ TLS material


def _cert(subject: str, issuer_key: Any = None, issuer_name: Any = None, *, ca: bool = False, ip: str | None = None) -> tuple[bytes, bytes, Any, Any]:
    """(cert PEM, key PEM, key, name) signed by the issuer (self-signed without one)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)),
                                                                     x509.DNSName("kubernetes.default.svc")]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, key, name


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM bytes and files."""
    ca_pem, _, ca_key, ca_name = _cert("rner-test-ca", ca=True)
    server_pem, server_key, *_ = _cert("kube-apiserver", ca_key, ca_name, ip="127.0.0.1")
    client_pem, client_key, *_ = _cert("preflight-user", ca_key, ca_name)
    other_ca_pem, *_ = _cert("some-other-ca", ca=True)
    root = tmp_path_factory.mktemp("tls")
    files = {}
    for name, data in {"ca.crt": ca_pem, "server.crt": server_pem, "server.key": server_key,
                       "client.crt": client_pem, "client.key": client_key}.items():
        (root / name).write_bytes(data)
        files[name] = root / name
    return {"ca": ca_pem, "client_cert": client_pem, "client_key": client_key, "other_ca": other_ca_pem, "files": files}


def serve_tls(stub: StubAPIServer, tls: dict[str, Any], require_client_cert: bool = False) -> StubAPIServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls["files"]["server.crt"], tls["files"]["server.key"])
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=tls["ca"].decode())
    stub.server.socket = ctx.wrap_socket(stub.server.socket, server_side=True)
    stub.url = f"https://127.0.0.1:{stub.port}"
    return stub


# ------------------------------------------------------------------------------------ the stub cluster


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeCluster(StubAPIServer):
    """Objects by API path; ``forbidden`` paths (or ``allow(method, path)`` False) answer 403."""

    def __init__(self, objects: dict[str, Any] | None = None, *, forbidden: set[str] | None = None,
                 token: str | None = None, allow: Callable[[str, str], bool] | None = None,
                 kfp: dict[str, Any] | tuple[int, Any] | None = None) -> None:
        super().__init__()
        self.objects = dict(objects or {})
        self.forbidden = set(forbidden or ())
        self.token, self.allow, self.kfp = token, allow, kfp

    def route(self, request: dict[str, Any]) -> Reply:
        path = request["path"]
        if path == "/apis/v2beta1/healthz" and self.kfp is not None:
            return self.kfp if isinstance(self.kfp, tuple) else (200, self.kfp)
        if self.token is not None and request["auth"] != f"Bearer {self.token}":
            return 401, k8s_status(401, "Unauthorized", "Unauthorized")
        if path in self.forbidden or (self.allow is not None and not self.allow(request["method"], path)):
            return 403, k8s_status(403, "Forbidden", f"forbidden: {path}")
        if path in self.objects:
            return 200, self.objects[path]
        return 404, k8s_status(404, "NotFound", f"{path} not found")


def sa(name: str, ns: str, secrets: list[str] = (), annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "secrets": [{"name": s} for s in secrets]}


def secret(name: str, ns: str, data: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
            "data": {k: b64(v) for k, v in data.items()}}


def node(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
         allocatable: dict[str, str] | None = None, unschedulable: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": {"allocatable": {"cpu": "16", "memory": "64Gi", **(allocatable or {})}}}


GPU_NODE = node("gpu-1", {"nvidia.com/gpu.present": "true"}, [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
                {"nvidia.com/gpu": "8"})
CPU_NODE = node("cpu-1", {"kubernetes.io/os": "linux"})


def s3_annotations(s3: Any) -> dict[str, str]:
    return {"serving.kserve.io/s3-endpoint": s3.host_port, "serving.kserve.io/s3-usehttps": "0",
            "serving.kserve.io/s3-region": "us-east-1"}


def healthy_objects(s3: Any) -> dict[str, Any]:
    keys = {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key}
    return {
        "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.1"},
        f"/api/v1/namespaces/{SERVING_NS}": {"kind": "Namespace", "metadata": {"name": SERVING_NS}},
        f"/api/v1/namespaces/{KFP_NS}": {"kind": "Namespace", "metadata": {"name": KFP_NS}},
        f"/api/v1/namespaces/{SERVING_NS}/serviceaccounts/{SERVING_SA}": sa(SERVING_SA, SERVING_NS, [SECRET]),
        f"/api/v1/namespaces/{KFP_NS}/serviceaccounts/{RUNNER_SA}": sa(RUNNER_SA, KFP_NS, [SECRET]),
        f"/api/v1/namespaces/{SERVING_NS}/secrets/{SECRET}": secret(SECRET, SERVING_NS, keys, s3_annotations(s3)),
        f"/api/v1/namespaces/{KFP_NS}/secrets/{SECRET}": secret(
            SECRET, KFP_NS, {**keys, "AWS_ENDPOINT_URL": s3.endpoint_url}),
        "/apis/storage.k8s.io/v1/storageclasses": {"items": [
            {"metadata": {"name": "standard-rwo", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}},
            {"metadata": {"name": "fast"}}]},
        "/apis/storage.k8s.io/v1/storageclasses/fast": {"metadata": {"name": "fast"}},
        "/api/v1/nodes": {"items": [CPU_NODE, GPU_NODE]},
        "/apis/serving.kserve.io/v1beta1": {"kind": "APIResourceList", "resources": [{"name": "inferenceservices"}]},
        "/apis/serving.kserve.io/v1alpha1": {"kind": "APIResourceList", "resources": [
            {"name": "servingruntimes"}, {"name": "clusterservingruntimes"}]},
        f"/apis/serving.kserve.io/v1alpha1/clusterservingruntimes/{RUNTIME}": {
            "metadata": {"name": RUNTIME}, "spec": {"supportedModelFormats": [{"name": "huggingface", "autoSelect": True}]}},
    }


KFP_OK = {"commit_sha": "abc123", "tag_name": MIN_KFP_BACKEND_VERSION, "multi_user": False, "pipeline_store": "database"}


def make_target(s3: Any, bucket: str, **changes: Any) -> PreflightTarget:
    base = dict(name="reasoning-ner", serving_namespace=SERVING_NS, serving_service_account=SERVING_SA, s3_secret=SECRET,
                storage_uri=f"s3://{bucket}/models/champion", kfp_namespace=KFP_NS, runner_service_account=RUNNER_SA,
                s3_endpoint=s3.host_port, s3_use_https=False, s3_region="us-east-1", pipeline_s3_secret=SECRET,
                registry_uri=f"s3://{bucket}/registry", dvc_remote=f"s3://{bucket}/dvc",
                gpu_pools=[training_pool()])
    base.update(changes)
    return PreflightTarget(**base)


def access(stub: StubAPIServer, token: str | None = "t0k3n") -> ClusterAccess:
    return ClusterAccess(server=stub.url, source="test kubeconfig", token=token)


def statuses(report) -> dict[str, str]:
    return {r.id: r.status for r in report.rows}


@pytest.fixture
def bucket(s3_server) -> str:
    name = s3_server.bucket("preflight")
    s3_server.client().put_object(Bucket=name, Key="models/champion/config.json", Body=b"{}")
    return name


@pytest.fixture
def cluster(s3_server):
    """A started FakeCluster with the healthy objects and KFP 2.5.0; tests mutate ``objects``."""
    with FakeCluster(healthy_objects(s3_server), kfp=dict(KFP_OK)) as stub:
        yield stub


def run(cluster: FakeCluster, target: PreflightTarget, **kw: Any):
    return run_preflight(replace_kfp(target, cluster), access(cluster), **kw)


def replace_kfp(target: PreflightTarget, cluster: FakeCluster) -> PreflightTarget:
    if target.kfp_host is None:
        target.kfp_host = cluster.url
    return target


# ------------------------------------------------------------------------------------ the rows


def test_a_ready_cluster_passes_every_row_with_reads_only(cluster, s3_server, bucket) -> None:
    report = run(cluster, make_target(s3_server, bucket, needs_storage_class=True))  # multi-node: every row runs
    got = statuses(report)
    assert got == {**{i: "ok" for i in ROW_IDS}, "gpu-serving": "skipped"}, [r for r in report.rows if r.status != "ok"]
    assert report.ok and report.failed == []
    assert report.row("gpu-training").detail.startswith("1 of 2 nodes fit: gpu-1 (8 nvidia.com/gpu)")
    assert report.row("storageclass").detail == "default StorageClass standard-rwo"
    assert "AWS_ENDPOINT_URL" not in report.row("s3-secret").detail and s3_server.endpoint_url in report.row("s3-secret").detail
    assert report.row("kfp").detail.startswith(f"KFP backend {MIN_KFP_BACKEND_VERSION}")
    assert {m for m, _ in cluster.calls()} == {"GET"}  # the preflight never writes
    assert all(r["auth"] == "Bearer t0k3n" for r in cluster.requests if r["path"] != "/apis/v2beta1/healthz")
    json.dumps(report.to_dict())  # --json


def test_missing_objects_fail_and_name_the_fix(cluster, s3_server, bucket) -> None:
    for path in [f"/api/v1/namespaces/{KFP_NS}", f"/api/v1/namespaces/{KFP_NS}/serviceaccounts/{RUNNER_SA}",
                 f"/api/v1/namespaces/{SERVING_NS}/secrets/{SECRET}", f"/api/v1/namespaces/{KFP_NS}/secrets/{SECRET}",
                 f"/apis/serving.kserve.io/v1alpha1/clusterservingruntimes/{RUNTIME}"]:
        del cluster.objects[path]
    report = run(cluster, make_target(s3_server, bucket, registry_uri=None, dvc_remote=None))
    row = report.row
    assert row("namespaces").status == "fail" and "kubectl create namespace kubeflow" in row("namespaces").fix
    assert row("runner-sa").status == "fail" and "serviceAccounts.pipelineRunner.create=true" in row("runner-sa").fix
    assert row("s3-secret").status == "fail" and row("s3-secret").fix.startswith(
        f"kubectl -n {SERVING_NS} create secret generic {SECRET} --from-literal=AWS_ACCESS_KEY_ID=...")
    assert "annotate secret reasoning-ner-s3 --overwrite serving.kserve.io/s3-endpoint=" in row("s3-secret").fix
    assert row("pipeline-s3-secret").status == "fail" and "--from-literal=AWS_ENDPOINT_URL=..." in row("pipeline-s3-secret").fix
    # KServe's webhook refuses a predictor whose ServiceAccount lists a missing Secret (kserve_credentials)
    assert row("served-model").status == "fail" and "does not exist" in row("served-model").detail
    assert row("kserve-runtime").status == "fail" and "servingRuntime.enabled=true" in row("kserve-runtime").fix
    assert row("registry").status == row("dvc-remote").status == "skipped"
    assert not report.ok


def test_rows_the_caller_may_not_read_are_skipped_naming_the_permission(cluster, s3_server, bucket) -> None:
    cluster.forbidden |= {f"/api/v1/namespaces/{SERVING_NS}", f"/api/v1/namespaces/{KFP_NS}", "/api/v1/nodes",
                          "/apis/storage.k8s.io/v1/storageclasses",
                          f"/api/v1/namespaces/{KFP_NS}/secrets/{SECRET}",
                          f"/apis/serving.kserve.io/v1alpha1/clusterservingruntimes/{RUNTIME}"}
    report = run(cluster, make_target(s3_server, bucket, needs_storage_class=True))
    row = report.row
    assert row("namespaces").detail == "skipped: needs get on namespaces"
    assert row("gpu-training").detail == "skipped: needs list on nodes"
    assert row("storageclass").detail == "skipped: needs list on storageclasses.storage.k8s.io"
    assert row("pipeline-s3-secret").detail == f"skipped: needs get on secrets in namespace {KFP_NS}"
    assert "needs get on clusterservingruntimes.serving.kserve.io" in row("kserve-runtime").detail
    assert all(row(i).status == "skipped" for i in ("namespaces", "gpu-training", "storageclass", "pipeline-s3-secret",
                                                      "kserve-runtime"))
    assert report.ok  # skipped is not a failure; the readable rows still pass
    assert row("served-model").status == "ok"


def test_endpoint_annotated_on_the_service_account_only_is_caught(cluster, s3_server, bucket) -> None:
    """Finding 5 of the issue: without an IRSA role KServe ignores the ServiceAccount's annotations."""
    cluster.objects[f"/api/v1/namespaces/{SERVING_NS}/serviceaccounts/{SERVING_SA}"] = sa(
        SERVING_SA, SERVING_NS, [SECRET], s3_annotations(s3_server))
    sec = cluster.objects[f"/api/v1/namespaces/{SERVING_NS}/secrets/{SECRET}"]
    sec["metadata"].pop("annotations")
    target = make_target(s3_server, bucket, skip=["served-model", "registry", "dvc-remote"])  # they would go to AWS
    row = run(cluster, target).row("s3-secret")
    assert row.status == "fail" and "goes to AWS S3" in row.detail and "must be on the Secret" in row.detail
    assert row.fix == (f"kubectl -n {SERVING_NS} annotate secret {SECRET} --overwrite serving.kserve.io/s3-endpoint="
                       f"{s3_server.host_port} serving.kserve.io/s3-usehttps=0 serving.kserve.io/s3-region=us-east-1")
    # ... and with an IRSA role the same ServiceAccount annotations are what KServe uses
    cluster.objects[f"/api/v1/namespaces/{SERVING_NS}/serviceaccounts/{SERVING_SA}"]["metadata"]["annotations"][
        "eks.amazonaws.com/role-arn"] = "arn:aws:iam::123456789012:role/rner"
    report = run(cluster, make_target(s3_server, bucket))
    assert report.row("s3-secret").status == "ok" and report.row("served-model").status == "ok"
    assert "IRSA role arn:aws:iam::123456789012:role/rner" in report.row("serving-sa").detail


def test_https_mismatch_and_unlisted_secret(cluster, s3_server, bucket) -> None:
    sec = cluster.objects[f"/api/v1/namespaces/{SERVING_NS}/secrets/{SECRET}"]
    sec["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] = "1"
    row = run(cluster, make_target(s3_server, bucket, skip=["served-model", "registry", "dvc-remote"])).row("s3-secret")
    assert row.status == "fail" and f"AWS_ENDPOINT_URL=https://{s3_server.host_port}" in row.detail
    cluster.objects[f"/api/v1/namespaces/{SERVING_NS}/serviceaccounts/{SERVING_SA}"]["secrets"] = []
    row = run(cluster, make_target(s3_server, bucket)).row("serving-sa")
    assert row.status == "fail" and "does not list the Secret reasoning-ner-s3" in row.detail
    assert row.fix.startswith(f"kubectl -n {SERVING_NS} patch serviceaccount {SERVING_SA} --type json")


# ------------------------------------------------------------------------------------ S3 (the real server)


def test_a_missing_bucket_fails_naming_the_bucket(cluster, s3_server, bucket) -> None:
    report = run(cluster, make_target(s3_server, bucket, registry_uri="s3://no-such-registry-bucket/registry"))
    row = report.row("registry")
    assert row.status == "fail" and "bucket 'no-such-registry-bucket' does not exist" in row.detail
    assert "s3 mb s3://no-such-registry-bucket" in row.fix
    assert report.row("served-model").status == "ok" and not report.ok


def test_wrong_credentials_fail_naming_the_secret(cluster, s3_server, bucket) -> None:
    cluster.objects[f"/api/v1/namespaces/{SERVING_NS}/secrets/{SECRET}"]["data"]["AWS_SECRET_ACCESS_KEY"] = b64("wrong")
    report = run(cluster, make_target(s3_server, bucket))
    for row_id in ("served-model", "registry", "dvc-remote"):
        row = report.row(row_id)
        assert row.status == "fail", row
        assert f"refused the keys of Secret {SERVING_NS}/{SECRET}" in row.detail and "SignatureDoesNotMatch" in row.detail
        assert f"create secret generic {SECRET}" in row.fix
    assert report.row("s3-secret").status == "ok"  # the Secret is well-formed; S3 says the keys are wrong


def test_a_wrong_endpoint_fails_naming_the_annotation(cluster, s3_server, bucket) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    cluster.objects[f"/api/v1/namespaces/{SERVING_NS}/secrets/{SECRET}"]["metadata"]["annotations"][
        "serving.kserve.io/s3-endpoint"] = closed
    report = run(cluster, make_target(s3_server, bucket, s3_endpoint=closed))
    row = report.row("served-model")
    assert row.status == "fail" and f"cannot reach http://{closed}" in row.detail
    assert f"the serving.kserve.io/s3-endpoint annotation of Secret {SERVING_NS}/{SECRET}" in row.detail
    assert "annotate secret reasoning-ner-s3 --overwrite serving.kserve.io/s3-endpoint=" in row.fix
    # a port-forward override reaches the real server again
    report = run(cluster, make_target(s3_server, bucket, s3_endpoint=closed, s3_endpoint_override=s3_server.endpoint_url))
    assert report.row("served-model").status == "ok"


def test_empty_model_warns_and_a_local_registry_fails(cluster, s3_server, bucket) -> None:
    report = run(cluster, make_target(s3_server, bucket, storage_uri=f"s3://{bucket}/models/nothing-yet",
                                      registry_uri="work/registry", dvc_remote="minio://bucket/dvc"))
    assert report.row("served-model").status == "warn" and "nothing is at" in report.row("served-model").detail
    assert report.row("registry").status == "fail" and "a pod cannot reach a local path" in report.row("registry").detail
    assert report.row("registry").fix == "set the run parameter registry_uri (promotion.registry_uri) to s3://<bucket>/<prefix>"
    assert report.row("dvc-remote").status == "fail" and "only s3:// is served" in report.row("dvc-remote").detail


def test_cluster_internal_endpoints_are_not_tried_from_outside(cluster, s3_server, bucket) -> None:
    internal = "minio.minio.svc.cluster.local:9000"
    cluster.objects[f"/api/v1/namespaces/{SERVING_NS}/secrets/{SECRET}"]["metadata"]["annotations"][
        "serving.kserve.io/s3-endpoint"] = internal
    report = run(cluster, make_target(s3_server, bucket, s3_endpoint=internal,
                                      kfp_host="http://ml-pipeline.kubeflow.svc.cluster.local:8888"))
    assert report.row("served-model").status == "skipped" and "cluster-internal" in report.row("served-model").detail
    assert report.row("kfp").status == "skipped" and "port-forward" in report.row("kfp").detail
    assert report.row("s3-secret").status == "ok"


# ------------------------------------------------------------------------------------ storage, nodes


def test_storage_class_rows(cluster, s3_server, bucket) -> None:
    skip = ["served-model", "registry", "dvc-remote"]
    # Only the multi-node shared PVC needs a class: the training workspace is an emptyDir.
    row = run(cluster, make_target(s3_server, bucket, skip=skip)).row("storageclass")
    assert row.status == "skipped" and "emptyDir" in row.detail
    multi = dict(needs_storage_class=True, skip=skip)
    assert run(cluster, make_target(s3_server, bucket, storage_class="fast", **multi)).row("storageclass").status == "ok"
    row = run(cluster, make_target(s3_server, bucket, storage_class="standard", **multi)).row("storageclass")
    assert row.status == "fail" and "StorageClass standard does not exist (the cluster has: standard-rwo, fast)" in row.detail
    assert "multiNode.sharedPvc.storageClassName" in row.fix
    cluster.objects["/apis/storage.k8s.io/v1/storageclasses"]["items"][0]["metadata"]["annotations"] = {}
    row = run(cluster, make_target(s3_server, bucket, **multi)).row("storageclass")
    assert row.status == "fail" and "no default StorageClass" in row.detail and "is-default-class" in row.fix


def test_the_shared_pvc_class_comes_from_the_values() -> None:
    from reasoning_ner.k8s.preflight import target_from_values

    values = {"serving": {"storage": {"serviceAccountName": "sa", "storageUri": "s3://b/m"}},
              "multiNode": {"enabled": True, "sharedPvc": {"create": True, "storageClassName": "efs"}}}
    target = target_from_values(values)
    assert target.needs_storage_class and target.storage_class == "efs"
    values["multiNode"]["enabled"] = False
    assert not target_from_values(values).needs_storage_class


@pytest.mark.parametrize("gpu_node,reason", [
    (node("gpu-1", {}, [], {"nvidia.com/gpu": "8"}), "gpu-1 lacks label nvidia.com/gpu.present=true"),
    (node("gpu-1", {"nvidia.com/gpu.present": "true"}, [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
          {"nvidia.com/gpu": "8"}), "gpu-1 has taint dedicated=gpu:NoSchedule not tolerated"),
    (node("gpu-1", {"nvidia.com/gpu.present": "true"}, [], {}), "gpu-1 has 0 nvidia.com/gpu allocatable (needs 1)"),
    (node("gpu-1", {"nvidia.com/gpu.present": "true"}, [], {"nvidia.com/gpu": "8"}, unschedulable=True), "gpu-1 is cordoned"),
])
def test_gpu_nodes_must_match_selector_taints_and_resource(cluster, s3_server, bucket, gpu_node, reason) -> None:
    cluster.objects["/api/v1/nodes"] = {"items": [CPU_NODE, gpu_node]}
    row = run(cluster, make_target(s3_server, bucket, skip=["served-model", "registry", "dvc-remote"])).row("gpu-training")
    assert row.status == "fail" and reason in row.detail, row
    assert "gpu_node_selector / gpu_tolerations" in row.fix and "kubectl label node <gpu-node> nvidia.com/gpu.present=true" in row.fix


def test_serving_gpu_pool_is_checked_when_the_predictor_wants_gpus(cluster, s3_server, bucket) -> None:
    pool = GpuPool("serving", {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}, DEFAULT_GPU_TOLERATIONS,
                   "nvidia.com/gpu", 2, "serving.predictor.nodeSelector / tolerations / gpuResourceName")
    report = run(cluster, make_target(s3_server, bucket, gpu_pools=[training_pool(), pool],
                                      skip=["served-model", "registry", "dvc-remote"]))
    assert report.row("gpu-training").status == "ok"
    row = report.row("gpu-serving")
    assert row.status == "fail" and "lacks label cloud.google.com/gke-accelerator=nvidia-h100-80gb" in row.detail
    assert row.fix.startswith("set serving.predictor.nodeSelector")


def test_toleration_matching_follows_kubernetes() -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert tolerates({"operator": "Exists"}, taint)  # empty key + Exists tolerates everything
    assert not tolerates({"operator": "Equal"}, taint)
    assert tolerates({"key": "nvidia.com/gpu", "operator": "Exists"}, taint)
    assert not tolerates({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, taint)
    assert tolerates({"key": "nvidia.com/gpu", "value": "present"}, taint)  # Equal is the default operator
    assert not tolerates({"key": "nvidia.com/gpu", "value": "absent", "effect": "NoSchedule"}, taint)
    assert not tolerates({"key": "other", "operator": "Exists"}, taint)


# ------------------------------------------------------------------------------------ KFP, KServe, API


@pytest.mark.parametrize("answer,status,text", [
    ((200, {**KFP_OK, "tag_name": "2.4.1"}), "fail", "tolerationJson given as a list of tolerations (90909fc) (>= 2.5.0)"),
    ((200, {**KFP_OK, "tag_name": "2.14.3"}), "fail", "older than " + MIN_KFP_BACKEND_VERSION),
    ((200, {**KFP_OK, "tag_name": "v2.15.1", "multi_user": True}), "ok", "KFP backend v2.15.1 at"),
    ((200, {**KFP_OK, "tag_name": "unknown"}), "warn", "does not report its version"),
    ((404, {"error": "Not Found"}), "fail", "not a KFP v2 API server"),
    ((403, {"error": "RBAC: access denied"}), "skipped", "needs a KFP token"),
])
def test_kfp_backend_version(cluster, s3_server, bucket, answer, status, text) -> None:
    cluster.kfp = answer
    row = run(cluster, make_target(s3_server, bucket, skip=["served-model", "registry", "dvc-remote"])).row("kfp")
    assert row.status == status and text in row.detail, row
    if status == "fail" and answer[0] == 200:
        assert f">= {MIN_KFP_BACKEND_VERSION}" in row.fix


def test_kfp_unreachable_fails(cluster, s3_server, bucket) -> None:
    row = run(cluster, make_target(s3_server, bucket, kfp_host="http://127.0.0.1:9", skip=["served-model", "registry",
                                                                                            "dvc-remote"])).row("kfp")
    assert row.status == "fail" and "cannot reach http://127.0.0.1:9/apis/v2beta1/healthz" in row.detail
    assert "port-forward svc/ml-pipeline" in row.fix


def test_kserve_crds_and_runtime(cluster, s3_server, bucket) -> None:
    skip = ["served-model", "registry", "dvc-remote"]
    ns_runtime = f"/apis/serving.kserve.io/v1alpha1/namespaces/{SERVING_NS}/servingruntimes/{RUNTIME}"
    cluster.objects[ns_runtime] = {"spec": {"supportedModelFormats": [{"name": "huggingface"}]}}
    assert run(cluster, make_target(s3_server, bucket, skip=skip)).row("kserve-runtime").detail == \
        f"ServingRuntime {SERVING_NS}/{RUNTIME} supports huggingface"
    cluster.objects[ns_runtime] = {"spec": {"supportedModelFormats": [{"name": "sklearn"}]}}
    row = run(cluster, make_target(s3_server, bucket, skip=skip)).row("kserve-runtime")
    assert row.status == "fail" and "does not support model format 'huggingface'" in row.detail
    del cluster.objects["/apis/serving.kserve.io/v1beta1"]
    row = run(cluster, make_target(s3_server, bucket, skip=skip)).row("kserve-crds")
    assert row.status == "fail" and "inferenceservices.serving.kserve.io (v1beta1)" in row.detail
    assert "helm install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd" in row.fix


def test_refused_credentials_fail_the_api_row_and_skip_the_rest(s3_server, bucket) -> None:
    with FakeCluster(healthy_objects(s3_server), token="the-right-one") as stub:
        report = run_preflight(make_target(s3_server, bucket, kfp_host=None), access(stub, token="stale"))
    assert report.row("kube-api").status == "fail" and "refused the credentials" in report.row("kube-api").detail
    assert report.row("namespaces").status == "skipped" and "did not answer" in report.row("namespaces").detail
    assert not report.ok and len(stub.requests) == 1


def test_unreachable_api_server_fails() -> None:
    target = PreflightTarget(serving_namespace="ml", serving_service_account="sa", s3_secret=None,
                             storage_uri="pvc://claim/model", kfp_namespace="ml", runner_service_account="r")
    report = run_preflight(target, ClusterAccess(server="http://127.0.0.1:9", source="test"))
    assert report.row("kube-api").status == "fail" and "cannot reach the API server http://127.0.0.1:9" in report.row("kube-api").detail
    assert report.row("served-model").status == "skipped"  # pvc:// is not checked


# ------------------------------------------------------------------------------------ targets


def test_target_from_config_and_values() -> None:
    from reasoning_ner.config import load_config

    t = target_from_config(load_config(profile="qwen3-8b"))
    assert (t.serving_namespace, t.serving_service_account, t.s3_secret) == ("reasoning-ner", "reasoning-ner-serving", "reasoning-ner-s3")
    assert [p.name for p in t.gpu_pools] == ["training", "serving"]  # the GPU predictor
    values = {"serving": {"name": "", "namespace": "", "storage": {"serviceAccountName": "sa", "storageUri": "s3://b/m",
                                                                   "s3SecretName": "keys", "s3Endpoint": "minio:9000",
                                                                   "s3UseHttps": False},
                          "predictor": {"gpus": 0, "runtime": None}},
              "kfp": {"namespace": "", "host": "http://kfp:8888"}, "secrets": {"s3": {"name": "keys"}},
              "tests": {"preflight": {"registryUri": "s3://b/registry", "skip": ["kfp"]}}}
    t = target_from_values(values, release="rel", namespace="team")
    assert (t.name, t.serving_namespace, t.kfp_namespace, t.runner_service_account) == ("rel", "team", "team", "rel-pipeline-runner")
    assert (t.runtime, t.s3_endpoint, t.s3_use_https, t.registry_uri, t.skip) == (None, "minio:9000", False, "s3://b/registry", ["kfp"])
    assert [p.name for p in t.gpu_pools] == ["training"]
    with pytest.raises(ValueError, match="the values lack serving.storage.storageUri"):
        target_from_values({"serving": {"storage": {"serviceAccountName": "sa"}}})


def test_values_that_break_the_charts_schema_are_refused_before_any_check(tmp_path: Path) -> None:
    """`rner preflight -f` refuses what `helm install` would (exit 2 naming each key), before touching a cluster."""
    from typer.testing import CliRunner

    from reasoning_ner.cli import app
    from reasoning_ner.k8s.preflight_target import load_values

    chart = Path(__file__).resolve().parents[1] / "charts" / "reasoning-ner"
    bad = tmp_path / "bad.yaml"
    bad.write_text("serving:\n  mode: Knative\n  replicas: 3\n")
    with pytest.raises(ValueError, match=r"serving.mode: 'Knative' is not one of .*'replicas' was unexpected"):
        load_values([bad], chart)
    good = tmp_path / "good.yaml"
    good.write_text("serving:\n  mode: knative\n")
    assert load_values([good], chart)["serving"]["mode"] == "knative"
    res = CliRunner().invoke(app, ["preflight", "-f", str(bad), "--chart", str(chart),
                                   "--kubeconfig", str(tmp_path / "none")])
    assert res.exit_code == 2 and "break the chart's schema" in res.output and "kubeconfig" not in res.output.lower()


def test_dvc_default_remote(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = s3\n['remote \"s3\"']\n    url = s3://bucket/dvc\n"
                                              "['remote \"local\"']\n    url = ../store\n")
    assert dvc_default_remote(tmp_path) == "s3://bucket/dvc"
    assert dvc_default_remote(tmp_path, "local") == "../store"
    assert dvc_default_remote(tmp_path / "nowhere") is None


# ------------------------------------------------------------------------------------ kubeconfig


def write_kubeconfig(path: Path, user: dict[str, Any], cluster: dict[str, Any], *, current: str | None = "dev",
                     namespace: str | None = "ml") -> Path:
    ctx: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        ctx["namespace"] = namespace
    doc = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": cluster}],
           "users": [{"name": "u", "user": user}], "contexts": [{"name": "dev", "context": ctx}]}
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_token_over_tls_with_ca_data(tmp_path: Path, tls) -> None:
    with serve_tls(FakeCluster({"/version": {"gitVersion": "v1.33.0"}}, token="abc"), tls) as stub:
        cfg = write_kubeconfig(tmp_path / "config", {"token": "abc"},
                               {"server": stub.url, "certificate-authority-data": base64.b64encode(tls["ca"]).decode()})
        acc = load_kubeconfig(env={"KUBECONFIG": str(cfg)})
        assert acc.namespace == "ml" and acc.source.endswith("context dev")
        with acc.client() as kube:
            assert kube.get("/version")["gitVersion"] == "v1.33.0"
        # the wrong CA: the TLS handshake fails, the error says it cannot reach the server
        cfg = write_kubeconfig(tmp_path / "other", {"token": "abc"},
                               {"server": stub.url, "certificate-authority-data": base64.b64encode(tls["other_ca"]).decode()})
        with load_kubeconfig(cfg).client() as kube, pytest.raises(kubeapi.KubeAPIError, match="cannot reach the API server"):
            kube.get("/version")


def test_kubeconfig_tls_server_name_is_the_name_verified(tmp_path: Path, tls) -> None:
    with serve_tls(FakeCluster({"/version": {"gitVersion": "v1.33.0"}}), tls) as stub:
        ca = str(tls["files"]["ca.crt"])
        good = write_kubeconfig(tmp_path / "good", {}, {"server": stub.url, "certificate-authority": ca,
                                                         "tls-server-name": "kubernetes.default.svc"})
        with load_kubeconfig(good).client() as kube:
            assert kube.get("/version")["gitVersion"] == "v1.33.0"
        wrong = write_kubeconfig(tmp_path / "wrong", {}, {"server": stub.url, "certificate-authority": ca,
                                                           "tls-server-name": "api.example.com"})
        with load_kubeconfig(wrong).client() as kube, pytest.raises(kubeapi.KubeAPIError, match="cannot reach"):
            kube.get("/version")


def test_kubeconfig_client_certificate_is_presented(tmp_path: Path, tls) -> None:
    with serve_tls(FakeCluster({"/version": {"gitVersion": "v1.33.0"}}), tls, require_client_cert=True) as stub:
        cluster = {"server": stub.url, "certificate-authority": str(tls["files"]["ca.crt"])}
        with_data = write_kubeconfig(tmp_path / "data", {
            "client-certificate-data": base64.b64encode(tls["client_cert"]).decode(),
            "client-key-data": base64.b64encode(tls["client_key"]).decode()}, cluster)
        with load_kubeconfig(with_data).client() as kube:
            assert kube.get("/version")["gitVersion"] == "v1.33.0"
        # relative file paths resolve against the kubeconfig's folder
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "me.crt").write_bytes(tls["client_cert"])
        (tmp_path / "certs" / "me.key").write_bytes(tls["client_key"])
        with_files = write_kubeconfig(tmp_path / "files", {"client-certificate": "certs/me.crt", "client-key": "certs/me.key"}, cluster)
        with load_kubeconfig(with_files).client() as kube:
            assert kube.get("/version")["gitVersion"] == "v1.33.0"
        # without the certificate the server refuses the handshake
        without = write_kubeconfig(tmp_path / "none", {}, cluster)
        with load_kubeconfig(without).client() as kube, pytest.raises(kubeapi.KubeAPIError, match="cannot reach"):
            kube.get("/version")


EXEC_SCRIPT = """\
import json, os, sys, pathlib
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False, info
calls = pathlib.Path(sys.argv[1])
calls.write_text(str(int(calls.read_text() or "0") + 1) if calls.exists() else "1")
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": os.environ["CLUSTER_TOKEN"] + "-" + sys.argv[2],
                             "expirationTimestamp": sys.argv[3]}}))
"""


def test_kubeconfig_exec_plugin_token_is_cached_until_it_expires(tmp_path: Path) -> None:
    script = tmp_path / "get-token.py"
    script.write_text(EXEC_SCRIPT)
    calls = tmp_path / "calls"
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with FakeCluster({"/version": {"gitVersion": "v1.33.0"}, "/api/v1/namespaces/ml": {}}, token="sekret-eks") as stub:
        user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
                         "args": [str(script), str(calls), "eks", later], "env": [{"name": "CLUSTER_TOKEN", "value": "sekret"}],
                         "interactiveMode": "Never"}}
        acc = load_kubeconfig(write_kubeconfig(tmp_path / "config", user, {"server": stub.url}))
        with acc.client() as kube:
            kube.get("/version")
            kube.get("/api/v1/namespaces/ml")
        assert [r["auth"] for r in stub.requests] == ["Bearer sekret-eks"] * 2
        assert calls.read_text() == "1"  # cached: one plugin run for two requests
        # an expired credential is fetched again
        user["exec"]["args"][3] = "2000-01-01T00:00:00Z"
        acc = load_kubeconfig(write_kubeconfig(tmp_path / "config", user, {"server": stub.url}))
        with acc.client() as kube:
            kube.get("/version")
            kube.get("/version")
        assert calls.read_text() == "3"


def test_kubeconfig_exec_plugin_errors_name_the_field(tmp_path: Path) -> None:
    def access_for(exec_spec: dict[str, Any]) -> ClusterAccess:
        return load_kubeconfig(write_kubeconfig(tmp_path / "config", {"exec": exec_spec}, {"server": "http://127.0.0.1:9"}))

    missing = access_for({"apiVersion": "client.authentication.k8s.io/v1", "command": "gke-gcloud-auth-plugin-nope",
                          "installHint": "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin"})
    with pytest.raises(KubeConfigError, match=r"users\['u'\].user.exec.command 'gke-gcloud-auth-plugin-nope' was not found; Install"):
        missing.bearer_token()
    failing = access_for({"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                          "args": ["-c", "import sys; sys.exit('token expired; run aws sso login')"]})
    with pytest.raises(KubeConfigError, match="exited 1: token expired; run aws sso login"):
        failing.bearer_token()
    wrong_version = access_for({"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": [
        "-c", "print('{\"apiVersion\": \"client.authentication.k8s.io/v1beta1\", \"kind\": \"ExecCredential\", \"status\": {\"token\": \"x\"}}')"]})
    with pytest.raises(KubeConfigError, match="answered apiVersion 'client.authentication.k8s.io/v1beta1'"):
        wrong_version.bearer_token()
    with pytest.raises(KubeConfigError, match=r"exec.apiVersion 'client.authentication.k8s.io/v1alpha1' is not one of"):
        access_for({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"})
    # through the preflight: the API row fails with the plugin's message, nothing crashes
    report = run_preflight(PreflightTarget("ml", "sa", None, "pvc://c/m", "ml", "r"), failing)
    assert report.row("kube-api").status == "fail" and "token expired" in report.row("kube-api").detail


def test_kubeconfig_errors_name_the_field(tmp_path: Path) -> None:
    server = {"server": "https://127.0.0.1:6443"}
    with pytest.raises(KubeConfigError, match=r"clusters\['c'\].cluster.server is missing"):
        load_kubeconfig(write_kubeconfig(tmp_path / "a", {}, {}))
    with pytest.raises(KubeConfigError, match="current-context is not set; pass --context"):
        load_kubeconfig(write_kubeconfig(tmp_path / "b", {}, server, current=None))
    with pytest.raises(KubeConfigError, match=r"contexts\['prod'\] does not exist \(contexts: dev\)"):
        load_kubeconfig(write_kubeconfig(tmp_path / "c", {}, server), context="prod")
    with pytest.raises(KubeConfigError, match=r"clusters\['c'\].cluster.certificate-authority-data is not valid base64"):
        load_kubeconfig(write_kubeconfig(tmp_path / "d", {}, {**server, "certificate-authority-data": "%%%"}))
    with pytest.raises(KubeConfigError, match=r"users\['u'\].user.auth-provider: the legacy auth-provider"):
        load_kubeconfig(write_kubeconfig(tmp_path / "e", {"auth-provider": {"name": "gcp"}}, server))
    with pytest.raises(KubeConfigError, match=r"users\['u'\].user.client-certificate: cannot read"):
        load_kubeconfig(write_kubeconfig(tmp_path / "f", {"client-certificate": "nope.crt", "client-key": "nope.key"}, server))
    with pytest.raises(KubeConfigError, match="no kubeconfig found"):
        load_kubeconfig(env={"KUBECONFIG": str(tmp_path / "missing")})


def test_kubeconfig_files_merge_in_order(tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("from-file\n")
    first = {"apiVersion": "v1", "kind": "Config", "current-context": "dev",
             "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
             "users": [{"name": "u", "user": {"tokenFile": "tok"}}]}
    second = {"apiVersion": "v1", "kind": "Config", "current-context": "ignored",
              "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True}}],
              "users": [{"name": "u", "user": {"token": "loses"}}]}
    (tmp_path / "one").write_text(yaml.safe_dump(first))
    (tmp_path / "two").write_text(yaml.safe_dump(second))
    acc = load_kubeconfig(env={"KUBECONFIG": f"{tmp_path / 'one'}:{tmp_path / 'two'}"})
    assert acc.server == "https://10.0.0.1:6443" and acc.insecure and acc.bearer_token() == "from-file"


def test_resource_of_paths() -> None:
    assert resource_of("/api/v1/namespaces/ml/secrets/s3") == ("secrets", "ml")
    assert resource_of("/api/v1/namespaces/ml") == ("namespaces", None)
    assert resource_of("/apis/storage.k8s.io/v1/storageclasses/x") == ("storageclasses.storage.k8s.io", None)
    assert resource_of("/apis/serving.kserve.io/v1alpha1/namespaces/ml/servingruntimes/r") == ("servingruntimes.serving.kserve.io", "ml")


# ------------------------------------------------------------------------------------ in-cluster


def sa_dir(root: Path, tls: dict[str, Any], token: str = "pod-token-1") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(token)
    (root / "ca.crt").write_bytes(tls["ca"])
    (root / "namespace").write_text("ml\n")
    return root


def test_in_cluster_config_reads_the_rotating_token(tmp_path: Path, tls) -> None:
    root = sa_dir(tmp_path / "sa", tls)
    with serve_tls(FakeCluster({"/version": {"gitVersion": "v1.33.0"}}), tls) as stub:
        acc = load_in_cluster(root, env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(stub.port)})
        assert acc.server == stub.url and acc.namespace == "ml"
        with acc.client() as kube:
            kube.get("/version")
            (root / "token").write_text("pod-token-2")  # the kubelet rotated the projected token
            kube.get("/version")
    assert [r["auth"] for r in stub.requests] == ["Bearer pod-token-1", "Bearer pod-token-2"]


def test_in_cluster_config_errors(tmp_path: Path, tls) -> None:
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"):
        load_in_cluster(tmp_path, env={})
    with pytest.raises(KubeConfigError, match="no ServiceAccount token at .*automountServiceAccountToken"):
        load_in_cluster(tmp_path, env={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    acc = load_in_cluster(sa_dir(tmp_path / "v6", tls), env={"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert acc.server == "https://[fd00::1]:443"


# ------------------------------------------------------------------------------------ the CLI


def test_cli_prints_the_table_and_exits_non_zero_on_a_failure(tmp_path: Path, cluster, s3_server, bucket, monkeypatch) -> None:
    from typer.testing import CliRunner

    from reasoning_ner.cli import app

    monkeypatch.chdir(tmp_path)  # no params.yaml, no .dvc/config
    kubeconfig = write_kubeconfig(tmp_path / "config", {"token": "t0k3n"}, {"server": cluster.url})
    args = ["--profile", "tiny-cpu", "--set", f"deploy.serving.storage.storage_uri=s3://{bucket}/models/champion",
            "--set", f"deploy.serving.storage.s3_endpoint={s3_server.host_port}",
            "preflight", "--kubeconfig", str(kubeconfig), "--namespace", SERVING_NS, "--kfp-namespace", KFP_NS,
            "--registry", f"s3://{bucket}/registry", "--dvc-remote", f"s3://{bucket}/dvc", "--kfp-host", cluster.url]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] is True and {r["id"]: r["status"] for r in doc["rows"]}["registry"] == "ok"
    result = runner.invoke(app, args + ["--storage-class", "nope"], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "StorageClass" in result.output and "fail" in result.output and "1 of 15 checks failed" in result.output
    # a values file: the chart's names resolved for release "rel" in namespace ml
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"serving": {"storage": {"serviceAccountName": SERVING_SA, "storageUri": f"s3://{bucket}/models/champion",
                                                              "s3SecretName": SECRET, "s3Endpoint": s3_server.host_port,
                                                              "s3UseHttps": False, "s3Region": "us-east-1"}},
                                      "kfp": {"namespace": KFP_NS, "host": cluster.url},
                                      "serviceAccounts": {"pipelineRunner": {"name": RUNNER_SA}},
                                      "secrets": {"s3": {"name": SECRET}}}))
    result = runner.invoke(app, ["preflight", "--kubeconfig", str(kubeconfig), "--values", str(values), "--chart", "",
                                 "--release", "rel", "--namespace", SERVING_NS, "--json", "--skip", "registry",
                                 "--skip", "dvc-remote"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["target"]["name"] == "rel"
    result = runner.invoke(app, ["preflight", "--kubeconfig", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no kubeconfig found" in result.output


def test_the_library_talks_http_without_the_kubernetes_client_or_kfp() -> None:
    import subprocess

    code = ("import sys, reasoning_ner.k8s.preflight, reasoning_ner.k8s.kubeapi; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kfp', 'kfp_server_api')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
