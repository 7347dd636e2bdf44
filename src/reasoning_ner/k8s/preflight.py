"""``rner preflight``: read the cluster before a run spends GPU hours, and say what to fix.

One row per check (:data:`ROWS`), each ``ok``, ``warn``, ``fail`` or ``skipped``; a failing row names
its fix (the kubectl/helm command or the value to set); a row whose objects the caller may not read
is ``skipped: needs <verb> on <resource>`` and is not a failure. :func:`run_preflight` returns a
:class:`Report`; ``report.failed`` decides the exit code.

What is checked comes from a :class:`PreflightTarget`: from the configuration
(:func:`target_from_config`: ``deploy.serving`` and ``promotion.registry_uri``) or from Helm values
(:func:`target_from_values`: resolved as the chart resolves them, so a user checks exactly what
``helm install -f my-values.yaml`` installs; the ``helm test`` Pod passes its release's own values).

The cluster is read over plain HTTP (:mod:`.kubeapi`), never with the Kubernetes client; S3 is read
with botocore as KServe's storage initializer reads it (:mod:`.preflight_s3`). Every S3 and Kubernetes
call is a read (GET, list): nothing is created, changed or deleted.

The rows are split by area: :class:`Preflight` here holds the cluster rows (API, namespaces,
ServiceAccounts, StorageClass, GPU nodes, KFP, KServe) on top of :class:`.preflight_s3.S3Rows` (the
Secrets and S3) and :class:`.preflight_base.PreflightBase` (the shared reads); the target's resolution
lives in :mod:`.preflight_target`. The target's names are re-exported here (``__all__``), so callers
import the whole preflight from this one module.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import httpx

from ..config.serving import parse_quantity
from .kfp_backend import MIN_KFP_BACKEND_VERSION, missing_features, version_tuple
from .kserve_credentials import IRSA_ANNOTATION, CredentialError
from .kubeapi import ClusterAccess, Forbidden, KubeAPIError, KubeConfigError, Unauthorized
from .preflight_base import SkipRow, annotations_of, is_cluster_internal
from .preflight_s3 import S3Rows
from .preflight_target import (
    DEFAULT_CLASS_ANNOTATIONS,
    DEFAULT_GPU_TOLERATIONS,
    KSERVE_VERSION,
    ROW_IDS,
    ROWS,
    GpuPool,
    PreflightError,
    PreflightTarget,
    Status,
    build_target,
    dvc_default_remote,
    target_from_config,
    target_from_values,
    training_pool,
)

__all__ = [
    # defined here
    "Preflight", "Report", "Row", "cluster_access", "report_table", "run_preflight", "summary_line", "tolerates",
    # re-exported from .preflight_target and .kfp_backend (the CLI, the chart's tests and the test suite import them here)
    "DEFAULT_GPU_TOLERATIONS", "MIN_KFP_BACKEND_VERSION", "ROW_IDS", "ROWS", "GpuPool", "PreflightError",
    "PreflightTarget", "build_target", "dvc_default_remote", "target_from_config", "target_from_values", "training_pool",
]

# ------------------------------------------------------------------------------------ report


@dataclass
class Row:
    id: str
    check: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Report:
    rows: list[Row]
    target: PreflightTarget
    source: str

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def row(self, row_id: str) -> Row:
        return next(r for r in self.rows if r.id == row_id)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "cluster": self.source, "rows": [asdict(r) for r in self.rows],
                "target": self.target.to_dict()}


def report_table(report: Report) -> Any:
    """The report as a rich Table (check, status, detail, fix)."""
    from rich.table import Table

    style = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}
    table = Table(title=f"Preflight ({report.source}; {report.target.origin})", show_lines=True)
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for r in report.rows:
        table.add_row(r.check, f"[{style[r.status]}]{r.status}[/]", r.detail, r.fix)
    return table


# ------------------------------------------------------------------------------------ helpers


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' ToleratesTaint: effect (empty = all), key (empty with Exists = all), Exists or Equal value."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    return operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


# ------------------------------------------------------------------------------------ the checks


class Preflight(S3Rows):
    """Runs the rows against one cluster (``kube``; None = no cluster, its rows fail with ``kube_error``).

    The S3 rows come from :class:`.preflight_s3.S3Rows`, the constructor and the reads from
    :class:`.preflight_base.PreflightBase`; :meth:`run` finds each row's method by its id.
    """

    def run(self) -> list[Row]:
        rows = []
        for row_id, title in ROWS:
            if row_id in self.t.skip:
                rows.append(Row(row_id, title, "skipped", "skipped on request (--skip)"))
                continue
            rows.append(self._guarded(row_id, title, getattr(self, "row_" + row_id.replace("-", "_"))))
        return rows

    def _guarded(self, row_id: str, title: str, fn: Callable[[], tuple]) -> Row:
        try:
            status, detail, *fix = fn()
            return Row(row_id, title, status, detail, fix[0] if fix else "")
        except SkipRow as exc:
            return Row(row_id, title, "skipped", exc.detail)
        except Forbidden as exc:
            return Row(row_id, title, "skipped", f"skipped: needs {exc.permission}")
        except KubeAPIError as exc:
            return Row(row_id, title, "fail", str(exc))
        except CredentialError as exc:
            return Row(row_id, title, "fail", str(exc))
        except Exception as exc:  # one broken row must not hide the others
            return Row(row_id, title, "fail", f"the check itself failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------- Kubernetes API
    def row_kube_api(self) -> tuple:
        if self.kube is None:
            return "fail", self.kube_error or "no cluster access", "set KUBECONFIG / --kubeconfig / --context, or run in a pod with --in-cluster"
        where = self.kube.access.source
        try:
            version = self.kube.get("/version")
        except KubeConfigError as exc:  # e.g. an exec credential plugin that fails
            return "fail", str(exc), "fix the kubeconfig field named above"
        except Unauthorized as exc:
            return ("fail", f"{self.kube.access.server} refused the credentials of {where}: {exc}",
                    "refresh the credentials (e.g. `aws eks update-kubeconfig`, `gcloud container clusters get-credentials`)")
        except Forbidden:
            pass  # /version is public on every distribution we know; a 403 still proves we reached it
        except KubeAPIError as exc:
            return "fail", f"{where}: {exc}", "check the cluster's server URL and network path (VPN, proxy-url)"
        else:
            self._api_ok = True
            return "ok", f"{self.kube.access.server} ({version.get('gitVersion', 'version unknown')}) via {where}"
        self._api_ok = True
        return "ok", f"{self.kube.access.server} via {where}"

    # ------------------------------------------------------------- namespaces and ServiceAccounts
    def row_namespaces(self) -> tuple:
        t = self.t
        found, missing, skipped = [], [], []
        for ns, role in ((t.serving_namespace, "serving"), (t.kfp_namespace, "KFP runs")):
            if any(ns == n for n, _ in found + missing + skipped):
                continue
            try:
                (found if self._maybe(f"/api/v1/namespaces/{ns}") else missing).append((ns, role))
            except Forbidden as exc:
                skipped.append((ns, exc.permission))
        if missing:
            names = ", ".join(f"{ns} ({role})" for ns, role in missing)
            return ("fail", f"missing: {names}",
                    " ; ".join(f"kubectl create namespace {ns}" for ns, _ in missing) + " (or helm install --create-namespace)")
        if skipped and not found:
            raise SkipRow(f"skipped: needs {skipped[0][1]}")
        detail = ", ".join(f"{ns} ({role})" for ns, role in found)
        if skipped:
            detail += "; not readable: " + ", ".join(ns for ns, _ in skipped)
        return "ok", detail

    def row_serving_sa(self) -> tuple:
        t = self.t
        sa = self._serving_sa()
        ref = f"{t.serving_namespace}/{t.serving_service_account}"
        if sa is None:
            return ("fail", f"ServiceAccount {ref} does not exist",
                    f"helm upgrade --install ... --set serving.storage.createServiceAccount=true (or kubectl -n "
                    f"{t.serving_namespace} create serviceaccount {t.serving_service_account})")
        listed = [s.get("name") for s in sa.get("secrets") or []]
        irsa = annotations_of(sa).get(IRSA_ANNOTATION)
        if t.s3_secret and t.s3_secret not in listed:
            return ("fail", f"ServiceAccount {ref} does not list the Secret {t.s3_secret} (KServe's storage initializer "
                            f"reads only the Secrets a ServiceAccount lists; listed: {listed or 'none'})",
                    f"kubectl -n {t.serving_namespace} patch serviceaccount {t.serving_service_account} --type json -p "
                    f"'[{{\"op\":\"add\",\"path\":\"/secrets/-\",\"value\":{{\"name\":\"{t.s3_secret}\"}}}}]'")
        if not t.s3_secret and not irsa:
            return ("fail", f"no S3 Secret configured and ServiceAccount {ref} has no {IRSA_ANNOTATION}: the storage "
                            "initializer has no S3 credentials",
                    "set serving.storage.s3SecretName, or annotate the ServiceAccount with an IRSA role")
        detail = f"{ref} lists {', '.join(listed) or 'no Secret'}"
        return "ok", detail + (f"; IRSA role {irsa}" if irsa else "")

    def row_runner_sa(self) -> tuple:
        t = self.t
        ref = f"{t.kfp_namespace}/{t.runner_service_account}"
        if self._maybe(f"/api/v1/namespaces/{t.kfp_namespace}/serviceaccounts/{t.runner_service_account}") is None:
            return ("fail", f"ServiceAccount {ref} (what pipeline runs use) does not exist",
                    f"helm upgrade --install ... --set serviceAccounts.pipelineRunner.create=true --set "
                    f"kfp.namespace={t.kfp_namespace} (or kubectl -n {t.kfp_namespace} create serviceaccount "
                    f"{t.runner_service_account})")
        return "ok", f"{ref} exists"

    # ------------------------------------------------------------- storage and nodes
    def row_storageclass(self) -> tuple:
        if not self.t.needs_storage_class:
            raise SkipRow("no StorageClass needed: the training workspace is an emptyDir; only the multi-node shared "
                           "PVC (multiNode.enabled) needs one (--storage-class checks a class)")
        name = self.t.storage_class
        if name:
            if self._maybe(f"/apis/storage.k8s.io/v1/storageclasses/{name}") is not None:
                return "ok", f"StorageClass {name} exists"
            try:
                names = [c["metadata"]["name"] for c in self._get("/apis/storage.k8s.io/v1/storageclasses", "list")["items"]]
                known = f" (the cluster has: {', '.join(names) or 'none'})"
            except KubeAPIError:
                known = ""
            return ("fail", f"StorageClass {name} does not exist{known}: the shared PVC would stay Pending",
                    "set multiNode.sharedPvc.storageClassName to an existing ReadWriteMany class (null = the cluster default)")
        classes = self._get("/apis/storage.k8s.io/v1/storageclasses", "list")["items"]
        defaults = [c["metadata"]["name"] for c in classes
                    if any(annotations_of(c).get(a) == "true" for a in DEFAULT_CLASS_ANNOTATIONS)]
        if not defaults:
            names = ", ".join(c["metadata"]["name"] for c in classes) or "none"
            return ("fail", f"no default StorageClass (classes: {names}): the shared PVC without a class stays Pending",
                    "name one with multiNode.sharedPvc.storageClassName, or mark one default: kubectl patch "
                    "storageclass <name> -p '{\"metadata\":{\"annotations\":{\"storageclass.kubernetes.io/is-default-class\":\"true\"}}}'")
        if len(defaults) > 1:
            return "warn", f"several default StorageClasses ({', '.join(defaults)}): Kubernetes uses the newest"
        return "ok", f"default StorageClass {defaults[0]}"

    def _gpu_row(self, pool_name: str) -> tuple:
        pool = next((p for p in self.t.gpu_pools if p.name == pool_name), None)
        if pool is None:
            why = ("serving.predictor.gpus is 0 (a CPU predictor)" if pool_name == "serving" else "no training GPU pool given")
            raise SkipRow(why)
        nodes = self._get("/api/v1/nodes", "list")["items"]
        fits, reasons = [], {}
        for node in nodes:
            meta, spec = node.get("metadata") or {}, node.get("spec") or {}
            labels = meta.get("labels") or {}
            alloc = (node.get("status") or {}).get("allocatable") or {}
            name = meta.get("name", "?")
            missing = [f"{k}={v}" for k, v in pool.node_selector.items() if labels.get(k) != v]
            untolerated = [f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}"
                           for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")
                           and not any(tolerates(tol, t) for tol in pool.tolerations)]
            try:
                have = parse_quantity(alloc.get(pool.resource, 0))
            except ValueError:
                have = 0.0
            if missing:
                reasons[name] = f"lacks label {', '.join(missing)}"
            elif spec.get("unschedulable"):
                reasons[name] = "is cordoned"
            elif untolerated:
                reasons[name] = f"has taint {', '.join(untolerated)} not tolerated"
            elif have < pool.count:
                reasons[name] = f"has {have:g} {pool.resource} allocatable (needs {pool.count})"
            else:
                fits.append(f"{name} ({have:g} {pool.resource})")
        if fits:
            return "ok", f"{len(fits)} of {len(nodes)} nodes fit: {', '.join(fits[:5])}{' ...' if len(fits) > 5 else ''}"
        shown = "; ".join(f"{n} {r}" for n, r in list(reasons.items())[:5]) or "the cluster has no nodes"
        selector = json.dumps(pool.node_selector)
        return ("fail", f"no node fits selector {selector}, tolerations {json.dumps(pool.tolerations)} and "
                        f"{pool.count} {pool.resource}: {shown}",
                f"set {pool.settings} to your GPU pool (kubectl get nodes --show-labels; kubectl describe node <gpu-node> "
                f"| grep -A3 Taints), or label it: kubectl label node <gpu-node> "
                + " ".join(f"{k}={v}" for k, v in pool.node_selector.items()))

    def row_gpu_training(self) -> tuple:
        return self._gpu_row("training")

    def row_gpu_serving(self) -> tuple:
        return self._gpu_row("serving")

    # ------------------------------------------------------------- KFP
    def row_kfp(self) -> tuple:
        host = self.t.kfp_host
        if not host:
            raise SkipRow("no KFP host (--kfp-host, KF_PIPELINES_ENDPOINT or the chart's kfp.host)")
        fix_host = ("set kfp.host / --kfp-host; from a workstation: kubectl -n kubeflow port-forward svc/ml-pipeline "
                    "8888:8888 and --kfp-host http://localhost:8888")
        if not self.in_cluster and is_cluster_internal(urlsplit(host).netloc):
            raise SkipRow(f"skipped: {host} is a cluster-internal name; run in the cluster (`helm test`) or port-forward "
                           "it and pass --kfp-host http://localhost:8888")
        headers = {"Authorization": f"Bearer {self.kfp_token}"} if self.kfp_token else {}
        url = host.rstrip("/") + "/apis/v2beta1/healthz"
        try:
            resp = httpx.get(url, headers=headers, timeout=10.0)
        except httpx.HTTPError as exc:
            return "fail", f"cannot reach {url}: {exc}", fix_host
        if resp.status_code in (401, 403):
            raise SkipRow(f"skipped: needs a KFP token ({url} answered HTTP {resp.status_code}; set KF_PIPELINES_TOKEN)")
        if resp.status_code == 404:
            return ("fail", f"{url} answered 404: not a KFP v2 API server (KFP >= {MIN_KFP_BACKEND_VERSION} is needed)",
                    fix_host)
        if resp.status_code != 200:
            return "fail", f"{url} answered HTTP {resp.status_code}: {resp.text[:200]}", fix_host
        try:
            info = resp.json()
        except ValueError:
            return "fail", f"{url} did not answer JSON (is {host} the ml-pipeline API, not the UI?)", fix_host
        tag = str(info.get("tag_name") or "unknown")
        mode = "multi-user" if info.get("multi_user") else "standalone"
        if version_tuple(tag) is None:
            return ("warn", f"KFP at {host} ({mode}) does not report its version (tag_name {tag!r}); it must be "
                            f">= {MIN_KFP_BACKEND_VERSION}")
        missing = missing_features(tag)
        if missing:
            return ("fail", f"KFP backend {tag} at {host} ({mode}) is older than {MIN_KFP_BACKEND_VERSION}; it lacks: "
                            + "; ".join(missing),
                    f"upgrade Kubeflow Pipelines to >= {MIN_KFP_BACKEND_VERSION}")
        return "ok", f"KFP backend {tag} at {host} ({mode}); >= {MIN_KFP_BACKEND_VERSION}"

    # ------------------------------------------------------------- KServe
    def row_kserve_crds(self) -> tuple:
        # API discovery: readable by every authenticated user (system:discovery), no RBAC needed.
        wanted = {"serving.kserve.io/v1beta1": ["inferenceservices"],
                  "serving.kserve.io/v1alpha1": ["servingruntimes", "clusterservingruntimes"]}
        missing = []
        for group_version, resources in wanted.items():
            doc = self._maybe(f"/apis/{group_version}")
            served = {r.get("name") for r in (doc or {}).get("resources") or []}
            missing += [f"{r}.{group_version.split('/')[0]} ({group_version.split('/')[1]})" for r in resources if r not in served]
        if missing:
            return ("fail", f"KServe's API is missing: {', '.join(missing)}",
                    f"helm install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version {KSERVE_VERSION} && helm "
                    f"install kserve oci://ghcr.io/kserve/charts/kserve --version {KSERVE_VERSION} -n kserve --create-namespace")
        return "ok", "inferenceservices, servingruntimes, clusterservingruntimes (serving.kserve.io)"

    def row_kserve_runtime(self) -> tuple:
        t = self.t
        if not t.runtime:
            raise SkipRow("serving.predictor.runtime is null: KServe picks a runtime by model format")
        namespaced = self._maybe(f"/apis/serving.kserve.io/v1alpha1/namespaces/{t.serving_namespace}/servingruntimes/{t.runtime}")
        where = f"ServingRuntime {t.serving_namespace}/{t.runtime}"
        runtime = namespaced
        if runtime is None:
            where = f"ClusterServingRuntime {t.runtime}"
            try:
                runtime = self._maybe(f"/apis/serving.kserve.io/v1alpha1/clusterservingruntimes/{t.runtime}")
            except Forbidden as exc:
                raise SkipRow(f"skipped: no {f'ServingRuntime {t.serving_namespace}/{t.runtime}'}; the cluster-wide one "
                               f"needs {exc.permission}") from exc
        if runtime is None:
            return ("fail", f"neither a ServingRuntime {t.serving_namespace}/{t.runtime} nor a ClusterServingRuntime "
                            f"{t.runtime} exists",
                    f"install KServe's runtimes (helm install kserve oci://ghcr.io/kserve/charts/kserve --version "
                    f"{KSERVE_VERSION} creates them) or set servingRuntime.enabled=true in the chart")
        spec = runtime.get("spec") or {}
        formats = [f.get("name") for f in spec.get("supportedModelFormats") or []]
        if spec.get("disabled"):
            return "fail", f"{where} is disabled (spec.disabled: true)", f"kubectl patch ... {t.runtime} --type merge -p '{{\"spec\":{{\"disabled\":false}}}}'"
        if t.model_format not in formats:
            return ("fail", f"{where} does not support model format {t.model_format!r} (it supports {formats or 'none'})",
                    "set serving.predictor.runtime to a runtime for this format, or servingRuntime.enabled=true")
        return "ok", f"{where} supports {t.model_format}"


def run_preflight(target: PreflightTarget, access: ClusterAccess | None = None, *, in_cluster: bool = False,
                  kube_error: str | None = None, kfp_token: str | None = None) -> Report:
    """Every row against the cluster of ``access`` (None: the Kubernetes rows fail with ``kube_error``)."""
    kube = None
    if access is not None:
        try:
            kube = access.client()
        except KubeConfigError as exc:  # an exec plugin or a client certificate that cannot be used
            kube_error = str(exc)
    try:
        rows = Preflight(target, kube, in_cluster=in_cluster, kube_error=kube_error, kfp_token=kfp_token).run()
    finally:
        if kube is not None:
            kube.close()
    return Report(rows, target, access.source if access is not None else "no cluster")


# ------------------------------------------------------------------------------------ entry points


def cluster_access(kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None,
                   in_cluster: bool = False) -> ClusterAccess:
    """The pod's own ServiceAccount (``in_cluster``) or a kubeconfig context; raises KubeConfigError."""
    from .kubeapi import load_in_cluster, load_kubeconfig

    return load_in_cluster() if in_cluster else load_kubeconfig(kubeconfig, context)


def summary_line(report: Report) -> str:
    skipped = sum(r.status == "skipped" for r in report.rows)
    warned = sum(r.status == "warn" for r in report.rows)
    tail = f" ({skipped} skipped, {warned} warnings)"
    if report.failed:
        return f"{len(report.failed)} of {len(report.rows)} checks failed{tail}: {', '.join(r.id for r in report.failed)}"
    return f"all checks passed{tail}"
