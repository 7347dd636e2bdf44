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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from reasoning_ner.k8s.trainer_runtime import GROUP, PLURAL, VERSION, conditions, phase

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


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


@contextmanager
def _sigterm_stops(enabled: bool) -> Iterator[bool]:
    """While inside, SIGTERM raises :class:`_Stop` (main thread only: Python's rule for handlers).

    Yields whether a handler was installed; the previous one is restored on the way out.
    """
    previous = None
    if enabled and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        yield previous is not None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Watch:
    """One TrainJob followed from creation to a terminal state; ``result`` records what happened."""

    def __init__(self, tj: TrainJobClient, obj: dict[str, Any], timeout_s: float, poll_s: float,
                 cancel: threading.Event, delete_on_failure: bool, max_read_errors: int,
                 log: Callable[[str], None]):
        self.tj, self.obj, self.timeout_s, self.poll_s, self.cancel = tj, obj, timeout_s, poll_s, cancel
        self.delete_on_failure, self.max_read_errors, self.log = delete_on_failure, max_read_errors, log
        self.ns, self.name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        self.result = TrainJobResult(name=self.name, namespace=self.ns)
        self.started = time.monotonic()
        self.last: dict[str, Any] = {}
        self.read_errors = 0

    def note(self, msg: str) -> None:
        self.result.events.append(msg)
        self.log(f"[trainjob {self.ns}/{self.name}] {msg}")

    def follow(self) -> TrainJobResult:
        """Create (or re-attach), then read the status every ``poll_s`` until Complete; raise otherwise."""
        self.last, self.result.attached = self.tj.create(self.obj)
        self.note("re-attached to the existing TrainJob" if self.result.attached else "created")
        seen = None
        while True:
            if self.cancel.is_set():
                raise _Stop()
            self._check_deadline()
            if not self._read():
                self.cancel.wait(self.poll_s)
                continue
            self.result.polls += 1
            described = _describe(self.last)
            if described != seen:
                self.note(described)
                seen = described
            if self._finished():
                return self.result
            self.cancel.wait(self.poll_s)

    def _check_deadline(self) -> None:
        if time.monotonic() - self.started <= self.timeout_s:
            return
        self.result.state = "TimedOut"
        self.result.deleted = self.tj.delete(self.ns, self.name)
        self.note(f"no terminal state after {self.timeout_s:.0f}s: TrainJob deleted")
        raise TrainJobTimeout(f"TrainJob {self.ns}/{self.name} did not finish within {self.timeout_s:.0f}s "
                              f"(last state: {_describe(self.last)})", self.result)

    def _read(self) -> bool:
        """Read the status into ``last``; False after a transient error (API server restart, 429/5xx)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.last = self.tj.get(self.ns, self.name)
            self.read_errors = 0
            return True
        except ApiException as exc:
            if exc.status == 404:
                raise TrainJobError(f"TrainJob {self.ns}/{self.name} was deleted while the step waited for it",
                                    self.result) from exc
            if exc.status not in (429, 500, 502, 503, 504) or self.read_errors >= self.max_read_errors:
                raise
            self.read_errors += 1
            self.note(f"status read failed ({exc.status} {exc.reason}); retrying")
        except HTTPError as exc:
            if self.read_errors >= self.max_read_errors:
                raise
            self.read_errors += 1
            self.note(f"status read failed ({type(exc).__name__}); retrying")
        return False

    def _finished(self) -> bool:
        """True when Complete; raises :class:`TrainJobFailed` (deleting it only if asked) when Failed."""
        state = phase(self.last)
        if state == "Complete":
            self.result.state = "Complete"
            return True
        if state == "Failed":
            self.result.state = "Failed"
            failed = conditions(self.last)["Failed"]
            if self.delete_on_failure:
                self.result.deleted = self.tj.delete(self.ns, self.name)
            raise TrainJobFailed(
                f"TrainJob {self.ns}/{self.name} failed: {failed.get('reason')}: {failed.get('message')}", self.result)
        return False

    def cancelled(self) -> TrainJobCancelled:
        """Delete the TrainJob of a cancelled step; the error to raise."""
        self.result.state = "Cancelled"
        self.result.deleted = self.tj.delete(self.ns, self.name)
        self.note("cancelled: TrainJob deleted" if self.result.deleted else "cancelled: TrainJob already gone")
        return TrainJobCancelled(f"TrainJob {self.ns}/{self.name} cancelled", self.result)


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
    watch = _Watch(TrainJobClient(api_client), obj, timeout_s, poll_s, cancel or threading.Event(),
                   delete_on_failure, max_read_errors, log)
    with _sigterm_stops(handle_sigterm) as handling:
        try:
            return watch.follow()
        except _Stop:
            if handling:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not stop the delete
            raise watch.cancelled() from None
        finally:
            watch.result.final = watch.last or None
            watch.result.seconds = round(time.monotonic() - watch.started, 3)


def train_on_the_cluster(settings: Any, run: Any, model_dir: str, lineage: dict[str, Any], timeout_hours: float,
                         poll_seconds: float) -> tuple[dict[str, Any], TrainJobResult]:
    """What both submitting steps do once their inputs are staged: build the TrainJob from ``settings``
    (:class:`reasoning_ner.k8s.trainjob.TrainJobSettings`), keep it and its result next to the ``run``
    (:class:`reasoning_ner.k8s.trainjob_step.SharedRun`) on the shared volume, wait for it, and copy the
    model rank 0 exported into ``model_dir``. Returns the training summary and the TrainJob's result."""
    from reasoning_ner.k8s.trainjob import build_trainjob
    from reasoning_ner.k8s.trainjob_step import collect_model

    obj = build_trainjob(settings)
    run.save("trainjob.json", obj)
    result = run_trainjob(obj, timeout_s=timeout_hours * 3600, poll_s=poll_seconds)
    run.save("trainjob-result.json", result.to_dict())
    return collect_model(run, model_dir, lineage), result
