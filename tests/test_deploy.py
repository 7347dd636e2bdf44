"""The deploy step against a stub Kubernetes API on 127.0.0.1, over real HTTP with the library's client.

The stub records every HTTP request (method, path, query, content type, body) and simulates what the
KServe controller does to an InferenceService's status: a changed storageUri makes a new revision
that the controller observes on the next GET and reports ready on the one after; traffic follows
``canaryTrafficPercent`` (Knative) and the predictor Deployment rolls out (Standard). The tests assert
the exact requests the client sent, not our own bookkeeping.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from reasoning_ner.k8s.kubeapi import ClusterAccess, KubeClient
from reasoning_ner.k8s.rollout import (
    DeployError,
    apply_merge_patch,
    build_deploy_patch,
    deploy,
    knative_state,
    promote_patch,
    rollback_patch,
    validate_deploy_patch,
)
from reasoning_ner.k8s.inference_service import ServingSettings, build_inference_service
from reasoning_ner.k8s.manifests import overlay_settings
from reasoning_ner.k8s.schema import ManifestValidationError
from tests.stubs import Reply, StubAPIServer, k8s_status

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT.parent / "shared" / "k8s" / "crds"
OLD, NEW = "s3://reasoning-ner/models/v1", "s3://reasoning-ner/models/v2"
NS = "reasoning-ner"
ISVC_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/reasoning-ner"


class FakeKServe(StubAPIServer):
    """An API server holding one InferenceService and its predictor Deployment, with KServe's status logic."""

    def __init__(self, settings: ServingSettings, existing_uri: str | None = OLD, fail_revisions: bool = False,
                 probe_ok: bool = True, never_ready: bool = False, helm_release: str | None = "reasoning-ner"):
        self.settings, self.fail, self.probe_ok, self.never_ready = settings, fail_revisions, probe_ok, never_ready
        self.traffic_at_probe: list[Any] = []
        self.isvc: dict[str, Any] | None = None
        self.revs: list[str] = []  # storage URI per revision (index + 1 = revision number)
        self.ready_rev = 0  # latest ready revision number (0 = none)
        self.rolled_out = 0  # last revision that got 100 %
        self.gets = 0
        self.observed = 0
        self.dep_generation = 0
        self.dep_uri = None
        super().__init__()
        if existing_uri:
            body = build_inference_service(settings, existing_uri)
            if helm_release:  # what Helm writes on every object of a release
                body["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm"
                body["metadata"].setdefault("annotations", {}).update({
                    "meta.helm.sh/release-name": helm_release, "meta.helm.sh/release-namespace": settings.namespace})
            self._store(body)
            self.ready_rev = self.rolled_out = 1
            self.observed = 1
            self.dep_uri = existing_uri
            self.gets = 5

    # ------------------------------------------------------------------ simulation
    def _store(self, body: dict[str, Any]) -> None:
        self.isvc = copy.deepcopy(body)
        self.isvc["metadata"]["generation"] = 1
        self.isvc["metadata"]["resourceVersion"] = "1"
        self.revs = [body["spec"]["predictor"]["model"]["storageUri"]]
        self.dep_generation = 1
        self.gets = 0

    def _rev(self, n: int) -> str:
        return f"reasoning-ner-predictor-{n:05d}"

    def _status(self) -> dict[str, Any]:
        assert self.isvc is not None
        self.gets += 1
        gen = self.isvc["metadata"]["generation"]
        latest = len(self.revs)
        if self.gets >= 1:
            self.observed = gen
        if self.gets >= 2 and not self.fail and not self.never_ready:
            self.ready_rev = latest
            if self.dep_uri != self.revs[-1]:
                self.dep_uri = self.revs[-1]
                self.dep_generation += 1
        pred = self.isvc["spec"]["predictor"]
        cp = pred.get("canaryTrafficPercent")
        conditions = [{"type": "Ready", "status": "True" if self.ready_rev else "Unknown"},
                      {"type": "PredictorReady", "status": "True" if self.ready_rev else "Unknown"}]
        if self.fail and self.gets >= 2 and latest > self.ready_rev:
            conditions.append({"type": "LatestDeploymentReady", "status": "False", "reason": "RevisionFailed",
                               "message": f"Revision {self._rev(latest)} failed with message: container exited 1"})
        comp: dict[str, Any] = {"latestCreatedRevision": self._rev(latest) if self.observed >= gen else self._rev(self.ready_rev or 1),
                                "latestReadyRevision": self._rev(self.ready_rev) if self.ready_rev else None,
                                "url": f"http://reasoning-ner-predictor-{NS}.example.com",
                                "address": {"url": f"http://127.0.0.1:{self.port}/revisions/{self._rev(self.ready_rev or 1)}"}}
        traffic = []
        if self.settings.mode == "knative" and self.ready_rev:
            r = self.ready_rev
            if cp is None or self.rolled_out in (0, r):
                traffic = [{"revisionName": self._rev(r), "percent": 100, "latestRevision": True, "tag": "latest",
                            "url": f"http://127.0.0.1:{self.port}/revisions/{self._rev(r)}"}]
                if cp is None or self.rolled_out == 0:
                    self.rolled_out = r
            else:
                traffic = [{"revisionName": self._rev(r), "percent": cp, "latestRevision": True, "tag": "latest",
                            "url": f"http://127.0.0.1:{self.port}/revisions/{self._rev(r)}"},
                           {"revisionName": self._rev(self.rolled_out), "percent": 100 - cp, "latestRevision": False,
                            "tag": "prev", "url": f"http://127.0.0.1:{self.port}/revisions/{self._rev(self.rolled_out)}"}]
                comp["previousRolledoutRevision"] = self._rev(self.rolled_out)
            comp["traffic"] = traffic
            comp["latestRolledoutRevision"] = self._rev(self.rolled_out)
        return {"observedGeneration": self.observed, "conditions": conditions, "components": {"predictor": comp},
                "deploymentMode": "Serverless" if self.settings.mode == "knative" else "Standard",
                "url": f"http://reasoning-ner-{NS}.example.com"}

    def _patch(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.isvc is not None
        before = copy.deepcopy(self.isvc["spec"])
        self.isvc = apply_merge_patch(self.isvc, body)
        if self.isvc["spec"] != before:
            self.isvc["metadata"]["generation"] += 1
            self.gets = 0
        new_uri = self.isvc["spec"]["predictor"]["model"]["storageUri"]
        if new_uri != before["predictor"]["model"]["storageUri"]:
            self.revs.append(new_uri)
        return self.isvc

    def _deployment(self) -> dict[str, Any]:
        replicas = self.settings.scaling.min_replicas
        rolled = self.dep_uri == self.revs[-1] and self.gets >= 3
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "reasoning-ner-predictor", "namespace": NS, "generation": self.dep_generation},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "x"}},
                         "template": {"metadata": {"annotations": {
                             "internal.serving.kserve.io/storage-initializer-sourceuri": self.dep_uri}},
                             "spec": {"containers": [{"name": "kserve-container", "image": "x"}]}}},
                "status": {"observedGeneration": self.dep_generation, "replicas": replicas + (0 if rolled else 1),
                           "updatedReplicas": replicas if rolled else 1, "availableReplicas": replicas}}

    # ------------------------------------------------------------------ HTTP
    def route(self, rec: dict[str, Any]) -> Reply:
        method, path = rec["method"], rec["path"]
        not_found = (404, k8s_status(404, "NotFound", 'inferenceservices.serving.kserve.io "reasoning-ner" not found'))
        if method == "GET":
            if path == ISVC_PATH:
                if self.isvc is None:
                    return not_found
                self.isvc["status"] = self._status()
                return 200, self.isvc
            if path == f"/apis/apps/v1/namespaces/{NS}/deployments/reasoning-ner-predictor":
                return 200, self._deployment()
            if path.startswith("/revisions/") and path.endswith("/v2/health/ready"):
                self.traffic_at_probe.append(copy.deepcopy(self.isvc["status"]["components"]["predictor"].get("traffic")))
                return (200 if self.probe_ok else 503), {"ready": self.probe_ok}
            return 404, k8s_status(404)
        if method == "PATCH":
            if path != ISVC_PATH or self.isvc is None:
                return not_found
            if rec["content_type"] != "application/merge-patch+json":
                return 415, k8s_status(415)
            return 200, self._patch(rec["body"])
        return not_found

    def client(self) -> KubeClient:
        return ClusterAccess(server=self.url, source="stub", token="deploy-token").client()



