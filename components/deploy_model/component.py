from kfp import dsl

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def deploy_model(model_uri: str, model_version: str, namespace: str, inference_service: str, canary_percent: int) -> str:
    """Roll the promoted model out to the KServe InferenceService (canary first in Knative mode).

    Patches the storageUri of the InferenceService the Helm chart installed to the promoted model's
    registry copy with the Kubernetes client: in Knative mode a canary with `canary_percent` of the
    traffic, then, once the new revision is ready, 100 %; in Standard mode a direct rollout (a canary
    share is ignored with a warning). It never creates an InferenceService and refuses one that no
    Helm release owns (install the chart first). Runs under the pipeline's service account, whose
    Role may get and patch InferenceServices in the target namespace.

    Args:
        model_uri: The promoted model's registry copy (s3://.../models/<version>).
        model_version: Its registry version (the reasoning-ner.io/model-version annotation).
        namespace: Namespace of the InferenceService.
        inference_service: Name of the InferenceService.
        canary_percent: Traffic share of the canary before the full rollout (Knative mode only); 0 = direct.

    Returns:
        A JSON summary of the requests sent and the final state.
    """
    import json

    from reasoning_ner.k8s.rollout import deploy
    from reasoning_ner.k8s.inference_service import ServingSettings

    # The live InferenceService's deployment mode decides canary vs direct rollout; only the name and
    # namespace of these settings matter (the chart owns everything else).
    serving = ServingSettings(name=inference_service, namespace=namespace)
    return json.dumps(deploy(model_uri, serving, namespace, canary_percent or None, model_version=model_version or None).to_dict())
