"""What every preflight row stands on: the cached, read-only Kubernetes reads and the helpers the rows share.

:class:`PreflightBase` holds the target and the cluster client; the rows live in its subclasses
(:class:`.preflight_s3.S3Rows`, then :class:`.preflight.Preflight`), so each area of checks is its own module.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .kubeapi import KubeAPIError, KubeClient, NotFound
from .preflight_target import PreflightTarget


class SkipRow(Exception):
    """Raised by a row that cannot be checked here; the row reads ``skipped`` with ``detail``, not ``fail``."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def is_cluster_internal(host: str) -> bool:
    """A name only cluster DNS resolves (svc.cluster.local, <svc>.<ns>.svc, a bare service name)."""
    host = host.split("@")[-1].rsplit(":", 1)[0].strip("[]").lower()
    if host in ("localhost",) or re.match(r"^[0-9.]+$", host) or ":" in host:
        return False
    return host.endswith(".svc") or ".svc." in host or host.endswith(".cluster.local") or "." not in host


class PreflightBase:
    """The target, the cluster (``kube``; None = no cluster, its rows fail with ``kube_error``) and the reads the rows share."""

    def __init__(self, target: PreflightTarget, kube: KubeClient | None, *, in_cluster: bool = False,
                 kube_error: str | None = None, kfp_token: str | None = None, s3_timeout_s: float = 5.0) -> None:
        self.t, self.kube, self.in_cluster = target, kube, in_cluster
        self.kube_error = kube_error
        self.kfp_token = kfp_token
        self.s3_timeout_s = s3_timeout_s
        self._cache: dict[str, Any] = {}
        self._api_ok = False
        self._s3_env: dict[str, str] | None = None
        self._s3: Any = None

    # ------------------------------------------------------------- plumbing
    def _get(self, path: str, verb: str | None = None) -> dict[str, Any]:
        if self.kube is None or not self._api_ok:
            raise SkipRow("the Kubernetes API did not answer (see the Kubernetes API row)")
        if path not in self._cache:
            try:
                self._cache[path] = self.kube.get(path, verb)
            except KubeAPIError as exc:
                self._cache[path] = exc
        hit = self._cache[path]
        if isinstance(hit, Exception):
            raise hit
        return hit

    def _maybe(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (403 and other errors propagate)."""
        try:
            return self._get(path)
        except NotFound:
            return None

    def _serving_sa(self) -> dict[str, Any] | None:
        t = self.t
        return self._maybe(f"/api/v1/namespaces/{t.serving_namespace}/serviceaccounts/{t.serving_service_account}")
