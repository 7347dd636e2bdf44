"""The pipeline's deploy step: roll the promoted model out to the InferenceService.

``deploy`` talks to the API server over the library's small Kubernetes client
(:class:`reasoning_ner.k8s.kubeapi.KubeClient`: kubeconfig or the pod's ServiceAccount, no kubernetes
package), on ``/apis/serving.kserve.io/v1beta1``, always with JSON merge patches
(``application/merge-patch+json``; ``null`` removes a field) and field manager ``rner-deploy``:

* the InferenceService must exist and belong to a Helm release (the chart installs it): the step
  never creates one (an object made here from defaults would block `helm install` later) and never
  touches one it does not own; both refusals name the chart command;
* Knative mode with a canary share (1-99): patch ``storageUri`` + ``canaryTrafficPercent``; wait until
  the controller has observed the new generation, the latest revision is created and ready and carries
  exactly that share of the traffic; optionally GET the canary's tagged URL (tag routing); then promote
  by removing ``canaryTrafficPercent`` and wait for the latest revision to carry 100 %. A failed canary
  (revision failed, model load failed, probe failed, timeout) is rolled back with
  ``canaryTrafficPercent: 0`` (all traffic to the previous revision) and raises :class:`DeployError`;
* Standard mode (or no canary): patch ``storageUri`` and wait for the controller's Ready condition and
  the predictor Deployment's rollout (template carries the new URI, all replicas updated and available).

:func:`build_deploy_patch` and :func:`validate_deploy_patch` build and check the patch without a cluster.
The Kubernetes client is imported inside the functions that talk to a cluster.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config.serving import ServingSettings, validate_storage_uri
from ..flywheel.baseline import drift_baseline_uri
from .inference_service import (
    DEPLOYMENT_MODE,
    MODEL_VERSION_ANNOTATION,
    build_inference_service,
)
from .kubeapi import KubeAPIError, KubeClient, NotFound, default_access

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
FIELD_MANAGER = "rner-deploy"
MERGE_PATCH = "application/merge-patch+json"
#: What Helm writes on every object of a release (and checks before adopting one).
HELM_MANAGED_BY = ("app.kubernetes.io/managed-by", "Helm")
HELM_RELEASE_ANNOTATION = "meta.helm.sh/release-name"
STORAGE_URI_TEMPLATE_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
#: Condition reasons / model states that mean the new revision will not become ready by waiting.
FAILURE_REASONS = {
    "RevisionFailed", "ProgressDeadlineExceeded", "ContainerMissing", "ExitCode", "ModelLoadFailed",
    "RuntimeUnhealthy", "RuntimeDisabled", "NoSupportingRuntime", "RuntimeNotRecognized", "InvalidPredictorSpec",
    "InvalidSpec", "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
}
FAILED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}


class DeployError(RuntimeError):
    """The rollout failed or was refused; ``result`` holds what was sent and the last state seen."""

    def __init__(self, message: str, result: DeployResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class DeployResult:
    name: str
    namespace: str
    mode: str
    model_uri: str
    action: str = "pending"  # created | unchanged | canary-started | canary-ready | canary-promoted | rolled-out | rolled-back
    canary_percent: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    final_status: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------ patches (no cluster)


def _canary(canary_percent: int | None) -> int | None:
    """None for a direct rollout (None, 0 or 100), else the canary share; refuse nonsense."""
    if canary_percent is None or canary_percent in (0, 100):
        return None
    if not isinstance(canary_percent, int) or not 0 < canary_percent < 100:
        raise ValueError(f"canary_percent must be an integer 1-99 (0, 100 or None = direct rollout), got {canary_percent!r}")
    return canary_percent


def _moved_drift_baseline(current: dict[str, Any] | None, model_uri: str) -> list[dict[str, Any]] | None:
    """The live transformer's containers with STORAGE_URI (its drift baseline) moved to ``model_uri``'s, or None
    when it fetches none. A merge patch replaces lists whole, so every container goes in the patch."""
    containers = (((current or {}).get("spec") or {}).get("transformer") or {}).get("containers") or []
    if not any(e.get("name") == "STORAGE_URI" for c in containers for e in c.get("env") or []):
        return None
    uri = drift_baseline_uri(model_uri)
    return [{**c, "env": [{"name": "STORAGE_URI", "value": uri} if e.get("name") == "STORAGE_URI" else e
                          for e in c.get("env") or []]} for c in containers]


def build_deploy_patch(model_uri: str, settings: ServingSettings, canary_percent: int | None = None,
                       mode: str | None = None, model_version: str | None = None,
                       current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The merge patch that points the InferenceService at ``model_uri``.

    ``mode`` is the live deployment mode (``knative``/``standard``; default ``settings.mode``). A canary
    share is refused in Standard mode; a direct rollout in Knative mode also clears any leftover
    ``canaryTrafficPercent``. Where the live InferenceService ``current`` has a transformer that fetches a
    drift baseline (``serving.transformer.drift_baseline``), the patch points it at the new model's.
    """
    validate_storage_uri(model_uri)
    mode = (mode or settings.mode).lower()
    canary = _canary(canary_percent)
    if canary is not None and mode != "knative":
        raise ValueError(f"canary_percent {canary} needs Knative mode: canaryTrafficPercent splits traffic between "
                         "Knative revisions; Standard mode rolls out directly (use 0 or None)")
    predictor: dict[str, Any] = {"model": {"storageUri": model_uri}}
    if mode == "knative":
        predictor["canaryTrafficPercent"] = canary  # None -> null -> removed (full rollout)
    patch: dict[str, Any] = {"spec": {"predictor": predictor}}
    if (containers := _moved_drift_baseline(current, model_uri)) is not None:
        patch["spec"]["transformer"] = {"containers": containers}
    if model_version:
        patch["metadata"] = {"annotations": {MODEL_VERSION_ANNOTATION: model_version}}
    return patch