def fast(**kw: Any) -> dict[str, Any]:
    return {"poll_interval_s": 0.0, "sleep": lambda s: None, **kw}


KNATIVE = overlay_settings("knative")
STANDARD = overlay_settings("base")


# ------------------------------------------------------------------------------------ Knative canary


def test_knative_canary_then_promotion_sends_exactly_these_requests() -> None:
    with FakeKServe(KNATIVE) as fake:
        result = deploy(NEW, KNATIVE, NS, canary_percent=10, client=fake.client(), probe=True, **fast())
    assert result.action == "canary-promoted" and result.mode == "knative"
    writes = fake.writes()
    assert [(w["method"], w["path"], w["content_type"]) for w in writes] == [
        ("PATCH", ISVC_PATH, "application/merge-patch+json"),
        ("PATCH", ISVC_PATH, "application/merge-patch+json"),
    ]
    assert writes[0]["body"] == {"spec": {"predictor": {"model": {"storageUri": NEW}, "canaryTrafficPercent": 10}}}
    assert writes[1]["body"] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}  # JSON null removes the field
    assert all(w["query"] == {"fieldManager": ["rner-deploy"]} for w in writes)
    assert {r["auth"] for r in fake.requests if not r["path"].startswith("/revisions/")} == {"Bearer deploy-token"}
    # The probe hit the canary's tagged URL while it carried 10 % of the traffic.
    probes = [r for r in fake.requests if r["path"].endswith("/v2/health/ready")]
    assert [p["path"] for p in probes] == ["/revisions/reasoning-ner-predictor-00002/v2/health/ready"]
    assert [(t["revisionName"][-5:], t["percent"]) for t in fake.traffic_at_probe[0]] == [("00002", 10), ("00001", 90)]
    # Promotion was sent only after the probe, and the final state is the new model at 100 %.
    order = [r["method"] + " " + r["path"] for r in fake.requests]
    assert order.index("GET /revisions/reasoning-ner-predictor-00002/v2/health/ready") < len(order) - 1 - order[::-1].index("PATCH " + ISVC_PATH)
    assert fake.isvc["spec"]["predictor"]["model"]["storageUri"] == NEW
    assert "canaryTrafficPercent" not in fake.isvc["spec"]["predictor"]
    assert fake.isvc["status"]["components"]["predictor"]["traffic"] == [
        {"revisionName": "reasoning-ner-predictor-00002", "percent": 100, "latestRevision": True, "tag": "latest",
         "url": f"http://127.0.0.1:{fake.port}/revisions/reasoning-ner-predictor-00002"}]
    assert json.loads(json.dumps(result.to_dict()))["action"] == "canary-promoted"


