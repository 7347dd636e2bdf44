from kfp import dsl

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def check_registry(registry_uri: str) -> str:
    """Check the model registry before any GPU hour is spent on training.

    The registry must be one the deploy step can serve from (s3://bucket/prefix: KServe's storage
    initializer downloads `<registry_uri>/models/<version>`) and reachable with the run's S3
    credentials (the S3 Secret's AWS_* environment): the bucket exists and the keys are accepted.
    A wrong endpoint, missing or refused credentials or a missing bucket fail here, naming the
    setting, instead of at the promotion step after training.

    Args:
        registry_uri: Model registry root, e.g. s3://reasoning-ner/registry.

    Returns:
        The URI the first promoted version would be served from.
    """
    from reasoning_ner.config.serving import validate_storage_uri
    from reasoning_ner.promotion import Registry

    registry = Registry(registry_uri)
    example = registry.model_uri("version")
    try:
        validate_storage_uri(example)
    except ValueError as exc:
        raise ValueError(f"registry_uri {registry_uri!r} cannot be served by KServe: {exc}") from exc
    registry.check()
    return example