def promote_patch() -> dict[str, Any]:
    """Remove canaryTrafficPercent: the latest revision takes all the traffic."""
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def rollback_patch() -> dict[str, Any]:
    """canaryTrafficPercent 0: all traffic back to the previously rolled-out revision."""
    return {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def validate_deploy_patch(patch: dict[str, Any], settings: ServingSettings, current: dict[str, Any] | None = None,
                          crd_dir: str | Path | None = None) -> dict[str, Any]:
    """Apply ``patch`` to ``current`` (default: the builder's InferenceService) and validate the result
    against the InferenceService CRD; returns the patched object or raises ``ManifestValidationError``."""
    from .schema import validate_objects

    base = current if current is not None else build_inference_service(settings)
    patched = apply_merge_patch({k: v for k, v in base.items() if k != "status"}, patch)
    validate_objects([patched], crd_dir=crd_dir)
    return patched


# ------------------------------------------------------------------------------------ status reading


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in status.get("conditions") or []}


def _failure(status: dict[str, Any]) -> str | None:
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in FAILED_TRANSITIONS:
        info = model.get("lastFailureInfo") or {}
        return f"model {model['transitionStatus']}: {info.get('reason', '')} {info.get('message', '')}".strip()
    for c in status.get("conditions") or []:
        if c.get("status") == "False" and c.get("reason") in FAILURE_REASONS:
            return f"{c.get('type')}: {c.get('reason')}: {c.get('message', '')}".rstrip(": ")
    return None


def _is_true(status: dict[str, Any], cond: str) -> bool:
    return _conditions(status).get(cond, {}).get("status") == "True"


def _controller_state(status: dict[str, Any], generation: int) -> tuple[str, str] | None:
    """What every mode checks first: the controller saw this generation, and no condition failed."""
    if (status.get("observedGeneration") or 0) < generation:
        return "pending", f"controller has not observed generation {generation} yet"
    failure = _failure(status)
    return ("failed", failure) if failure else None


def knative_state(isvc: dict[str, Any], generation: int, percent: int) -> tuple[str, str]:
    """('ready'|'pending'|'failed', why) of a Knative rollout where the latest revision should carry ``percent``."""
    status = isvc.get("status") or {}
    early = _controller_state(status, generation)
    if early:
        return early
    comp = (status.get("components") or {}).get("predictor") or {}
    created, ready = comp.get("latestCreatedRevision"), comp.get("latestReadyRevision")
    if not created or created != ready:
        return "pending", f"latest revision {created} not ready (latest ready: {ready})"
    traffic = comp.get("traffic") or []
    mine = [t for t in traffic if t.get("revisionName") == ready or (t.get("latestRevision") and not t.get("revisionName"))]
    share = sum(int(t.get("percent") or 0) for t in mine)
    others = sum(int(t.get("percent") or 0) for t in traffic if t not in mine)
    if percent < 100 and share == 100 and others == 0 and not comp.get("previousRolledoutRevision"):
        # A first revision has nothing to split with: the canary serves everything.
        percent = 100
    if share != percent:
        return "pending", f"latest revision {ready} carries {share}% of the traffic, waiting for {percent}%"
    if not _is_true(status, "PredictorReady"):
        return "pending", "PredictorReady is not True"
    return "ready", f"revision {ready} ready with {percent}% of the traffic"


