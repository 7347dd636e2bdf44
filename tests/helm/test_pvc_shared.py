"""templates/pvc-shared.yaml: the ReadWriteMany PVC the multi-node TrainJob path mounts, in the runs' namespace."""

from __future__ import annotations

from pipelines.reasoning_ner_pipeline import COMPILED, SHARED_MOUNT
from pipelines.submit import pipeline_parameters

from .chart_tools import template_objects, validate

TEMPLATE = "templates/pvc-shared.yaml"
ON = {"multiNode": {"enabled": True}}


def test_only_with_multi_node() -> None:
    assert template_objects(TEMPLATE) == []
    assert template_objects(TEMPLATE, {"multiNode": {"enabled": True, "sharedPvc": {"create": False}}}) == []


def test_rwx_claim_named_as_the_pipeline_expects_in_the_runs_namespace() -> None:
    (pvc,) = template_objects(TEMPLATE, ON)
    assert pvc["metadata"]["name"] == pipeline_parameters(COMPILED)["shared_pvc"]["defaultValue"] == "reasoning-ner-shared"
    assert pvc["metadata"]["namespace"] == "kubeflow"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert "storageClassName" not in pvc["spec"], "null = the cluster's default StorageClass"
    assert f"mountPath: {SHARED_MOUNT}" in COMPILED.read_text(), "the submitting step mounts it"


def test_storage_class_size_name_and_profile_namespace() -> None:
    (pvc,) = template_objects(TEMPLATE, {"multiNode": {"enabled": True, "sharedPvc": {
        "storageClassName": "efs-sc", "size": "2Ti", "name": "team-shared"}},
        "kfp": {"multiUser": True, "namespace": "team-nlp"}})
    assert pvc["spec"]["storageClassName"] == "efs-sc" and pvc["spec"]["resources"]["requests"]["storage"] == "2Ti"
    assert (pvc["metadata"]["name"], pvc["metadata"]["namespace"]) == ("team-shared", "team-nlp")


def test_valid() -> None:
    assert validate(template_objects(TEMPLATE, {"multiNode": {"enabled": True, "sharedPvc": {"storageClassName": "efs"}}})) == []