def test_failed_canary_revision_is_rolled_back_and_never_promoted() -> None:
    with FakeKServe(KNATIVE, fail_revisions=True) as fake:
        with pytest.raises(DeployError, match="RevisionFailed.*rolled back") as info:
            deploy(NEW, KNATIVE, NS, canary_percent=20, client=fake.client(), **fast())
    bodies = [w["body"] for w in fake.writes()]
    assert bodies == [{"spec": {"predictor": {"model": {"storageUri": NEW}, "canaryTrafficPercent": 20}}},
                      {"spec": {"predictor": {"canaryTrafficPercent": 0}}}]
    assert info.value.result is not None and info.value.result.action == "rolled-back"


def test_failed_probe_rolls_back() -> None:
    with FakeKServe(KNATIVE, probe_ok=False) as fake:
        with pytest.raises(DeployError, match="HTTP probe failed.*503"):
            deploy(NEW, KNATIVE, NS, canary_percent=10, client=fake.client(), probe=True, **fast())
    assert [w["body"] for w in fake.writes()][-1] == rollback_patch()
    assert len([r for r in fake.requests if r["path"].endswith("/v2/health/ready")]) == 3  # retried before giving up


def test_timeout_rolls_back() -> None:
    ticks = iter(range(0, 10_000, 100))
    with FakeKServe(KNATIVE, never_ready=True) as fake:
        with pytest.raises(DeployError, match="timed out after 600s"):
            deploy(NEW, KNATIVE, NS, canary_percent=10, client=fake.client(), timeout_s=600,
                   clock=lambda: next(ticks), **fast())
    assert fake.writes()[-1]["body"] == rollback_patch()