def standard_state(isvc: dict[str, Any], generation: int, deployment: dict[str, Any] | None, model_uri: str) -> tuple[str, str]:
    """State of a Standard-mode rollout: controller Ready plus the predictor Deployment fully rolled out."""
    status = isvc.get("status") or {}
    early = _controller_state(status, generation)
    if early:
        return early
    if not _is_true(status, "Ready"):
        return "pending", "Ready is not True"
    if deployment is None:
        return "pending", "predictor Deployment not found yet"
    template_ann = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    if STORAGE_URI_TEMPLATE_ANNOTATION in template_ann and template_ann[STORAGE_URI_TEMPLATE_ANNOTATION] != model_uri:
        return "pending", "predictor Deployment still has the previous model"
    dstat = deployment.get("status") or {}
    want = (deployment.get("spec") or {}).get("replicas", 1)
    gen = (deployment.get("metadata") or {}).get("generation", 0)
    if (dstat.get("observedGeneration") or 0) < gen:
        return "pending", "Deployment controller has not observed the new template"
    for cond in dstat.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"Deployment: ProgressDeadlineExceeded: {cond.get('message', '')}"
    updated, available, total = (dstat.get(k) or 0 for k in ("updatedReplicas", "availableReplicas", "replicas"))
    if updated < want or total > updated or available < want:
        return "pending", f"rollout: {updated}/{want} updated, {available} available, {total - updated} old"
    return "ready", f"{updated}/{want} replicas serve the new model"


def probe_url_from_status(isvc: dict[str, Any], canary: bool) -> str | None:
    """The canary's tagged URL (tag routing), else the predictor's address."""
    comp = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    if canary:
        for t in comp.get("traffic") or []:
            if t.get("latestRevision") and t.get("url"):
                return t["url"]
        return None
    return (comp.get("address") or {}).get("url") or comp.get("url")


