"""Kubernetes objects for serving: one typed settings object, one builder, the kustomize tree, the deploy step.

* :mod:`.inference_service`: the builders of the InferenceService, ServiceAccount, NetworkPolicy and
  KEDA ScaledObjects (plain dicts) from :class:`ServingSettings` (chart values 1:1, part of the
  configuration: :mod:`reasoning_ner.config.serving`);
* :mod:`.manifests`: :func:`generate_manifests` writes ``manifests/`` (kustomize base + overlays);
* :mod:`.schema`: offline validation against the CRDs' OpenAPI schemas and core Kubernetes schemas;
* :mod:`.trainjob` and :mod:`.trainjob_step`: the Kubeflow Trainer TrainJob and the pipeline step around it;
* :mod:`.preflight` (rows in :mod:`.preflight_base` and :mod:`.preflight_s3` too): ``rner preflight``, read-only
  checks of a cluster before a run (docs/preflight.md),
  over :mod:`.kubeapi` (kubeconfig / in-cluster access and GET over plain HTTP, no Kubernetes client);
  :mod:`.kfp_backend` holds the minimum KFP backend version;
* :mod:`.deploy`: :func:`deploy` rolls a promoted model out with the Kubernetes client (imported there
  only, so importing this package pulls in neither the client nor jsonschema).
"""

from ..config.serving import ServingSettings, ServingSettingsError, validate_storage_uri
from .inference_service import (
    build_inference_service,
    build_network_policies,
    build_objects,
    build_scaled_objects,
    check_single_autoscaler,
)
from .manifests import OVERLAYS, generate_manifests, overlay_settings, stale_manifests
from .serving_identity import build_s3_secret_placeholder, build_service_account

__all__ = [
    "OVERLAYS",
    "ServingSettings",
    "ServingSettingsError",
    "build_inference_service",
    "build_network_policies",
    "build_objects",
    "build_s3_secret_placeholder",
    "build_scaled_objects",
    "build_service_account",
    "check_single_autoscaler",
    "generate_manifests",
    "overlay_settings",
    "stale_manifests",
    "validate_storage_uri",
]