def test_without_wait_only_the_canary_patch_is_sent() -> None:
    with FakeKServe(KNATIVE) as fake:
        result = deploy(NEW, KNATIVE, NS, canary_percent=10, client=fake.client(), wait=False)
    assert result.action == "canary-started" and len(fake.writes()) == 1


def test_canary_kept_without_promotion() -> None:
    with FakeKServe(KNATIVE) as fake:
        result = deploy(NEW, KNATIVE, NS, canary_percent=25, client=fake.client(), promote=False, **fast())
    assert result.action == "canary-ready" and len(fake.writes()) == 1
    assert fake.isvc["spec"]["predictor"]["canaryTrafficPercent"] == 25


def test_knative_direct_rollout_clears_a_leftover_canary() -> None:
    with FakeKServe(KNATIVE) as fake:
        result = deploy(NEW, KNATIVE, NS, canary_percent=0, client=fake.client(), **fast())
    assert result.action == "rolled-out"
    assert [w["body"] for w in fake.writes()] == [
        {"spec": {"predictor": {"model": {"storageUri": NEW}, "canaryTrafficPercent": None}}}]


# ------------------------------------------------------------------------------------ Standard mode


def test_standard_mode_rolls_out_directly_and_waits_for_the_deployment() -> None:
    with FakeKServe(STANDARD) as fake:
        result = deploy(NEW, STANDARD, NS, canary_percent=None, client=fake.client(), **fast(),
                        model_version="20261201T000000-abcd1234")
    assert result.action == "rolled-out" and result.mode == "standard"
    (w,) = fake.writes()
    assert (w["method"], w["content_type"]) == ("PATCH", "application/merge-patch+json")
    assert w["body"] == {"spec": {"predictor": {"model": {"storageUri": NEW}}},
                         "metadata": {"annotations": {"reasoning-ner.io/model-version": "20261201T000000-abcd1234"}}}
    dep_reads = [r for r in fake.requests if r["path"] == f"/apis/apps/v1/namespaces/{NS}/deployments/reasoning-ner-predictor"]
    assert dep_reads and all(r["method"] == "GET" for r in dep_reads)
    assert fake._deployment()["spec"]["template"]["metadata"]["annotations"][
        "internal.serving.kserve.io/storage-initializer-sourceuri"] == NEW