def http_probe(url: str, timeout_s: float = 10.0) -> tuple[bool, str]:
    """GET ``url`` directly (no proxy from the environment: the URL is the cluster's own)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            return 200 <= resp.status < 300, f"GET {url} -> {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"GET {url} -> {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"GET {url} failed: {exc}"


# ------------------------------------------------------------------------------------ the deploy step


def _mode_of(isvc: dict[str, Any]) -> str | None:
    value = ((isvc.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE)
    if value is None:
        return None
    return "knative" if value.lower() in ("knative", "serverless") else "standard"


def helm_release(isvc: dict[str, Any]) -> str | None:
    """The Helm release that owns ``isvc``, or None when Helm did not install it."""
    meta = isvc.get("metadata") or {}
    key, value = HELM_MANAGED_BY
    if (meta.get("labels") or {}).get(key) != value:
        return None
    return (meta.get("annotations") or {}).get(HELM_RELEASE_ANNOTATION)


def _install_hint(name: str, ns: str) -> str:
    return (f"install the chart first: `helm install {name} charts/reasoning-ner --namespace {ns}` "
            "(docs/deploy.md); its InferenceService is the one the pipeline updates")


class _Cluster:
    """The few API calls the deploy step makes, each recorded in the result."""

    def __init__(self, client: KubeClient, namespace: str, name: str, result: DeployResult):
        self.client, self.ns, self.name, self.result = client, namespace, name, result
        self.path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    def get(self) -> dict[str, Any] | None:
        try:
            return self.client.get(self.path)
        except NotFound:
            return None
        except KubeAPIError as exc:
            raise DeployError(f"GET {self.path} failed: {exc.status} {exc}", self.result) from exc

    def patch(self, body: dict[str, Any]) -> dict[str, Any]:
        self.result.requests.append({"method": "PATCH", "path": self.path, "content_type": MERGE_PATCH, "body": body})
        try:
            return self.client.request("PATCH", self.path, body, content_type=MERGE_PATCH,
                                       params={"fieldManager": FIELD_MANAGER}, verb="patch")
        except KubeAPIError as exc:
            raise DeployError(f"PATCH {self.path} failed: {exc.status} {exc}", self.result) from exc

    def deployment(self, name: str) -> dict[str, Any] | None:
        path = f"/apis/apps/v1/namespaces/{self.ns}/deployments/{name}"
        try:
            return self.client.get(path)
        except NotFound:
            return None
        except KubeAPIError as exc:
            raise DeployError(f"reading Deployment {self.ns}/{name} failed: {exc.status} {exc}", self.result) from exc


class _Waits:
    """Waiting and probing against one deadline: the timing knobs of :func:`deploy`, shared by its steps."""

    def __init__(self, cluster: _Cluster, timeout_s: float, poll_interval_s: float, sleep: Callable[[float], None],
                 clock: Callable[[], float], probe_url: str | None, probe_path: str) -> None:
        self.cluster, self.result = cluster, cluster.result
        self.timeout_s, self.poll_interval_s = timeout_s, poll_interval_s
        self.sleep, self.clock = sleep, clock
        self.probe_url, self.probe_path = probe_url, probe_path
        self.deadline = clock() + timeout_s

    def wait_for(self, check: Callable[[dict[str, Any]], tuple[str, str]], what: str) -> dict[str, Any]:
        """Poll the InferenceService until ``check`` says ready (returned), failed or the deadline passes (raised)."""
        last = "no status yet"
        while True:
            current = self.cluster.get()
            if current is None:
                raise DeployError(f"InferenceService {self.cluster.ns}/{self.cluster.name} disappeared while waiting "
                                  f"for {what}", self.result)
            state, last = check(current)
            self.result.final_status = current.get("status")
            if state == "ready":
                return current
            if state == "failed":
                raise DeployError(f"{what} failed: {last}", self.result)
            if self.clock() >= self.deadline:
                raise DeployError(f"timed out after {self.timeout_s:.0f}s waiting for {what}: {last}", self.result)
            self.sleep(self.poll_interval_s)

    def probe(self, isvc: dict[str, Any], is_canary: bool) -> None:
        """GET the probe path on the canary's (or predictor's) URL, three tries; raise when none answers ready."""
        base = self.probe_url or probe_url_from_status(isvc, is_canary)
        if not base:
            raise DeployError("no URL to probe: enable tag routing (knative.tag_routing) or pass probe_url", self.result)
        url = base.rstrip("/") + self.probe_path
        ok, why = False, ""
        for attempt in range(3):
            ok, why = http_probe(url)
            if ok:
                break
            if attempt < 2:
                self.sleep(self.poll_interval_s)
        self.result.requests.append({"method": "GET", "path": url, "probe": why})
        if not ok:
            raise DeployError(f"HTTP probe failed: {why}", self.result)


def _existing_isvc(cluster: _Cluster, require_helm: bool) -> dict[str, Any]:
    """The live InferenceService; the step refuses one that is missing, or (``require_helm``) not the chart's."""
    ns, name, result = cluster.ns, cluster.name, cluster.result
    current = cluster.get()
    if current is None:
        raise DeployError(f"InferenceService {ns}/{name} does not exist: {_install_hint(name, ns)}", result)
    if require_helm and helm_release(current) is None:
        key, value = HELM_MANAGED_BY
        raise DeployError(f"InferenceService {ns}/{name} is not managed by Helm (no {key}={value} label and "
                          f"{HELM_RELEASE_ANNOTATION} annotation): the deploy step only updates the chart's own; "
                          f"{_install_hint(name, ns)}, or `rner deploy --unmanaged` for one you manage yourself",
                          result)
    return current


def _follow_live_mode(current: dict[str, Any], settings: ServingSettings, canary: int | None,
                      result: DeployResult) -> int | None:
    """Follow the live object's deployment mode (warning where the settings disagree); return the canary share
    that still applies: none in Standard mode, which has no revisions to split traffic between."""
    live_mode = _mode_of(current)
    if live_mode is None:
        result.warnings.append(f"InferenceService has no {DEPLOYMENT_MODE} annotation; assuming {settings.mode}")
        live_mode = settings.mode
    elif live_mode != settings.mode:
        result.warnings.append(f"live deploymentMode is {live_mode}, settings say {settings.mode}; following the live object")
    result.mode = live_mode
    if canary is not None and live_mode != "knative":
        result.warnings.append(f"canary_percent {canary} ignored: InferenceService {result.namespace}/{result.name} "
                               "runs in Standard mode (no revisions to split traffic between); rolled out directly")
        canary = result.canary_percent = None
    return canary


def _serves_already(current: dict[str, Any], model_uri: str) -> bool:
    """The predictor already serves ``model_uri`` with no canary in flight: nothing to roll out."""
    predictor = (current.get("spec") or {}).get("predictor") or {}
    live_uri = (predictor.get("model") or {}).get("storageUri")
    return live_uri == model_uri and predictor.get("canaryTrafficPercent") is None


