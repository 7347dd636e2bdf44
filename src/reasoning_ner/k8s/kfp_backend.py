"""What the compiled pipeline needs from the Kubeflow Pipelines backend, in one place for
``rner pipeline submit`` (pipelines/submit.py) and ``rner preflight`` (the library cannot import
pipelines/, so the constant lives here and both use it).

The backend reports its version as ``tag_name`` on ``GET /apis/v2beta1/healthz`` (an HTTP handler
of the API server: ``{"commit_sha", "tag_name", "multi_user", "pipeline_store"}``; ``tag_name`` is
the ``TAG_NAME`` of the deployment, ``"unknown"`` on a dev build).
"""

from __future__ import annotations

import re

#: What the compiled pipeline needs from the backend (its driver turns the kfp-kubernetes settings
#: into pod fields) -> the first backend release that does it. Read from kubeflow/pipelines at
#: 7b70c7b95f6832772efd6fd0029a4024491a0f44, backend/src/v2/driver/k8s.go (extendPodSpecPatch),
#: each commit's first release from `git tag --contains`.
KFP_BACKEND_FEATURES: dict[str, str] = {
    "nodeSelectorJson and tolerationJson resolved from the run parameters gpu_node_selector / gpu_tolerations "
    "(kubeflow/pipelines#11770, fd1b48b)": "2.5.0",
    "tolerationJson given as a list of tolerations (90909fc)": "2.5.0",
    "empty or null toleration parameters skipped instead of failing the pod (#11898, 0010b06)": "2.14.0",
    "optional: true on Secrets as environment, so a missing git/teacher/hf Secret does not block a step "
    "(#12216, 55ec846; older drivers drop the flag)": "2.15.0",
}


def version_tuple(text: str | None) -> tuple[int, int, int] | None:
    """``"2.15.0"``, ``"v2.15.0"``, ``"2.15.0-rc.1"`` -> ``(2, 15, 0)``; None for ``"unknown"``."""
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", (text or "").strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


#: The oldest Kubeflow Pipelines backend this pipeline runs correctly on.
MIN_KFP_BACKEND_VERSION = max(KFP_BACKEND_FEATURES.values(), key=lambda v: version_tuple(v) or (0, 0, 0))


def missing_features(found: str | None) -> list[str]:
    """The features a backend of version ``found`` lacks (all of them when it reports no version)."""
    have = version_tuple(found)
    return [f"{what} (>= {v})" for what, v in KFP_BACKEND_FEATURES.items()
            if have is None or have < (version_tuple(v) or (0, 0, 0))]
