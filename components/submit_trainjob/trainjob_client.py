"""Create a Kubeflow Trainer ``TrainJob`` and follow it to the end, with the Kubernetes client.

The library builds the object (:func:`reasoning_ner.k8s.trainjob.build_trainjob`, plain dicts); this
module is the only place that talks to the API server about it (``CustomObjectsApi``, group
``trainer.kubeflow.org``, version ``v1alpha1``, plural ``trainjobs``):

* ``POST .../namespaces/{ns}/trainjobs?fieldManager=rner-submit-trainjob`` creates it; a 409 (a retried
  pipeline step with the same deterministic name) re-attaches to the existing TrainJob instead;
* ``GET .../trainjobs/{name}`` every ``poll_s`` seconds until a ``Complete`` or ``Failed`` condition is
  ``True`` (``Suspended``, e.g. queued by Kueue, keeps waiting);
* ``DELETE .../trainjobs/{name}`` (``propagationPolicy: Foreground``, so the JobSet and its pods go
  too) when the wait times out or the step is cancelled (KFP stops a cancelled step's pod with
  SIGTERM; :func:`run_trainjob` turns that into a clean delete). A failed TrainJob is kept for its
  logs unless ``delete_on_failure``.

The Kubernetes client is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from reasoning_ner.k8s.trainjob import GROUP, PLURAL, VERSION, conditions, phase

FIELD_MANAGER = "rner-submit-trainjob"


class TrainJobError(RuntimeError):
    """The TrainJob did not complete; ``result`` holds what was sent and the last state seen."""

    def __init__(self, message: str, result: TrainJobResult | None = None):
        super().__init__(message)
        self.result = result


class TrainJobFailed(TrainJobError):
    pass


class TrainJobTimeout(TrainJobError):
    pass


class TrainJobCancelled(TrainJobError):
    pass


@dataclass
class TrainJobResult:
    name: str
    namespace: str
    state: str = "Pending"  # Complete | Failed | TimedOut | Cancelled
    attached: bool = False  # True when the TrainJob already existed (retried step)
    deleted: bool = False
    polls: int = 0
    seconds: float = 0.0
    events: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_api_client() -> Any:
    """In-cluster service account credentials, else the kubeconfig ($KUBECONFIG, read now, or ~/.kube/config)."""
    import os

    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.ApiClient()


def own_pod_pull_secrets(namespace: str, api_client: Any = None, log: Callable[[str], None] = print) -> list[str]:
    """The ``imagePullSecrets`` of this pipeline step's own pod, for the TrainJob's pods.

    The kubelet gave them to the step from the run's ServiceAccount (the chart lists
    ``images.pullSecrets`` there), so the training nodes pull the training image with the same
    Secrets. KFP names the pod in ``KFP_POD_NAME`` (downward API); reading it needs ``get pods``,
    which the chart's run-executor Role grants. Outside a pipeline pod, or when the pod cannot be
    read, there are none (said in the log: a private registry then fails with ImagePullBackOff).
    """
    import os

    name = os.environ.get("KFP_POD_NAME") or ""
    if not name:
        return []
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        pod = client.CoreV1Api(api_client or default_api_client()).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        log(f"cannot read this step's pod {namespace}/{name} ({exc.status} {exc.reason}): the TrainJob's pods get no "
            "imagePullSecrets")
        return []
    return [ref.name for ref in pod.spec.image_pull_secrets or [] if ref.name]


def in_cluster_namespace(default: str = "default") -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip() or default
    except OSError:
        return default


class TrainJobClient:
    """Thin wrapper over ``CustomObjectsApi`` for TrainJobs."""

    def __init__(self, api_client: Any = None):
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client or default_api_client())

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create ``obj``; returns (object, attached) where attached means it existed already."""
        from kubernetes.client.exceptions import ApiException

        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            return self.api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj,
                                                            field_manager=FIELD_MANAGER), False
        except ApiException as exc:
            if exc.status != 409:
                raise TrainJobError(f"creating TrainJob {ns}/{name} failed: {exc.status} {exc.reason}: "
                                    f"{_api_message(exc)}") from exc
        return self.get(ns, name), True

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def delete(self, namespace: str, name: str) -> bool:
        """Delete with foreground propagation; False when it was already gone."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                     body=client.V1DeleteOptions(propagation_policy="Foreground"))
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "body", ""))[:500]


def _describe(obj: dict[str, Any]) -> str:
    parts = [f"{t}={c.get('status')}" + (f" ({c.get('reason')}: {c.get('message')})" if c.get("reason") else "")
             for t, c in conditions(obj).items()]
    return ", ".join(parts) or "no conditions yet"


class _Stop(BaseException):
    """Raised by the SIGTERM handler (and for a set ``cancel`` event) to leave the wait at once."""


def run_trainjob(
    obj: dict[str, Any],
    timeout_s: float = 7 * 24 * 3600,
    poll_s: float = 30.0,
    api_client: Any = None,
    cancel: threading.Event | None = None,
    delete_on_failure: bool = False,
    handle_sigterm: bool = True,
    max_read_errors: int = 10,
    log: Callable[[str], None] = print,
) -> TrainJobResult:
    """Create ``obj`` (or re-attach to it) and wait until it is Complete; raise otherwise.

    Raises :class:`TrainJobFailed` (a ``Failed`` condition), :class:`TrainJobTimeout` (deleted after
    ``timeout_s``) or :class:`TrainJobCancelled` (``cancel`` set, or SIGTERM when ``handle_sigterm``
    and called from the main thread; deleted). Up to ``max_read_errors`` consecutive failed status
    reads (API server restarts, 429/5xx, connection errors) are waited out; a TrainJob deleted by
    someone else (404) is an error. Returns the result with the final object.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    tj = TrainJobClient(api_client)
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    result = TrainJobResult(name=name, namespace=ns)
    cancel = cancel or threading.Event()
    started = time.monotonic()
    last: dict[str, Any] = {}

    def note(msg: str) -> None:
        result.events.append(msg)
        log(f"[trainjob {ns}/{name}] {msg}")

    def follow() -> TrainJobResult:
        nonlocal last
        last, result.attached = tj.create(obj)
        note("re-attached to the existing TrainJob" if result.attached else "created")
        seen = None
        read_errors = 0
        while True:
            if cancel.is_set():
                raise _Stop()
            if time.monotonic() - started > timeout_s:
                result.state = "TimedOut"
                result.deleted = tj.delete(ns, name)
                note(f"no terminal state after {timeout_s:.0f}s: TrainJob deleted")
                raise TrainJobTimeout(f"TrainJob {ns}/{name} did not finish within {timeout_s:.0f}s "
                                      f"(last state: {_describe(last)})", result)
            try:
                last = tj.get(ns, name)
                read_errors = 0
            except ApiException as exc:
                if exc.status == 404:
                    raise TrainJobError(f"TrainJob {ns}/{name} was deleted while the step waited for it", result) from exc
                if exc.status not in (429, 500, 502, 503, 504) or read_errors >= max_read_errors:
                    raise
                read_errors += 1
                note(f"status read failed ({exc.status} {exc.reason}); retrying")
                cancel.wait(poll_s)
                continue
            except HTTPError as exc:
                if read_errors >= max_read_errors:
                    raise
                read_errors += 1
                note(f"status read failed ({type(exc).__name__}); retrying")
                cancel.wait(poll_s)
                continue
            result.polls += 1
            described = _describe(last)
            if described != seen:
                note(described)
                seen = described
            state = phase(last)
            if state == "Complete":
                result.state = "Complete"
                return result
            if state == "Failed":
                result.state = "Failed"
                failed = conditions(last)["Failed"]
                if delete_on_failure:
                    result.deleted = tj.delete(ns, name)
                raise TrainJobFailed(f"TrainJob {ns}/{name} failed: {failed.get('reason')}: {failed.get('message')}",
                                     result)
            cancel.wait(poll_s)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = None
    if handle_sigterm and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        try:
            return follow()
        except _Stop:
            if previous is not None:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not stop the delete
            result.state = "Cancelled"
            result.deleted = tj.delete(ns, name)
            note("cancelled: TrainJob deleted" if result.deleted else "cancelled: TrainJob already gone")
            raise TrainJobCancelled(f"TrainJob {ns}/{name} cancelled", result) from None
    finally:
        result.final = last or None
        result.seconds = round(time.monotonic() - started, 3)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