def _canary_rollout(waits: _Waits, generation: int, canary: int, *, wait: bool, probe: bool, promote: bool,
                    rollback_on_failure: bool) -> DeployResult:
    """Knative: wait for the canary (and probe it), roll it back when it fails, else promote it to 100%."""
    cluster, result = waits.cluster, waits.result
    result.action = "canary-started"
    if not wait:
        return result
    try:
        isvc = waits.wait_for(lambda o: knative_state(o, generation, canary), f"the {canary}% canary")
        if probe:
            waits.probe(isvc, True)
    except DeployError as exc:
        if rollback_on_failure:
            cluster.patch(rollback_patch())
            result.action = "rolled-back"
        raise DeployError(f"{exc}; {'traffic rolled back to the previous revision' if rollback_on_failure else 'canary left in place'}",
                          result) from exc
    if not promote:
        result.action = "canary-ready"
        return result
    promoted = cluster.patch(promote_patch())
    generation = (promoted.get("metadata") or {}).get("generation", generation)
    waits.wait_for(lambda o: knative_state(o, generation, 100), "promotion to 100%")
    result.action = "canary-promoted"
    return result


def _direct_rollout(waits: _Waits, generation: int, predictor_deployment: str, model_uri: str, *, wait: bool,
                    probe: bool) -> DeployResult:
    """No canary: wait for the new generation to be ready (Knative: 100% traffic; Standard: the Deployment rolled)."""
    cluster, result = waits.cluster, waits.result
    result.action = "rolled-out"
    if not wait:
        return result
    if result.mode == "knative":
        isvc = waits.wait_for(lambda o: knative_state(o, generation, 100), "the rollout")
    else:
        isvc = waits.wait_for(lambda o: standard_state(o, generation, cluster.deployment(predictor_deployment),
                                                       model_uri), "the rollout")
    if probe:
        waits.probe(isvc, False)
    return result


def deploy(promoted_model_uri: str, settings: ServingSettings, namespace: str | None = None,
           canary_percent: int | None = None, client: KubeClient | None = None, wait: bool = True, *,
           timeout_s: float = 1800.0, poll_interval_s: float = 10.0, promote: bool = True,
           probe: bool = False, probe_url: str | None = None, probe_path: str = "/v2/health/ready",
           rollback_on_failure: bool = True, model_version: str | None = None, require_helm: bool = True,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> DeployResult:
    """Roll ``promoted_model_uri`` out to the InferenceService ``settings.name`` in ``namespace``.

    ``canary_percent`` 1-99 = canary first in Knative mode; in Standard mode (no revisions to split
    traffic between) the rollout is direct and the result carries a warning; None/0/100 = direct.
    The InferenceService must exist and, with ``require_helm``, belong to a Helm release. ``client``
    defaults to the pod's ServiceAccount, else the kubeconfig (:func:`kubeapi.default_access`). With
    ``wait=False`` the function returns after the first write. ``probe`` GETs ``probe_path`` on the
    canary's tagged URL (or ``probe_url``) before promotion, and on the predictor after a direct rollout.
    Raises :class:`DeployError` (carrying the :class:`DeployResult`) on refusal, failure or timeout.
    """
    validate_storage_uri(promoted_model_uri)
    canary = _canary(canary_percent)
    ns = namespace or settings.namespace
    if ns != settings.namespace:
        settings = settings.with_updates(namespace=ns)
    result = DeployResult(settings.name, ns, settings.mode, promoted_model_uri, canary_percent=canary)
    cluster = _Cluster(client if client is not None else default_access().client(), ns, settings.name, result)
    waits = _Waits(cluster, timeout_s, poll_interval_s, sleep, clock, probe_url, probe_path)

    current = _existing_isvc(cluster, require_helm)
    canary = _follow_live_mode(current, settings, canary, result)
    if _serves_already(current, promoted_model_uri):
        result.action = "unchanged"
        result.final_status = current.get("status")
        return result

    # result.mode is the live object's mode from here on (_follow_live_mode).
    patch = build_deploy_patch(promoted_model_uri, settings, canary, mode=result.mode, model_version=model_version,
                               current=current)
    patched = cluster.patch(patch)
    generation = (patched.get("metadata") or {}).get("generation", 0)
    if result.mode == "knative" and canary is not None:
        return _canary_rollout(waits, generation, canary, wait=wait, probe=probe, promote=promote,
                               rollback_on_failure=rollback_on_failure)
    return _direct_rollout(waits, generation, settings.predictor_deployment, promoted_model_uri, wait=wait, probe=probe)