@pytest.mark.parametrize("settings", [STANDARD, KNATIVE], ids=["standard", "knative"])
def test_the_transformers_drift_baseline_moves_with_the_model(settings: ServingSettings) -> None:
    """serving.transformer.drift_baseline: the rollout points the transformer's STORAGE_URI at the new model's
    drift_baseline.json and leaves every other part of its container as it was."""
    settings = settings.with_updates(transformer={"drift_baseline": True})
    with FakeKServe(settings) as fake:
        before = copy.deepcopy(fake.isvc)
        deploy(NEW, settings, NS, client=fake.client(), **fast())
        after = fake.isvc
    assert after["spec"]["transformer"] == build_inference_service(settings, NEW)["spec"]["transformer"]
    env = {e["name"]: e.get("value") for e in after["spec"]["transformer"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == f"{NEW}/drift_baseline.json"
    assert env["RNER_SERVE_DRIFT_BASELINE"] == "/mnt/models/drift_baseline.json"
    old_container = before["spec"]["transformer"]["containers"][0]
    assert {k: v for k, v in after["spec"]["transformer"]["containers"][0].items() if k != "env"} == \
        {k: v for k, v in old_container.items() if k != "env"}
    validate_deploy_patch(build_deploy_patch(NEW, settings, current=before), settings, current=before, crd_dir=CRD_DIR)
    # Without it the patch leaves the transformer alone (no init container appears on a rollout).
    assert "transformer" not in build_deploy_patch(NEW, STANDARD, current=build_inference_service(STANDARD, OLD))["spec"]


def test_standard_mode_rolls_out_directly_when_a_canary_is_asked() -> None:
    """The pipeline's canary_percent default (10) meets the chart's default Standard mode: no error at the
    end of a run, a direct rollout with a warning that says why."""
    with FakeKServe(STANDARD) as fake:
        result = deploy(NEW, STANDARD, NS, canary_percent=10, client=fake.client(), **fast())
    assert result.action == "rolled-out" and result.canary_percent is None
    assert any("canary_percent 10 ignored" in w and "Standard mode" in w for w in result.warnings)
    (w,) = fake.writes()
    assert w["body"] == {"spec": {"predictor": {"model": {"storageUri": NEW}}}}  # no canaryTrafficPercent


def test_live_mode_wins_over_settings() -> None:
    # The cluster runs Standard; settings say Knative: the canary becomes a direct rollout.
    with FakeKServe(STANDARD) as fake:
        result = deploy(NEW, KNATIVE, NS, canary_percent=10, client=fake.client(), wait=False)
    assert result.mode == "standard" and any("live deploymentMode is standard" in w for w in result.warnings)
    assert fake.writes()[-1]["body"] == {"spec": {"predictor": {"model": {"storageUri": NEW}}}}


# ------------------------------------------------------------------------------------ ownership, no-op


def test_a_missing_inference_service_is_never_created() -> None:
    """An object made from defaults would block `helm install` later: refuse, naming the chart command."""
    with FakeKServe(KNATIVE, existing_uri=None) as fake:
        with pytest.raises(DeployError, match=r"does not exist: install the chart first: `helm install reasoning-ner "
                                              r"charts/reasoning-ner --namespace reasoning-ner`"):
            deploy(NEW, KNATIVE, NS, canary_percent=10, client=fake.client(), **fast())
    assert fake.writes() == []


def test_only_a_helm_owned_inference_service_is_patched() -> None:
    with FakeKServe(STANDARD, helm_release=None) as fake:
        with pytest.raises(DeployError, match="is not managed by Helm .*helm install reasoning-ner"):
            deploy(NEW, STANDARD, NS, client=fake.client(), **fast())
        assert fake.writes() == []
        # Objects applied with kubectl from manifests/ are updated only when asked explicitly.
        result = deploy(NEW, STANDARD, NS, client=fake.client(), require_helm=False, wait=False)
    assert result.action == "rolled-out" and len(fake.writes()) == 1


def test_namespace_argument_overrides_the_settings() -> None:
    settings = STANDARD.with_updates(namespace="elsewhere")
    with FakeKServe(STANDARD) as fake:
        with pytest.raises(DeployError, match="elsewhere/reasoning-ner does not exist"):
            # The fake serves namespace reasoning-ner only.
            deploy(NEW, settings, "elsewhere", client=fake.client(), **fast())
    assert fake.calls() == [("GET", "/apis/serving.kserve.io/v1beta1/namespaces/elsewhere/inferenceservices/reasoning-ner")]


def test_same_model_is_a_no_op() -> None:
    with FakeKServe(KNATIVE) as fake:
        result = deploy(OLD, KNATIVE, NS, canary_percent=10, client=fake.client(), **fast())
    assert result.action == "unchanged" and fake.writes() == []


# ------------------------------------------------------------------------------------ no cluster


def test_build_deploy_patch_per_mode() -> None:
    assert build_deploy_patch(NEW, KNATIVE, 10) == {"spec": {"predictor": {"model": {"storageUri": NEW}, "canaryTrafficPercent": 10}}}
    assert build_deploy_patch(NEW, KNATIVE, 100) == {"spec": {"predictor": {"model": {"storageUri": NEW}, "canaryTrafficPercent": None}}}
    assert build_deploy_patch(NEW, STANDARD, 0) == {"spec": {"predictor": {"model": {"storageUri": NEW}}}}
    assert build_deploy_patch("pvc://models/grpo", STANDARD) == {"spec": {"predictor": {"model": {"storageUri": "pvc://models/grpo"}}}}
    with pytest.raises(ValueError, match="needs Knative mode"):
        build_deploy_patch(NEW, STANDARD, 10)
    with pytest.raises(ValueError, match="not deployable"):
        build_deploy_patch("work/models/grpo", STANDARD)
    with pytest.raises(ValueError, match="1-99"):
        build_deploy_patch(NEW, KNATIVE, 150)


def test_patches_validate_against_the_crd_without_a_cluster() -> None:
    for settings, canary in ((KNATIVE, 10), (KNATIVE, None), (STANDARD, None)):
        patched = validate_deploy_patch(build_deploy_patch(NEW, settings, canary), settings, crd_dir=CRD_DIR)
        assert patched["spec"]["predictor"]["model"]["storageUri"] == NEW
    for patch in (promote_patch(), rollback_patch()):
        validate_deploy_patch(patch, KNATIVE, crd_dir=CRD_DIR)
    with pytest.raises(ManifestValidationError, match="canaryTrafficPercent"):
        validate_deploy_patch({"spec": {"predictor": {"canaryTrafficPercent": "ten"}}}, KNATIVE, crd_dir=CRD_DIR)
    with pytest.raises(ManifestValidationError, match="storageURI"):
        validate_deploy_patch({"spec": {"predictor": {"model": {"storageURI": NEW}}}}, KNATIVE, crd_dir=CRD_DIR)


def test_merge_patch_semantics() -> None:
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert apply_merge_patch(doc, {"a": {"b": None, "c": [3]}, "e": {"f": 1}}) == {"a": {"c": [3]}, "d": 1, "e": {"f": 1}}
    assert doc == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # not mutated


def test_knative_state_reads_kserve_status() -> None:
    isvc = {"status": {"observedGeneration": 3, "conditions": [{"type": "PredictorReady", "status": "True"}],
                       "components": {"predictor": {"latestCreatedRevision": "r-2", "latestReadyRevision": "r-2",
                                                    "previousRolledoutRevision": "r-1",
                                                    "traffic": [{"revisionName": "r-2", "percent": 10, "latestRevision": True},
                                                                {"revisionName": "r-1", "percent": 90}]}}}}
    assert knative_state(isvc, 3, 10)[0] == "ready"
    assert knative_state(isvc, 3, 100)[0] == "pending"
    assert knative_state(isvc, 4, 10) == ("pending", "controller has not observed generation 4 yet")
    isvc["status"]["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad",
                                     "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "OOM"}}
    assert knative_state(isvc, 3, 10) == ("failed", "model BlockedByFailedLoad: ModelLoadFailed OOM")
